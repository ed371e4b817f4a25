"""Figures for the notebooks: masks in VOC's colours, loss curves with session bands, scores.
(Figures of atrous convolution, ASPP and the rate ablation are `deeplab_kit.course.atrous_figures`'s.)

Every `plot_*` function returns a `matplotlib.figure.Figure` (a `KitFigure`) built without pyplot:
nothing is shown or kept in pyplot's global state, it works under any backend (Agg included), and
a notebook cell that ends with the call shows the figure once, as a PNG, whether or not pyplot or
`%matplotlib inline` was ever used. Save one with `fig.savefig(path)`. Functions that draw one
panel take an optional `ax` to draw into instead (and return its figure).

Images are (3, H, W) ImageNet-normalised tensors or arrays (what `VOCDataset` returns) or
(H, W, 3) RGB arrays / PIL images; masks are (H, W) class indices, 255 for void.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from deeplab_kit.data.classes import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from deeplab_kit.runtime.run_files import HISTORY_COLUMNS

SESSION_COLOURS = ("#dce6f2", "#f4e8d6")  # alternating bands


class KitFigure(Figure):
    """A Figure that shows itself in Jupyter and Colab (as a PNG) without going through pyplot."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", bbox_inches="tight")
        return buffer.getvalue()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig = KitFigure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _class_colour(label: int) -> tuple[float, float, float]:
    return tuple(VOC_PALETTE[label] / 255.0)


# --- images and masks -------------------------------------------------------------------------


def color_mask(mask) -> np.ndarray:
    """Class indices (H, W) -> VOC colours (H, W, 3) uint8; void (255) gets VOC's void colour."""
    labels = _numpy(mask)
    if labels.ndim != 2:
        raise ValueError(f"a mask must be (H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.array_equal(labels, np.round(labels)):
            raise ValueError(f"a mask holds class indices; got non-integer values ({labels.dtype})")
        labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            f"mask values must be 0..255 (255 = void), found {labels.min()}..{labels.max()}"
        )
    return VOC_PALETTE[labels]


def denormalize(image, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """Undo the normalisation of a (3, H, W) image: returns (H, W, 3) floats clipped to [0, 1]."""
    array = _numpy(image).astype(np.float32)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"expected a normalised (3, H, W) image, got shape {array.shape}")
    std, mean = (np.asarray(v, np.float32)[:, None, None] for v in (std, mean))
    return np.clip((array * std + mean).transpose(1, 2, 0), 0.0, 1.0)


def as_rgb(image) -> np.ndarray:
    """Any image the kit meets -> (H, W, 3) floats in [0, 1].

    (3, H, W) tensors/arrays are taken as normalised (`denormalize`); (H, W, 3) arrays and PIL
    images as RGB, 0..255 for integers, 0..1 for floats.
    """
    if isinstance(image, torch.Tensor) or (
        isinstance(image, np.ndarray) and image.shape[:1] == (3,)
    ):
        return denormalize(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ValueError(
            f"expected an RGB image (H, W, 3) or a normalised (3, H, W) one, got {array.shape}"
        )
    return array / 255.0 if np.issubdtype(array.dtype, np.integer) else np.clip(array, 0.0, 1.0)


def overlay(image, mask, alpha: float = 0.5) -> np.ndarray:
    """The image with its mask's colours blended in (background left as is): (H, W, 3) in [0, 1]."""
    rgb, colours = as_rgb(image), color_mask(mask) / 255.0
    if rgb.shape[:2] != colours.shape[:2]:
        raise ValueError(f"image {rgb.shape[:2]} and mask {colours.shape[:2]} differ in size")
    labelled = (_numpy(mask) != 0)[..., None]  # (H, W, 1)
    return np.where(labelled, (1 - alpha) * rgb + alpha * colours, rgb)


def _class_legend(fig: Figure, present, class_names: Sequence[str], columns: int) -> None:
    """The classes present, in their VOC colours, below the figure."""
    handles = []
    for label in sorted(set(int(v) for v in present)):
        name = "void" if label == IGNORE_INDEX else class_names[label]
        handles.append(Patch(facecolor=_class_colour(label), edgecolor="0.3", label=name))
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize="small")


def plot_predictions(
    images,
    truths,
    predictions=None,
    *,
    class_names: Sequence[str] = VOC_CLASSES,
    legend: bool = True,
    alpha: float | None = None,
) -> Figure:
    """A grid like the report's Figures 4-5: one row per sample, image | ground truth | prediction.

    `predictions` is None (image | truth: a look at the data), one mask per image, or
    {model name: masks} for several models side by side. Images/masks may be batched tensors
    (N, ...) or sequences. With `alpha`, masks are drawn over their image (`overlay`) instead
    of flat. The legend names the classes present.
    """
    images, truths = list(images), list(truths)
    columns = _prediction_columns(predictions)
    for name, masks in {"truths": truths, **columns}.items():
        if len(masks) != len(images):
            raise ValueError(f"{len(images)} images but {len(masks)} masks in {name!r}")
    n_cols = 2 + len(columns)
    # Rows as tall as the pictures are at 2.6 inches wide: landscape images leave no gaps.
    aspect = max(_numpy(t).shape[-2] / _numpy(t).shape[-1] for t in truths)
    height = 2.6 * aspect * len(images) + (0.6 if legend else 0)
    fig = KitFigure(figsize=(2.6 * n_cols, height), layout="constrained")
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    present = set()
    for row, (image, truth) in enumerate(zip(images, truths, strict=True)):
        masks = {"ground truth": truth, **{name: m[row] for name, m in columns.items()}}
        for mask in masks.values():
            present.update(np.unique(_numpy(mask)).tolist())
        _draw_row(axes[row], image, masks, alpha, titles=row == 0)
    if legend:
        _class_legend(fig, present, class_names, columns=7)
    return fig


def _prediction_columns(predictions) -> dict[str, list]:
    if predictions is None:
        return {}
    if isinstance(predictions, Mapping):
        return {name: list(masks) for name, masks in predictions.items()}
    return {"prediction": list(predictions)}


def _draw_row(axes, image, masks: Mapping, alpha: float | None, *, titles: bool) -> None:
    """The image, then each mask flat in VOC's colours (or over the image with `alpha`)."""
    panels = [("image", as_rgb(image))]
    for title, mask in masks.items():
        panels.append((title, color_mask(mask) if alpha is None else overlay(image, mask, alpha)))
    for ax, (title, picture) in zip(axes, panels, strict=True):
        ax.imshow(picture, interpolation="nearest")
        ax.set_axis_off()
        if titles:
            ax.set_title(title)


def plot_pairs(
    pairs: Mapping[str, tuple], *, class_names: Sequence[str] = VOC_CLASSES, legend: bool = True
) -> Figure:
    """One row per named (image, mask) pair: the image, then its mask in VOC's colours (void in
    VOC's cream), each titled with the name and the size; e.g. one sample through several
    preprocessing presets, whose sizes may differ."""
    if not pairs:
        raise ValueError("no (image, mask) pairs to plot")
    fig = KitFigure(figsize=(5.2, 2.6 * len(pairs) + (0.6 if legend else 0)), layout="constrained")
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    present = set()
    for row, (name, (image, mask)) in enumerate(pairs.items()):
        rgb, colours = as_rgb(image), color_mask(mask)
        present.update(np.unique(_numpy(mask)).tolist())
        height, width = colours.shape[:2]
        for ax, picture, what in zip(axes[row], (rgb, colours), ("image", "mask"), strict=True):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(f"{name}: {what} {height}x{width}", fontsize="small")
            ax.set_axis_off()
    if legend:
        _class_legend(fig, present, class_names, columns=4)
    return fig


# --- training history -------------------------------------------------------------------------


def read_history(history) -> pd.DataFrame:
    """A history table from a DataFrame, a history.csv or a run folder holding one, checked and
    sorted by epoch. If an epoch appears twice (a session re-ran it), the later row wins."""
    source = "the history"
    if not isinstance(history, pd.DataFrame):
        path = Path(history)
        path = path / "history.csv" if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such history file")
        source, history = str(path), pd.read_csv(path)
    missing = [c for c in ("epoch", "session", "train_loss") if c not in history.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}; expected {list(HISTORY_COLUMNS)}")
    if history.empty:
        raise ValueError(f"{source}: no rows")
    history = history.drop_duplicates("epoch", keep="last")
    return history.sort_values("epoch", kind="stable").reset_index(drop=True)


def history_table(history) -> pd.DataFrame:
    """The history as a student reads it: one row per epoch, the validation mIoU in % ("mIoU
    (%)"), losses and seconds rounded to what they resolve."""
    table = read_history(history).copy()
    table["miou"] = 100 * table["miou"]
    table = table.rename(columns={"miou": "mIoU (%)"})
    return table.round({"train_loss": 4, "val_loss": 4, "mIoU (%)": 2, "seconds": 1})


def session_spans(history) -> pd.DataFrame:
    """One row per training session, in order: session, first_epoch, last_epoch, epochs."""
    history = read_history(history)
    # a new span starts wherever the session number changes along the epochs
    starts = history["session"].ne(history["session"].shift()).cumsum()
    spans = history.groupby(starts, sort=False).agg(
        session=("session", "first"),
        first_epoch=("epoch", "min"),
        last_epoch=("epoch", "max"),
        epochs=("epoch", "size"),
    )
    return spans.reset_index(drop=True)


def lr_changes(history, factor: float = 2.0, flat: float = 1.1) -> pd.DataFrame:
    """Epochs where the learning rate stepped: it changed by at least `factor` from the previous
    epoch after holding steady (within `flat`) over the epoch before, as a scheduled "divide by
    10" or a manual change does. A smooth schedule is never marked: its warm-up has no steady
    epoch before it, and its decay changes every epoch (a cosine tail's per-epoch mean falls by
    large factors at the end). Returns epoch, before, after."""
    history = read_history(history)
    if "lr" not in history.columns:
        return pd.DataFrame(columns=["epoch", "before", "after"])
    lr = history["lr"]
    before, after = lr.shift(), lr
    ratio, steady = after / before, before / lr.shift(2)
    jumps = (before > 0) & (after > 0) & ((ratio >= factor) | (ratio <= 1 / factor))
    jumps &= steady.between(1 / flat, flat)
    table = pd.DataFrame({"epoch": history["epoch"], "before": before, "after": after})
    return table[jumps].reset_index(drop=True)


def _draw_session_bands(ax: Axes, spans: pd.DataFrame, numbered: bool) -> None:
    style = dict(transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize="small")
    for k, span in enumerate(spans.itertuples()):
        first, last, gid = span.first_epoch, span.last_epoch, f"session-{span.session}"
        ax.axvspan(first - 0.5, last + 0.5, color=SESSION_COLOURS[k % 2], zorder=0, gid=gid)
        if numbered:
            ax.text((first + last) / 2, 1.0, f"session {span.session}", **style)


def plot_history(history, *, title: str | None = None) -> Figure:
    """One continuous loss curve over all sessions, each session shaded and numbered, learning
    rate jumps marked: the report's Figures 1-3 as one figure. Panels below show the validation
    mIoU (in %) and the learning rate when the history has them.

    `history` is a DataFrame, a history.csv or a run folder (columns epoch, session, train_loss,
    val_loss, miou, lr, seconds; val_loss and miou may be empty on epochs without evaluation).
    """
    history = read_history(history)
    extra = [c for c in ("miou", "lr") if c in history.columns and history[c].notna().any()]
    fig = KitFigure(figsize=(9, 4 + 1.6 * len(extra)), layout="constrained")
    ratios = [2.5] + [1] * len(extra)
    axes = fig.subplots(1 + len(extra), 1, sharex=True, squeeze=False, height_ratios=ratios)[:, 0]
    loss_ax = axes[0]
    loss_ax.plot(history["epoch"], history["train_loss"], color="C0", label="train loss")
    if "val_loss" in history.columns and history["val_loss"].notna().any():
        val = history.dropna(subset=["val_loss"])
        loss_ax.plot(val["epoch"], val["val_loss"], color="C1", marker=".", label="val loss")
    loss_ax.set_ylabel("loss")
    _mark_lr_changes(axes, lr_changes(history))
    for name, ax in zip(extra, axes[1:], strict=True):
        _plot_history_panel(ax, name, history.dropna(subset=[name]))
    for k, ax in enumerate(axes):
        _draw_session_bands(ax, session_spans(history), numbered=k == 0)
    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.get_major_locator().set_params(integer=True)
    loss_ax.legend(loc="upper right")
    if title:
        fig.suptitle(title)
    return fig


def _mark_lr_changes(axes, jumps: pd.DataFrame) -> None:
    where = axes[0].get_xaxis_transform()
    for jump in jumps.itertuples():
        x, label = jump.epoch - 0.5, f"lr x{jump.after / jump.before:.3g}"
        for ax in axes:
            ax.axvline(x, color="0.2", linestyle=":", linewidth=1, gid="lr-change")
        axes[0].annotate(
            label, (x, 0.5), xycoords=where, rotation=90, ha="right", va="center", fontsize="small"
        )


def _plot_history_panel(ax: Axes, name: str, data: pd.DataFrame) -> None:
    if name == "miou":
        ax.plot(data["epoch"], 100 * data["miou"], color="C2", marker=".")
        # From 0 and at least 10 high: noise of 0.05 points must not look like a jump.
        ax.set_ylim(0, max(10.0, 110 * float(data["miou"].max())))
        ax.set_ylabel("val mIoU (%)")
    else:
        ax.step(data["epoch"], data["lr"], where="mid", color="C3")
        ax.set_yscale("log")
        ax.set_ylabel("learning rate")


# --- scores -----------------------------------------------------------------------------------


def row_normalize(matrix) -> np.ndarray:
    """Each row (a true class) divided by its total: the share of that class's pixels predicted as
    each class. Rows of classes absent from the truth are NaN, not zeros."""
    matrix = _numpy(getattr(matrix, "matrix", matrix)).astype(np.float64)
    totals = matrix.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, matrix / totals, np.nan)


def _class_names(n: int, class_names: Sequence[str] | None) -> list[str]:
    """The given names (one per class), else VOC's when there are 21 classes, else indices."""
    if class_names is None:
        return list(VOC_CLASSES) if n == len(VOC_CLASSES) else [str(i) for i in range(n)]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} classes")
    return list(class_names)


def plot_confusion(
    confusion,
    class_names: Sequence[str] | None = None,
    *,
    normalize: bool = True,
    ax: Axes | None = None,
) -> Figure:
    """The confusion matrix as a heat map: rows = truth, columns = prediction, row-normalised
    in % (each row sums to 100; absent classes blank), the diagonal (per-class recall, %)
    written in, on the colour bar's scale.

    `confusion` is a `ConfusionMatrix`, or its (C, C) counts as a tensor or array.
    """
    counts = _numpy(getattr(confusion, "matrix", confusion))
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is (C, C), got shape {counts.shape}")
    n = counts.shape[0]
    names = _class_names(n, class_names)
    data = 100 * row_normalize(counts) if normalize else counts.astype(np.float64)
    fig, ax = figure_and_axes(ax, (0.5 * n + 2.5, 0.5 * n + 1.5))  # cells wide enough to read
    cmap = matplotlib.colormaps["Blues"].with_extremes(bad="0.92")
    vmax = 100 if normalize else None
    image = ax.imshow(data, cmap=cmap, vmin=0, vmax=vmax, interpolation="nearest")
    label = "share of the true class's pixels (%)" if normalize else "pixels"
    fig.colorbar(image, ax=ax, shrink=0.8, label=label)
    ax.set_xticks(range(n), names, rotation=90, fontsize="small")
    ax.set_yticks(range(n), names, fontsize="small")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if normalize:
        size = 8 if n > 12 else 10
        for i in range(n):
            if np.isfinite(data[i, i]):
                colour = "white" if data[i, i] > 60 else "black"
                ax.text(
                    i, i, f"{data[i, i]:.0f}", ha="center", va="center", fontsize=size, color=colour
                )
    return fig


def plot_class_iou(
    iou, class_names: Sequence[str] | None = None, *, ax: Axes | None = None
) -> Figure:
    """Per-class IoU as horizontal bars (in %), with each model's mean IoU as a dashed line.

    `iou` is one model's per-class IoU in 0..1 (NaN for classes absent from truth and
    prediction, drawn as "absent"), or {model name: per-class IoU} for several models.
    """
    models = dict(iou) if isinstance(iou, Mapping) else {"IoU": iou}
    values = {name: _numpy(v).astype(np.float64).ravel() for name, v in models.items()}
    n = len(next(iter(values.values())))
    for name, v in values.items():
        if len(v) != n:
            raise ValueError(f"{name!r} has {len(v)} classes, expected {n}")
        if np.any((v[np.isfinite(v)] < 0) | (v[np.isfinite(v)] > 1)):
            raise ValueError(
                f"IoU values must be in 0..1 ({name!r} has {np.nanmin(v):.3g}..{np.nanmax(v):.3g})"
            )
    names = _class_names(n, class_names)
    fig, ax = figure_and_axes(ax, (7, 0.28 * n * max(1, len(values) * 0.7) + 1.2))
    height = 0.8 / len(values)
    positions = np.arange(n)
    for k, (name, v) in enumerate(values.items()):
        y = positions - 0.4 + height * (k + 0.5)
        colours = [_class_colour(c) for c in range(n)] if len(values) == 1 and n <= 21 else f"C{k}"
        bars = np.nan_to_num(100 * v)
        ax.barh(y, bars, height=height, color=colours, edgecolor="0.3", label=name)
        for yy in y[~np.isfinite(v)]:
            ax.text(1, yy, "absent", va="center", fontsize="x-small", color="0.4")
        mean = 100 * np.nanmean(v) if np.isfinite(v).any() else np.nan
        line_colour = "0.2" if len(values) == 1 else f"C{k}"
        ax.axvline(mean, color=line_colour, linestyle="--", label=f"{name} mean {mean:.1f}")
    ax.set_yticks(positions, names, fontsize="small")
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def plot_class_frequency(
    counts, class_names: Sequence[str] | None = None, *, log: bool = False, ax: Axes | None = None
) -> Figure:
    """Each class's share of the labelled pixels (void excluded), in the class's VOC colour: the
    class imbalance the report names (background dominates)."""
    counts = _numpy(counts).astype(np.float64).ravel()
    if counts.sum() <= 0 or (counts < 0).any():
        raise ValueError("counts must be non-negative with a positive total")
    n = len(counts)
    share = 100 * counts / counts.sum()
    fig, ax = figure_and_axes(ax, (0.4 * n + 2, 4))
    colours = [_class_colour(c) for c in range(n)]
    ax.bar(range(n), share, color=colours, edgecolor="0.3")
    ax.set_xticks(range(n), _class_names(n, class_names), rotation=90, fontsize="small")
    ax.set_ylabel("share of labelled pixels (%)")
    if log:  # ticks at 1, 2 and 5 of each decade, written as plain numbers
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.yaxis.set_minor_locator(NullLocator())
    for x, value in enumerate(share):  # each bar's share written above it
        ax.text(x, value, f"{value:.2g}", ha="center", va="bottom", fontsize="x-small")
    return fig
