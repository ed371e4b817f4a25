"""The ipywidgets apps the notebooks show, built on the pure functions of `atrous` and `figures`.

Each app is a `VBox` that keeps what it shows in attributes (`numbers`, `figure`), so code and
tests can drive it by setting its controls' values, and a plain notebook cell can show the same
figure and table for one fixed setting with `atrous_figures.plot_atrous_explorer` and `atrous.aspp_table`
(nbval checks those cells; it cannot check a widget's output).

Figures are rendered to PNG into an `ipywidgets.Image`, which works in JupyterLab, Colab and VS Code
alike and leaves nothing in pyplot's state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import ipywidgets as widgets
import pandas as pd
import torch
from matplotlib.figure import Figure
from PIL import Image, UnidentifiedImageError
from torch import nn

from deeplab_kit.course.atrous import OUTPUT_STRIDES, aspp_table, feature_size
from deeplab_kit.course.atrous_figures import plot_atrous_explorer
from deeplab_kit.course.colab import in_colab
from deeplab_kit.course.figures import plot_predictions
from deeplab_kit.data.classes import VOC_CLASSES
from deeplab_kit.evaluate import predicted_classes
from deeplab_kit.predict import overlay, predict_image

MAX_RATE = 48
DPI = 80
LAZY = dict(continuous_update=False)  # a control reports its value once let go


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


class AtrousRateExplorer(widgets.VBox):
    """Sliders for the ASPP rates, the output stride and the input size; below them each branch's
    taps on the feature map, the valid-weight share against the rate, and a table of each
    branch's numbers (valid share, tap spacing, receptive field), updated as the controls move.

    After any change, `numbers` holds `atrous.aspp_table(...)` for the current setting and
    `figure` the matching `atrous_figures.plot_atrous_explorer(...)` figure.
    """

    def __init__(
        self,
        rates: Sequence[int] = (6, 12, 18),
        output_stride: int = 16,
        input_size: int = 513,
        *,
        backbone: str = "resnet50",
        multi_grid: Sequence[int] | None = None,
    ) -> None:
        self.backbone, self.multi_grid = backbone, multi_grid
        self.rate_sliders = [
            widgets.IntSlider(
                value=rate, min=1, max=max(MAX_RATE, rate), description=f"rate {k}", **LAZY
            )
            for k, rate in enumerate(rates, start=1)
        ]
        self.stride_selector = widgets.ToggleButtons(
            options=[s for s in OUTPUT_STRIDES if 8 <= s <= 32],
            value=output_stride,
            description="output stride",
        )
        self.size_input = widgets.BoundedIntText(
            value=input_size, min=33, max=2049, description="input size", **LAZY
        )
        self.summary = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.table = widgets.HTML()
        self.numbers: pd.DataFrame | None = None
        self.figure: Figure | None = None
        for control in [*self.rate_sliders, self.stride_selector, self.size_input]:
            control.observe(lambda change: self.update(), names="value")
        sliders = widgets.HBox(self.rate_sliders)
        settings = widgets.HBox([self.stride_selector, self.size_input])
        super().__init__([sliders, settings, self.summary, self.image, self.table])
        self.update()

    @property
    def setting(self) -> dict:
        """The controls' current values, as `aspp_table` and `plot_atrous_explorer` take them."""
        return {
            "atrous_rates": tuple(s.value for s in self.rate_sliders),
            "output_stride": self.stride_selector.value,
            "input_size": self.size_input.value,
        }

    def update(self) -> None:
        """Recompute the numbers and the figure for the controls' values and show them."""
        setting = self.setting
        self.numbers = aspp_table(**setting, backbone=self.backbone, multi_grid=self.multi_grid)
        self.figure = plot_atrous_explorer(
            setting["atrous_rates"], setting["output_stride"], setting["input_size"]
        )
        size = feature_size(setting["input_size"], setting["output_stride"])
        self.summary.value = (
            f"<b>{setting['input_size']}x{setting['input_size']}</b> input, output stride "
            f"<b>{setting['output_stride']}</b>: a <b>{size}x{size}</b> feature map ({self.backbone})"
        )
        self.image.value = _png(self.figure)
        self.table.value = self.numbers.to_html(
            index=False, formatters={"valid weights": "{:.0%}".format}
        )


def atrous_rate_explorer(
    rates: Sequence[int] = (6, 12, 18), output_stride: int = 16, input_size: int = 513, **kwargs
) -> AtrousRateExplorer:
    """The rate explorer of notebook 02 (see `AtrousRateExplorer`); show it as a cell's last line."""
    return AtrousRateExplorer(rates, output_stride, input_size, **kwargs)


# --- predictions ----------------------------------------------------------------------------------


class PredictionBrowser(widgets.VBox):
    """A slider over a dataset's samples showing image | truth | each model's prediction.

    `show(index)` returns the figure for one sample (a plain cell can call it); moving the slider
    shows it in the widget and keeps it in `figure`.
    """

    def __init__(
        self,
        dataset,
        models: nn.Module | Mapping[str, nn.Module],
        *,
        device: str | torch.device = "cpu",
        class_names: Sequence[str] = VOC_CLASSES,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("the dataset is empty: nothing to browse")
        self.dataset, self.device, self.class_names = dataset, device, class_names
        self.models = dict(models) if isinstance(models, Mapping) else {"prediction": models}
        self.slider = widgets.IntSlider(
            value=0, min=0, max=len(dataset) - 1, description="sample", **LAZY
        )
        self.image = widgets.Image(format="png")
        self.figure: Figure | None = None
        self.slider.observe(lambda change: self._show_in_widget(change["new"]), names="value")
        super().__init__([self.slider, self.image])
        self._show_in_widget(0)

    def show(self, index: int) -> Figure:
        """Image, ground truth and every model's prediction for sample `index`."""
        image, truth = self.dataset[index]
        predictions = {
            name: [predicted_classes(model, image, self.device)]
            for name, model in self.models.items()
        }
        return plot_predictions([image], [truth], predictions, class_names=self.class_names)

    def _show_in_widget(self, index: int) -> None:
        self.figure = self.show(index)
        self.image.value = _png(self.figure)


def prediction_browser(dataset, models, *, device="cpu", **kwargs) -> PredictionBrowser:
    """A `PredictionBrowser` over `dataset` for one model or {name: model}."""
    return PredictionBrowser(dataset, models, device=device, **kwargs)


class PhotoUpload(widgets.VBox):
    """Upload a photo and see the model's prediction over it (`predict.overlay`). `show(name,
    data)` does what an upload does, so code and tests can drive it; a file that is not an
    image is said in one line."""

    def __init__(self, predictor, *, device="cpu") -> None:
        self.predictor, self.device = predictor, device
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="photo")
        self.picture = widgets.Image(format="png")
        self.message = widgets.HTML("Choose a photo: its prediction appears here.")
        self.upload.observe(self._uploaded, names="value")
        super().__init__([self.upload, self.message, self.picture])

    def _uploaded(self, change) -> None:
        for item in change["new"]:
            self.show(item["name"], bytes(item["content"]))

    def show(self, name: str, data: bytes) -> None:
        try:
            photo = Image.open(io.BytesIO(data)).convert("RGB")
        except (UnidentifiedImageError, OSError):
            self.message.value = f"{name}: not an image"
            return
        model, size, classes = self.predictor
        labels = predict_image(model, photo, size, self.device)
        buffer = io.BytesIO()
        overlay(photo, labels, classes).save(buffer, format="PNG")
        self.picture.value = buffer.getvalue()
        self.message.value = f"{name}: {photo.width} x {photo.height}"


def photo_upload(predictor, *, device="cpu"):
    """The notebooks' "your own photo" (`predictor`: `predict.load_predictor(run)`): Colab's
    own upload dialog there (ipywidgets' upload does not reach its kernel), an ipywidgets
    upload elsewhere."""
    widget = PhotoUpload(predictor, device=device)
    if not in_colab():
        return widget
    from google.colab import files  # only in Colab

    for name, data in files.upload().items():
        widget.show(name, data)
    return widget
