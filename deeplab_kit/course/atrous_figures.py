"""Figures of atrous convolution, ASPP and the rate ablation: where a dilated kernel's taps
land (on an image, on a feature map), how much of each ASPP branch still reads the map, the
rate explorer's figure, the effective receptive fields, the output-stride curves and the
ablation's seeds.

Each function returns a `figures.KitFigure`, which Jupyter and Colab show as a PNG.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Rectangle

from deeplab_kit.course.atrous import (
    Size,
    check_rate,
    feature_size,
    sampling_positions,
    taps_inside,
    valid_share,
    valid_tap_counts,
)
from deeplab_kit.course.erf import erf_radius
from deeplab_kit.course.figures import KitFigure, as_rgb, figure_and_axes

BRANCH_MARKERS = ("o", "s", "D", "^", "v", "P")
# 12 levels read like contours, and keep the notebook's PNGs small.
ERF_COLOURS = matplotlib.colormaps["magma"].resampled(12)


def _rate_list(rates) -> list[int]:
    """One rate or several, each a positive integer."""
    rates = [rates] if np.isscalar(rates) else list(rates)
    if not rates:
        raise ValueError("rates must be a non-empty sequence of positive integers, got []")
    return [check_rate(rate) for rate in rates]


def _draw_taps(ax: Axes, center, rates, size: tuple[int, int], scale: int = 1) -> None:
    """Each rate's 9 taps around `center` (map units, times `scale` for pixels): filled inside the
    map of `size`, hollow and crossed outside; a dashed square marks each kernel's extent."""
    for k, rate in enumerate(rates):
        colour, marker = f"C{k}", BRANCH_MARKERS[k % len(BRANCH_MARKERS)]
        taps = sampling_positions(center, rate)  # (9, 2) rows, columns
        inside = taps_inside(taps, size)
        xy = taps[:, ::-1] * scale  # (x, y) = (column, row)
        tap = dict(s=60, marker=marker, zorder=3)
        filled = dict(color=colour, edgecolors="black", linewidths=0.6)
        label = f"rate {rate}: {inside.sum()}/9 inside"
        ax.scatter(*xy[inside].T, **tap, **filled, label=label, gid=f"rate-{rate}-inside")
        hollow = dict(facecolors="none", edgecolors=colour, linewidths=1.2)
        ax.scatter(*xy[~inside].T, **tap, **hollow, gid=f"rate-{rate}-outside")
        ax.scatter(*xy[~inside].T, s=25, marker="x", color=colour, linewidths=1, zorder=3)
        corner, side = (np.asarray(center)[::-1] - rate - 0.5) * scale, (2 * rate + 1) * scale
        extent = dict(fill=False, edgecolor=colour, linestyle="--", linewidth=0.8)
        ax.add_patch(Rectangle(corner, side, side, **extent))


def plot_atrous_sampling(size: Size, rates, center=None, *, ax: Axes | None = None) -> Figure:
    """Where each ASPP branch's 3x3 kernel reads a feature map of `size`, for a kernel centred at
    `center` (row, column; default the map's centre). Taps inside the map are filled; taps in the
    zero padding are hollow and crossed: with a rate near the map's size only the centre remains.
    """
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    rates = _rate_list(rates)
    center = ((h - 1) // 2, (w - 1) // 2) if center is None else tuple(center)
    fig, ax = figure_and_axes(ax, (5.5, 5.5))
    feature_map = dict(facecolor="0.93", edgecolor="0.2", zorder=0, gid="feature-map")
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, **feature_map))
    if max(h, w) <= 80:  # one line per cell while they stay visible
        ax.vlines(np.arange(w + 1) - 0.5, -0.5, h - 0.5, color="white", linewidth=0.5, zorder=1)
        ax.hlines(np.arange(h + 1) - 0.5, -0.5, w - 0.5, color="white", linewidth=0.5, zorder=1)
    _draw_taps(ax, center, rates, (h, w))
    reach = max(rates) + 2  # room for the outermost markers
    ax.set_xlim(min(-1, center[1] - reach), max(w, center[1] + reach))
    ax.set_ylim(max(h, center[0] + reach), min(-1, center[0] - reach))  # rows grow downwards
    ax.set_aspect("equal")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(f"{h}x{w} feature map, kernels centred at {center}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return fig


def plot_taps_on_image(
    image, rates, output_stride: int = 1, center=None, *, ax: Axes | None = None
) -> Figure:
    """A 3x3 kernel's taps drawn on the image: at `output_stride` 1 they are `rate` pixels apart;
    on a feature map of stride s (the grid drawn) they are rate x s input pixels apart.
    `center` is a position on that map (row, column), by default its centre."""
    rgb = as_rgb(image)
    h, w = rgb.shape[:2]
    fh, fw = feature_size((h, w), output_stride) if output_stride > 1 else (h, w)
    center = ((fh - 1) // 2, (fw - 1) // 2) if center is None else tuple(center)
    fig, ax = figure_and_axes(ax, (5.5, 5.5))
    ax.imshow(rgb)
    if output_stride > 1:  # the feature map's cells, each one output position
        grid = dict(color="white", linewidth=0.4, alpha=0.6)
        ax.vlines(np.arange(fw + 1) * output_stride - 0.5, -0.5, h - 0.5, **grid)
        ax.hlines(np.arange(fh + 1) * output_stride - 0.5, -0.5, w - 0.5, **grid)
    rates = _rate_list(rates)
    _draw_taps(ax, center, rates, (fh, fw), scale=output_stride)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(f"taps on the image, output stride {output_stride}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    small = [r for r in rates if (2 * r + 1) * output_stride < 0.05 * max(h, w)]
    if small:  # kernels a few pixels wide vanish under the markers: show them magnified
        _zoom_on_taps(ax, rgb, center, rates, small, (fh, fw), output_stride)
    return fig


def _zoom_on_taps(ax: Axes, rgb, center, rates, small, size, scale: int) -> None:
    """An inset magnifying the image around `center`, where the `small` kernels' taps are
    drawn apart (in the colours and markers they have in the main axes)."""
    inset = ax.inset_axes([0.02, 0.02, 0.34, 0.34], gid="zoom")
    reach = (max(small) + 1.5) * scale
    cy, cx = (np.asarray(center) * scale).tolist()
    inset.imshow(rgb)
    for k, rate in enumerate(rates):  # k as in the main axes: the same colour and marker
        if rate not in small:
            continue
        taps = sampling_positions(center, rate)
        xy, marker = taps[:, ::-1] * scale, BRANCH_MARKERS[k % len(BRANCH_MARKERS)]  # (x, y)
        style = dict(color=f"C{k}", edgecolors="black", linewidths=0.6, zorder=3)
        inset.scatter(*xy[taps_inside(taps, size)].T, s=40, marker=marker, **style)
    inset.set_xlim(cx - reach, cx + reach)
    inset.set_ylim(cy + reach, cy - reach)
    inset.set_xticks([])
    inset.set_yticks([])
    inset.set_title(f"zoom: rate {', '.join(map(str, small))}", fontsize="x-small")
    ax.indicate_inset_zoom(inset, edgecolor="white")


def plot_valid_share(
    size: Size, rates=(), *, max_rate: int | None = None, ax: Axes | None = None
) -> Figure:
    """The share of a 3x3 kernel's weights that read the map (not its padding), averaged over the
    positions of a `size` map, against the rate; the paper's Figure 4 curves (positions with all
    9 or only 1 valid weight) dashed; `rates` marked. It falls to 1/9 as the rate reaches the
    map's size: the kernel becomes a 1x1 on the centre, the reason for image-level pooling."""
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    rates = _rate_list(rates)
    max_rate = max_rate or max([max(h, w) + max(h, w) // 4, *rates]) + 1
    r = np.arange(1, max_rate + 1)
    fig, ax = figure_and_axes(ax, (6, 4))
    mean = [valid_share((h, w), x) for x in r]
    ax.plot(r, mean, color="0.1", label="mean share of valid weights", gid="valid-share")
    counts = [valid_tap_counts((h, w), x) for x in r]
    for taps, style in ((9, "--"), (1, ":")):
        share = [c.get(taps, 0.0) for c in counts]
        ax.plot(r, share, color="0.5", linestyle=style, label=f"positions with {taps} valid")
    ax.axhline(1 / 9, color="0.6", linewidth=0.8)
    # at small rates the curves sit near 1, far from the 1/9 line: its label goes there
    ax.text(1, 1 / 9 + 0.01, "centre tap only (1/9)", va="bottom", fontsize="small", color="0.4")
    ax.axvline(max(h, w), color="0.6", linewidth=0.8, linestyle="-.")
    for k, rate in enumerate(rates):
        marker = BRANCH_MARKERS[k % len(BRANCH_MARKERS)]
        ax.plot(rate, valid_share((h, w), rate), marker=marker, color=f"C{k}", linestyle="none")
        ax.lines[-1].set(markeredgecolor="black", label=f"rate {rate}")
    ax.set(ylim=(0, 1.02), xlabel="atrous rate", ylabel="share of the 9 weights")
    ax.set_title(f"valid weights of a 3x3 kernel on a {h}x{w} map")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def plot_atrous_explorer(
    rates=(6, 12, 18), output_stride: int = 16, input_size: Size = 513, center=None
) -> Figure:
    """The rate explorer's figure for one setting: the branches' taps on the feature map (left)
    and the valid-weight share against the rate (right). `atrous.aspp_table` gives its numbers."""
    size = feature_size(input_size, output_stride)
    fig = KitFigure(figsize=(12, 5), layout="constrained")
    left, right = fig.subplots(1, 2, width_ratios=[1.1, 1])
    plot_atrous_sampling(size, rates, center, ax=left)
    plot_valid_share(size, rates, ax=right)
    fig.suptitle(
        f"input {input_size}, output stride {output_stride}: ASPP rates {tuple(_rate_list(rates))}"
    )
    return fig


# --- effective receptive fields -------------------------------------------------------------


def plot_erf(
    maps: Mapping[str, np.ndarray],
    *,
    theoretical: Mapping[str, float] | None = None,
    masses: Sequence[float] = (0.5, 0.9),
    columns: int = 4,
) -> Figure:
    """Effective receptive fields side by side (`deeplab_kit.course.erf`), on one colour scale:
    each pixel's share of its map's gradient (each map sums to 1), log-scaled so the tails show,
    with one colour bar; circles holding `masses` of it, and the theoretical field as a dashed
    square where it fits in the image."""
    shares = {name: np.asarray(g, dtype=np.float64) / np.sum(g) for name, g in maps.items()}
    top = max(float(g.max()) for g in shares.values())
    norm = LogNorm(vmin=top / 1e4, vmax=top, clip=True)
    rows = -(-len(maps) // columns)
    fig = KitFigure(figsize=(3.0 * columns + 0.8, 3.1 * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, (name, share) in zip(axes, shares.items(), strict=False):
        image = _erf_panel(ax, name, share, norm, masses, (theoretical or {}).get(name))
    for ax in axes[len(maps) :]:
        ax.set_axis_off()
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="share of the gradient per pixel")
    return fig


def _erf_panel(ax: Axes, name: str, share: np.ndarray, norm, masses, field) -> object:
    h, w = share.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    image = ax.imshow(share, cmap=ERF_COLOURS, norm=norm, interpolation="nearest", extent=extent)
    for mass, style in zip(masses, ("-", "--", ":"), strict=False):
        radius = erf_radius(share, mass)
        label = f"{mass:.0%} of the gradient: r = {radius:.0f} px"
        ax.add_patch(
            Circle((w // 2, h // 2), radius, fill=False, color="cyan", ls=style, label=label)
        )
    if field and field < max(h, w):
        corner = (w // 2 - field / 2, h // 2 - field / 2)
        ax.add_patch(Rectangle(corner, field, field, fill=False, color="white", ls="--", lw=1))
    ax.set_title(name, fontsize="small")
    ax.legend(loc="lower center", fontsize="x-small", framealpha=0.7)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def plot_seed_points(
    points: Mapping[str, Mapping[str, Sequence[float]]], *, title: str | None = None
) -> Figure:
    """mIoU (%) per setting, one colour per group ({group: {setting: [one value per seed]}}, the
    ablation's backbones): each seed a dot, the mean a bar outline, the groups side by side, so
    the spread behind every mean stays in view."""
    settings = list(dict.fromkeys(s for group in points.values() for s in group))
    fig, ax = figure_and_axes(None, (1.2 * len(settings) + 3, 4))
    width = 0.8 / len(points)
    for k, (group, values_of) in enumerate(points.items()):
        label = group  # on the group's first bar only
        for i, setting in enumerate(settings):
            values = list(values_of.get(setting, ()))
            if values:
                x = i - 0.4 + width * (k + 0.5)
                ax.bar(x, np.mean(values), width * 0.9, fill=False, edgecolor=f"C{k}", label=label)
                ax.plot([x] * len(values), values, "o", color=f"C{k}", markersize=4, alpha=0.8)
                label = None
    ax.set_xticks(range(len(settings)), settings, rotation=20, ha="right")
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title or "")
    ax.legend(loc="lower left", fontsize="small", title="bars: mean")
    return fig


def plot_going_deeper(
    measured: Mapping[int, Sequence[float]],
    quoted: Mapping[int, float],
    *,
    xlabel: str,
    title: str,
    log_x: bool = True,
    oracle: Mapping[int, float] | None = None,
    tick_labels: Mapping[int, str] | None = None,
) -> Figure:
    """mIoU (%) against output stride (or depth), on one axis from 0 to 100: each seed's measured
    value as a dot and their mean as a line; the paper's quoted values (hollow squares, labelled
    quoted: another network on other data, so compare shapes, not levels); `oracle` ({x: mIoU
    %}), what the block-majority oracle scores on each setting's map. `tick_labels` ({x: text})
    labels the x ticks (say, with the map's size)."""
    fig = KitFigure(figsize=(7.5, 4), layout="constrained")
    ax = fig.subplots()
    _draw_curves(ax, measured, quoted, oracle, "the paper (quoted: ResNet-50, VOC 2012 val)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mIoU (%)")
    ax.set_ylim(0, 100)
    if log_x:
        ax.set_xscale("log", base=2)
    xs = sorted(measured)
    ax.set_xticks(xs, [(tick_labels or {}).get(x, str(x)) for x in xs])
    ax.legend(loc="lower left", fontsize="small")
    ax.set_title(title)
    return fig


def _draw_curves(ax: Axes, measured, quoted, oracle, paper: str) -> None:
    """The going-deeper figures' curves: each seed's measured value (dots) and their mean (a
    line), the paper's quoted values (hollow squares, labelled `paper`) and, when given, the
    block-majority oracle (dotted)."""
    xs = sorted(measured)
    for x in xs:
        ax.plot([x] * len(measured[x]), measured[x], "o", color="C0", alpha=0.6, markersize=5)
    means = [float(np.mean(measured[x])) for x in xs]
    ax.plot(xs, means, "-", color="C0", label="measured here (dots: seeds, line: mean)")
    qs = sorted(quoted)
    ax.plot(qs, [quoted[q] for q in qs], "s--", color="0.35", mfc="white", label=paper)
    if oracle:
        ticks, label = sorted(oracle), "block-majority oracle on the map (rough ceiling)"
        oracle_style = dict(color="C2", marker="_", markersize=12, label=label)
        ax.plot(ticks, [oracle[x] for x in ticks], ":", **oracle_style)


def plot_map_size(
    measured: Mapping[int, Sequence[float]],
    quoted: Mapping[int, float],
    oracle: Mapping[int, float],
) -> Figure:
    """The output-stride curves by the feature map's side in cells (log axis), each as a share of
    its own best (%) on one axis: the kit's runs (dots: seeds; line: mean), the paper's quoted
    values and the block-majority oracle (a rough ceiling set by the masks alone). Their levels
    differ (other networks, other data); by map size, which their strides are not, their
    shapes compare. `measured` and `oracle` are keyed by the kit's map sides, `quoted` by the
    paper's."""
    fig = KitFigure(figsize=(7.5, 4), layout="constrained")
    ax = fig.subplots()
    best = max(float(np.mean(values)) for values in measured.values())
    shares = {side: [100 * value / best for value in values] for side, values in measured.items()}
    paper, ceiling = (
        {x: 100 * value / max(curve.values()) for x, value in curve.items()}
        for curve in (quoted, oracle)
    )
    _draw_curves(ax, shares, paper, ceiling, "the paper, 513-px crops (quoted)")
    ax.set(ylabel="mIoU as a share of the curve's best (%)", ylim=(0, 105))
    ax.set(xlabel="feature map side (cells)", title="the kit and the paper, by map size")
    ax.set_xscale("log", base=2)
    ticks = sorted(set(measured) | set(oracle) | set(quoted))
    ax.set_xticks(ticks, [str(side) for side in ticks])
    ax.legend(loc="lower right", fontsize="small")
    return fig
