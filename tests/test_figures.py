"""Figures: what they draw is checked against the data they were given."""

import itertools
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from deeplab_kit.course import atrous_figures, figures  # noqa: E402
from deeplab_kit.course.atrous import sampling_positions, valid_share  # noqa: E402
from deeplab_kit.data.classes import VOC_CLASSES, VOC_PALETTE  # noqa: E402
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402


def _masks(n, size=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    masks = torch.randint(0, 21, (n, size, size), generator=gen)
    masks[:, 0] = 255  # a void band along the top
    return masks


def _history(sessions=(1, 1, 1, 2, 2, 3, 3, 3), lrs=None):
    n = len(sessions)
    return pd.DataFrame(
        {
            "epoch": range(1, n + 1),
            "session": sessions,
            "train_loss": np.linspace(3.0, 0.2, n),
            "val_loss": np.linspace(3.1, 0.5, n),
            "miou": np.linspace(0.05, 0.5, n),
            "lr": lrs if lrs is not None else [1e-3] * n,
            "seconds": 1.0,
        }
    )


def _bands(ax):
    """session -> (x0, x1) of the shaded band with that session's gid."""
    return {
        p.get_gid(): (p.get_x(), p.get_x() + p.get_width())
        for p in ax.patches
        if (p.get_gid() or "").startswith("session-")
    }


# --- masks and images ---------------------------------------------------------------------------


def test_color_mask_pixels_are_palette_colours_and_void_is_voids_colour():
    mask = _masks(1)[0]
    colours = figures.color_mask(mask)
    assert colours.shape == (12, 12, 3) and colours.dtype == np.uint8
    for i, j in itertools.product(range(12), repeat=2):
        assert tuple(colours[i, j]) == tuple(VOC_PALETTE[mask[i, j]])
    assert (colours[0] == (224, 224, 192)).all()  # VOC's void colour
    assert tuple(colours[mask == 15][0]) == (192, 128, 128)  # "person" in VOC's palette


def test_color_mask_refuses_non_labels():
    with pytest.raises(ValueError, match="0..255"):
        figures.color_mask(np.array([[0, 300]]))
    with pytest.raises(ValueError, match="non-integer"):
        figures.color_mask(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        figures.color_mask(np.zeros((2, 3, 3), dtype=np.int64))


def test_denormalize_inverts_the_normalisation():
    rgb = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0))
    normalised = (rgb - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[
        :, None, None
    ]
    np.testing.assert_allclose(
        figures.denormalize(normalised), rgb.permute(1, 2, 0).numpy(), atol=1e-6
    )
    np.testing.assert_allclose(
        figures.as_rgb(np.full((2, 2, 3), 255, np.uint8)), np.ones((2, 2, 3))
    )


def test_overlay_blends_labelled_pixels_only():
    image = np.full((4, 4, 3), 0.5)
    mask = np.zeros((4, 4), dtype=np.int64)
    mask[1, 2], mask[3, 3] = 15, 255
    blended = figures.overlay(image, mask, alpha=0.25)
    assert np.array_equal(blended[mask == 0], image[mask == 0])
    np.testing.assert_allclose(blended[1, 2], 0.75 * 0.5 + 0.25 * VOC_PALETTE[15] / 255)
    np.testing.assert_allclose(blended[3, 3], 0.75 * 0.5 + 0.25 * VOC_PALETTE[255] / 255)


def test_prediction_grid_shows_image_truth_and_each_models_prediction():
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    truths, mine, theirs = _masks(2, seed=1), _masks(2, seed=2), _masks(2, seed=3)
    fig = figures.plot_predictions(images, truths, {"MyModel": mine, "Pretrained": theirs})
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == ["image", "ground truth", "MyModel", "Pretrained"]
    for row in range(2):
        np.testing.assert_allclose(
            axes[row, 0].images[0].get_array(), figures.denormalize(images[row])
        )
        assert np.array_equal(axes[row, 1].images[0].get_array(), figures.color_mask(truths[row]))
        assert np.array_equal(axes[row, 3].images[0].get_array(), figures.color_mask(theirs[row]))
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    present = torch.cat([truths, mine, theirs]).unique().tolist()
    assert legend == {"void" if c == 255 else VOC_CLASSES[c] for c in present}


def test_prediction_grid_can_draw_masks_over_their_images():
    images, truths = torch.randn(2, 3, 12, 12), _masks(2)
    axes = figures.plot_predictions(images, truths, alpha=0.4, legend=False).axes
    assert [ax.get_title() for ax in axes[:2]] == ["image", "ground truth"] and len(axes) == 4
    np.testing.assert_allclose(
        axes[3].images[0].get_array(), figures.overlay(images[1], truths[1], 0.4)
    )


def test_prediction_grid_refuses_mismatched_counts():
    with pytest.raises(ValueError, match="2 images but 1 masks"):
        figures.plot_predictions(torch.zeros(2, 3, 4, 4), _masks(2, 4), [_masks(1, 4)[0]])


# --- history ------------------------------------------------------------------------------------


def test_session_bands_cover_exactly_the_epochs_of_each_session():
    history = _history()
    fig = figures.plot_history(history)
    bands = _bands(fig.axes[0])
    assert set(bands) == {"session-1", "session-2", "session-3"}
    for session, rows in history.groupby("session"):
        x0, x1 = bands[f"session-{session}"]
        inside = history["epoch"][(history["epoch"] > x0) & (history["epoch"] < x1)]
        assert inside.tolist() == rows["epoch"].tolist()
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert {"session 1", "session 2", "session 3"} <= set(labels)


def test_the_loss_curve_is_one_continuous_line_over_sessions():
    history = _history()
    history.loc[history["epoch"] % 2 == 1, "val_loss"] = np.nan  # evaluated every other epoch
    fig = figures.plot_history(history)
    train, val = fig.axes[0].get_lines()[:2]
    assert train.get_xdata().tolist() == history["epoch"].tolist()
    assert val.get_xdata().tolist() == [2, 4, 6, 8]


def test_a_rerun_epoch_belongs_to_the_later_session():
    history = pd.concat([_history((1, 1, 1)), _history((2, 2, 2)).assign(epoch=[3, 4, 5])])
    spans = figures.session_spans(history)
    assert spans[["session", "first_epoch", "last_epoch"]].values.tolist() == [[1, 1, 2], [2, 3, 5]]


def test_learning_rate_jumps_are_marked_and_smooth_schedules_are_not():
    lrs = [1e-3] * 5 + [1e-4] * 3
    history = _history(lrs=lrs)
    changes = figures.lr_changes(history)
    assert changes.values.tolist() == [[6, 1e-3, 1e-4]]
    fig = figures.plot_history(history)
    marks = [line for line in fig.axes[0].get_lines() if line.get_gid() == "lr-change"]
    assert [m.get_xdata()[0] for m in marks] == [5.5]
    assert any("x0.1" in t.get_text() for t in fig.axes[0].texts)
    poly = 1e-2 * (1 - np.arange(8) / 10) ** 0.9  # a poly schedule: small steps every epoch
    assert figures.lr_changes(_history(lrs=poly)).empty


def test_history_is_read_from_a_csv_or_a_run_folder(tmp_path):
    _history().to_csv(tmp_path / "history.csv", index=False)
    assert figures.read_history(tmp_path)["epoch"].tolist() == list(range(1, 9))
    assert isinstance(figures.plot_history(tmp_path / "history.csv"), Figure)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        figures.read_history(tmp_path / "nowhere.csv")
    _history().drop(columns="session").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match=r"bad.csv: missing column\(s\) \['session'\]"):
        figures.read_history(tmp_path / "bad.csv")
    table = figures.history_table(tmp_path)  # as the notebooks show it: mIoU in %
    np.testing.assert_allclose(table["mIoU (%)"], (100 * _history()["miou"]).round(2))
    assert "miou" not in table.columns


# --- scores -------------------------------------------------------------------------------------


def test_confusion_heat_map_is_row_normalised():
    counts = np.arange(16).reshape(4, 4)
    counts[2] = 0  # a class absent from the truth
    fig = figures.plot_confusion(
        SimpleNamespace(matrix=torch.as_tensor(counts)), ["a", "b", "c", "d"]
    )
    data = np.ma.filled(fig.axes[0].images[0].get_array(), np.nan)
    np.testing.assert_allclose(data[[0, 1, 3]].sum(axis=1), 100.0)  # in %, as its colour bar
    np.testing.assert_allclose(data[1], 100 * counts[1] / counts[1].sum())
    assert np.isnan(data[2]).all()
    assert fig.axes[1].get_ylabel() == "share of the true class's pixels (%)"
    assert fig.axes[1].get_ylim() == (0.0, 100.0)
    diagonal = [float(t.get_text()) for t in fig.axes[0].texts]
    np.testing.assert_allclose(diagonal, np.round(np.diag(data)[[0, 1, 3]]))
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["a", "b", "c", "d"]
    raw = figures.plot_confusion(counts, normalize=False).axes[0].images[0].get_array()
    assert np.array_equal(raw, counts)
    with pytest.raises(ValueError, match="4 classes"):
        figures.plot_confusion(counts, VOC_CLASSES)


def test_class_iou_bars_show_each_class_and_the_mean():
    iou = np.linspace(0.1, 0.9, 21)
    iou[4] = np.nan  # absent from truth and prediction
    fig = figures.plot_class_iou(torch.as_tensor(iou))
    ax = fig.axes[0]
    widths = [bar.get_width() for bar in ax.containers[0]]
    np.testing.assert_allclose(widths, np.nan_to_num(100 * iou))
    assert [t.get_text() for t in ax.texts] == ["absent"]
    mean_line = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    assert mean_line.get_xdata()[0] == pytest.approx(100 * np.nanmean(iou))
    two = figures.plot_class_iou({"MyModel": iou, "Pretrained": np.full(21, 0.5)})
    assert [c.get_label() for c in two.axes[0].containers] == ["MyModel", "Pretrained"]
    with pytest.raises(ValueError, match="0..1"):
        figures.plot_class_iou(np.full(21, 54.8))


def test_class_frequency_bars_are_pixel_shares_in_class_colours():
    from deeplab_kit.data.voc import class_statistics

    masks = _masks(3, size=16)
    counts = class_statistics(masks)["pixels"].to_numpy()[:21]  # void (the last row) left out
    labels = masks[masks != 255]
    assert counts.tolist() == [int((labels == c).sum()) for c in range(21)]
    bars = figures.plot_class_frequency(counts).axes[0].patches
    np.testing.assert_allclose([b.get_height() for b in bars], 100 * counts / counts.sum())
    np.testing.assert_allclose(bars[15].get_facecolor()[:3], VOC_PALETTE[15] / 255)


def test_class_frequency_log_axis_has_readable_ticks():
    counts = np.array([7300, 290, 120, 40, 9, 3] + [50] * 15)
    ax = figures.plot_class_frequency(counts, log=True).axes[0]
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low <= t <= high]
    assert len(ticks) >= 6  # 1, 2 and 5 of each decade the shares span
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "1" in labels and "10" in labels and all("^" not in label for label in labels)
    written = [float(t.get_text()) for t in ax.texts]
    np.testing.assert_allclose(written, 100 * counts / counts.sum(), rtol=0.05)


# --- atrous -------------------------------------------------------------------------------------


def _offsets(ax, gid):
    (collection,) = [c for c in ax.collections if c.get_gid() == gid]
    return {tuple(p) for p in collection.get_offsets().tolist()}


def test_sampling_figure_draws_each_branchs_taps_inside_filled_outside_hollow():
    size, center = (9, 11), (4, 5)
    ax = atrous_figures.plot_atrous_sampling(size, (2, 5), center).axes[0]
    for rate in (2, 5):
        taps = sampling_positions(center, rate)
        inside = {(c, r) for r, c in taps if 0 <= r < 9 and 0 <= c < 11}
        outside = {(c, r) for r, c in taps} - inside
        assert _offsets(ax, f"rate-{rate}-inside") == inside
        assert _offsets(ax, f"rate-{rate}-outside") == outside
    # rate 5 reaches past the 9 rows but not the 11 columns: only the middle row stays inside
    assert {row for _, row in _offsets(ax, "rate-5-inside")} == {4}
    square = atrous_figures.plot_atrous_sampling(9, (5,)).axes[
        0
    ]  # centred at (4, 4): the centre tap only
    assert _offsets(square, "rate-5-inside") == {(4, 4)}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["rate 2: 9/9 inside", "rate 5: 3/9 inside"]


def test_valid_share_curve_is_atrous_valid_share():
    ax = atrous_figures.plot_valid_share(33, (6, 12, 18), max_rate=40).axes[0]
    (curve,) = [line for line in ax.get_lines() if line.get_gid() == "valid-share"]
    assert curve.get_xdata().tolist() == list(range(1, 41))
    np.testing.assert_allclose(curve.get_ydata(), [valid_share(33, r) for r in range(1, 41)])


def test_figures_show_once_as_png_in_a_notebook_and_stay_out_of_pyplot():
    from IPython.core.formatters import DisplayFormatter

    before = plt.get_fignums()
    shown = [
        atrous_figures.plot_atrous_explorer((6, 12, 18), 16, 129),
        atrous_figures.plot_taps_on_image(torch.zeros(3, 64, 64), (1, 2), output_stride=8),
        figures.plot_history(_history()),
    ]
    for fig in shown:  # what Jupyter does with a cell's value, with or without %matplotlib
        data, _ = DisplayFormatter().format(fig)
        assert data["image/png"].startswith(b"\x89PNG")
    assert len(shown[0].axes) == 2
    assert plt.get_fignums() == before


def _scheduled_history(**config):
    """The history's lr column of a real schedule: each epoch's mean learning rate."""
    from deeplab_kit.config import RunConfig
    from deeplab_kit.training.schedule import epoch_lr, make_scheduler

    config = RunConfig(**{"epochs": 10, "lr": 0.006, **config})
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=config.lr)
    scheduler = make_scheduler(optimizer, config, iterations_per_epoch=40)
    return _history(lrs=[epoch_lr(scheduler, e, 40) for e in range(config.epochs)][:8])


@pytest.mark.parametrize(
    "schedule",
    [
        dict(schedule="cosine", warmup_epochs=1),
        dict(schedule="poly", warmup_epochs=1),
        dict(schedule="poly"),
        dict(schedule="cosine", epochs=8, warmup_epochs=2),
    ],
)
def test_smooth_schedules_have_no_lr_steps(schedule):
    assert figures.lr_changes(_scheduled_history(**schedule)).empty


def test_a_scheduled_step_is_marked():
    history = _scheduled_history(schedule="step", lr_steps=(4,), epochs=8)
    assert figures.lr_changes(history)["epoch"].tolist() == [5]


def test_the_iou_plot_mean_line_is_the_miou():
    from deeplab_kit.metrics import ConfusionMatrix

    cm = ConfusionMatrix(4).update(
        torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2])
    )
    scores = cm.compute()  # class 3 absent from truth and prediction
    ax = figures.plot_class_iou(scores["iou"], ["a", "b", "c", "d"]).axes[0]
    mean_line = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    assert mean_line.get_xdata()[0] == pytest.approx(100 * scores["miou"])
    assert [t.get_text() for t in ax.texts] == ["absent"]


def test_erf_panels_mark_the_radii():
    rows, cols = np.mgrid[0:33, 0:33]
    grad = (np.hypot(rows - 16, cols - 16) < 10).astype(float)  # a uniform disc of radius 10
    fig = atrous_figures.plot_erf({"x": grad, "y": grad}, theoretical={"x": 21, "y": 99}, columns=3)
    first = fig.axes[0]
    circles = [p for p in first.patches if type(p).__name__ == "Circle"]
    assert [c.get_radius() for c in circles] == [8.0, 10.0]  # 50% and 90% of its mass
    assert all(c.center == (16, 16) for c in circles)
    assert any(type(p).__name__ == "Rectangle" for p in first.patches)  # 21 px fits in 33
    assert not any(type(p).__name__ == "Rectangle" for p in fig.axes[1].patches)  # 99 does not
    assert not fig.axes[2].axison  # the unused panel


def test_taps_a_few_pixels_apart_get_a_magnified_inset():
    image = np.zeros((513, 513, 3), dtype=np.uint8)
    ax = atrous_figures.plot_taps_on_image(image, rates=(1, 8, 24)).axes[0]
    insets = [child for child in ax.child_axes if child.get_gid() == "zoom"]
    assert len(insets) == 1
    # rates 1 and 8 span 3 and 17 of 513 pixels: magnified; rate 24 shows in the main axes
    assert [len(points.get_offsets()) for points in insets[0].collections] == [9, 9]
    assert insets[0].get_title() == "zoom: rate 1, 8"
    low, high = insets[0].get_xlim()
    assert high - low < 20  # a few pixels around the centre
    plain = atrous_figures.plot_taps_on_image(image, rates=(16, 24)).axes[0]
    assert not plain.child_axes


def test_a_flat_miou_is_drawn_flat_from_zero():
    history = _history()
    history["miou"] = 0.035 + 0.0005 * (history["epoch"] % 2)  # noise around 0.035
    miou_ax = figures.plot_history(history).axes[1]
    assert miou_ax.get_ylim() == (0.0, pytest.approx(10.0))  # in %: at least 10 points high


# --- going deeper ---------------------------------------------------------------------------


def test_the_going_deeper_figure_puts_the_paper_on_the_same_axis():
    measured = {8: [79.0, 80.0], 16: [66.0, 68.0], 32: [47.0, 49.0]}
    quoted = {8: 75.18, 16: 73.88, 32: 70.06}
    fig = atrous_figures.plot_going_deeper(
        measured,
        quoted,
        xlabel="output stride",
        title="t",
        oracle={8: 86.8, 16: 71.2, 32: 52.4},
        tick_labels={8: "8\n17x17"},
    )
    (ax,) = fig.axes  # one axis: no second scale for the quoted numbers
    assert ax.get_ylim() == (0.0, 100.0) and ax.get_ylabel() == "mIoU (%)"
    lines = {line.get_label(): line for line in ax.get_lines()}
    quoted_line = next(line for label, line in lines.items() if "quoted" in label)
    assert list(quoted_line.get_ydata()) == [75.18, 73.88, 70.06]
    oracle = next(line for label, line in lines.items() if "oracle" in label)
    assert list(oracle.get_ydata()) == [86.8, 71.2, 52.4]
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "8\n17x17"


def test_the_map_size_figure_compares_shares_of_the_best_by_cells():
    measured = {17: [80.0, 78.0], 9: [66.0], 5: [47.0]}  # keyed by the kit's map sides
    quoted = {65: 75.18, 33: 73.88, 17: 70.06}  # by the paper's, on 513-px crops
    fig = atrous_figures.plot_map_size(measured, quoted, oracle={17: 86.8, 9: 71.2, 5: 52.4})
    (ax,) = fig.axes  # one axis: every curve as a share of its own best
    assert "share" in ax.get_ylabel() and ax.get_xlabel() == "feature map side (cells)"
    lines = {line.get_label(): line for line in ax.get_lines() if not line.get_label()[0] == "_"}
    kit = lines["measured here (dots: seeds, line: mean)"]
    paper = next(line for label, line in lines.items() if "quoted" in label)
    oracle = next(line for label, line in lines.items() if "oracle" in label)
    assert list(kit.get_xdata()) == [5, 9, 17] and list(paper.get_xdata()) == [17, 33, 65]
    np.testing.assert_allclose(kit.get_ydata(), [100 * 47 / 79, 100 * 66 / 79, 100])
    np.testing.assert_allclose(paper.get_ydata(), [100 * 70.06 / 75.18, 100 * 73.88 / 75.18, 100])
    np.testing.assert_allclose(oracle.get_ydata(), [100 * 52.4 / 86.8, 100 * 71.2 / 86.8, 100])


def test_the_seeds_figure_shows_every_seed_and_each_mean_per_group():
    points = {
        "dilated": {"control": [60.0, 64.0], "paper": [80.0, 82.0, 84.0]},
        "undilated": {"paper": [70.0, 50.0]},  # no control: its slot stays empty
    }
    (ax,) = atrous_figures.plot_seed_points(points, title="t").axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["control", "paper"]
    bars = ax.patches
    assert [round(b.get_height(), 6) for b in bars] == [62.0, 82.0, 60.0]  # the means
    dots = [list(line.get_ydata()) for line in ax.get_lines()]
    assert dots == [[60.0, 64.0], [80.0, 82.0, 84.0], [70.0, 50.0]]  # every seed
    assert bars[2].get_x() > bars[1].get_x()  # undilated's paper beside dilated's
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["dilated", "undilated"]
    assert ax.get_ylim() == (0.0, 100.0)
