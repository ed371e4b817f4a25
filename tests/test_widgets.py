"""The widgets: moving their controls changes what they show, and it equals the pure functions."""

import matplotlib

matplotlib.use("Agg")

import ipywidgets as widgets  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from deeplab_kit.course.atrous import aspp_table, feature_size, valid_share  # noqa: E402
from deeplab_kit.course.figures import color_mask  # noqa: E402
from deeplab_kit.course.widgets import atrous_rate_explorer, prediction_browser  # noqa: E402
from deeplab_kit.evaluate import predicted_classes  # noqa: E402


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_rate_explorer_shows_aspp_tables_numbers_for_its_setting():
    app = atrous_rate_explorer(rates=(6, 12, 18), output_stride=16, input_size=513)
    assert isinstance(app, widgets.VBox)
    assert [s.value for s in app.rate_sliders] == [6, 12, 18]
    pd.testing.assert_frame_equal(
        app.numbers, aspp_table(input_size=513, output_stride=16, atrous_rates=(6, 12, 18))
    )
    assert "33x33" in app.summary.value and bytes(app.image.value).startswith(b"\x89PNG")
    assert "rate 18" in app.table.value


def test_moving_a_rate_slider_updates_numbers_and_figure():
    app = atrous_rate_explorer(rates=(6, 12, 18), output_stride=16, input_size=513)
    png, share = app.image.value, app.numbers.set_index("branch").loc["rate 18", "valid weights"]
    app.rate_sliders[2].value = 30  # on a 33x33 map a rate of 30 keeps only the middle taps
    numbers = app.numbers.set_index("branch")
    assert "rate 18" not in numbers.index
    assert numbers.loc["rate 30", "valid weights"] == valid_share(33, 30) < share
    assert numbers.loc["rate 30", "tap spacing (px)"] == 30 * 16
    assert _legend(app.figure)[2] == "rate 30: 1/9 inside"
    assert bytes(app.image.value) != bytes(png)
    pd.testing.assert_frame_equal(app.numbers, aspp_table(**app.setting))


def test_output_stride_and_input_size_change_the_feature_map():
    app = atrous_rate_explorer(rates=(6, 12, 18), output_stride=16, input_size=513)
    app.stride_selector.value = 8
    assert app.setting == {"atrous_rates": (6, 12, 18), "output_stride": 8, "input_size": 513}
    assert (app.numbers["feature map"] == "65x65").all()
    assert app.figure.axes[0].get_title().startswith("65x65 feature map")
    assert "65x65" in app.summary.value
    fields_os8 = app.numbers["receptive field (px)"].tolist()
    app.size_input.value = 321
    side = feature_size(321, 8)  # 41
    assert (app.numbers["feature map"] == f"{side}x{side}").all()
    assert (
        app.numbers["receptive field (px)"].tolist() == fields_os8
    )  # the field does not depend on the input
    assert app.numbers.set_index("branch").loc["rate 18", "valid weights"] == valid_share(side, 18)
    pd.testing.assert_frame_equal(app.numbers, aspp_table(**app.setting))


class _PixelClassifier(nn.Module):
    """A 1x1 conv to 21 class scores, returned as the kit's models return them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 21, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


def test_prediction_browser_shows_the_selected_sample_and_its_predictions():
    gen = torch.Generator().manual_seed(0)
    dataset = [
        (torch.randn(3, 8, 8, generator=gen), torch.randint(0, 21, (8, 8), generator=gen))
        for _ in range(3)
    ]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _PixelClassifier().train()
    app = prediction_browser(dataset, {"tiny": model})
    assert app.slider.max == 2
    app.slider.value = 2
    image, truth = dataset[2]
    truth_ax, pred_ax = app.figure.axes[1], app.figure.axes[2]
    assert pred_ax.get_title() == "tiny"
    assert np.array_equal(truth_ax.images[0].get_array(), color_mask(truth))
    expected = model.conv(image[None]).argmax(1)[0]
    assert torch.equal(predicted_classes(model, image), expected)
    assert np.array_equal(pred_ax.images[0].get_array(), color_mask(expected))
    assert model.training  # predicting left the model's mode as it was
