"""The ASPP rate ablation on two backbones: its geometry, its twins, its interior pixels, its
learning-rate sweep and its runs, on tiny budgets."""

import numpy as np
import pandas as pd
import pytest
import torch

from deeplab_kit.cli import main
from deeplab_kit.config import RunConfig
from deeplab_kit.course import ablation
from deeplab_kit.course.atrous import receptive_field, receptive_field_from_config
from deeplab_kit.model import build_model, describe
from deeplab_kit.training.build import build_run_model
from deeplab_kit.training.schedule import make_optimizer
from deeplab_kit.training.step import TrainStep

# 4 generated 32-px images in batches of 2; at output stride 8 the map is 4 x 4, where every
# rate from 4 up reads only the centre: the paper's, the report's and its variant are one network.
TINY = dict(
    backbone_width=8,
    aspp_channels=8,
    image_size=32,
    batch_size=2,
    eval_batch_size=2,
    epochs=1,
    amp="off",
    channels_last=False,
    device="cpu",
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(synthetic_root):
    return RunConfig.from_recipe("ablation", data_root=str(synthetic_root), **TINY)


@pytest.fixture(scope="module")
def grid(base, tmp_path_factory):
    """Both backbones x five settings x seeds 0 and 1, checkpoints pruned."""
    out = tmp_path_factory.mktemp("ablation")
    table = ablation.run_ablation(base, out, seeds=(0, 1), erf_images=2, keep_checkpoints=False)
    return out, table


# --- geometry --------------------------------------------------------------------------------


def test_both_backbones_give_aspp_the_report_s_16x16_map():
    geometry = ablation.geometry_table(RunConfig.from_recipe("ablation")).set_index(
        ["backbone", "setting"]
    )
    assert (geometry["feature map"] == "16x16").all()
    assert geometry["same network as"].isna().all()  # on 16 x 16 no two settings coincide
    assert geometry.loc[("small field", "control"), "backbone field (px)"] == 51
    assert geometry.loc[("dilated", "control"), "backbone field (px)"] == 195
    assert geometry.loc[("dilated", "report"), "valid per branch"] == "44% / 25% / 11%"


def test_the_small_field_backbone_has_its_stated_strides_dilations_and_field():
    config = RunConfig.from_recipe("ablation").replace(**ablation.BACKBONES["small field"])
    model = build_model(config.model)
    info = describe(model)
    assert list(info["strides"]) == ["layer1", "layer2"]  # cut after layer2
    assert info["strides"] == {"layer1": (1, 1), "layer2": (2, 1)}
    assert info["dilations"] == {"layer1": (1, 1), "layer2": (1, 1)}
    assert info["output_stride"] == 8
    assert receptive_field(model).backbone == 51
    assert receptive_field_from_config(model.config).backbone == 51
    with torch.no_grad():
        assert model.backbone(torch.zeros(1, 3, 128, 128))["out"].shape[-2:] == (16, 16)


def test_settings_train_to_the_same_network_exactly_when_the_geometry_says_so():
    """On a 4 x 4 map (32 px at output stride 8): after a few steps on one batch, two settings
    give the same scores if and only if they are declared twins (up to the rounding of sums
    in other orders)."""
    config = RunConfig.from_recipe("ablation", **TINY)
    settings = ablation.configs(config)
    twins = ablation.equivalent_settings(settings)
    assert twins["dilated / report"] == "dilated / paper"
    assert "dilated / no atrous" not in twins and "dilated / control" not in twins
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    targets = torch.randint(0, 21, (2, 32, 32), generator=generator)
    outputs = {}
    for label, c in settings.items():
        if not label.startswith("dilated"):
            continue
        model = build_run_model(c, pretrained=False)
        optimizer = make_optimizer(model, c)
        step = TrainStep(model, optimizer, device="cpu")
        for _ in range(2):
            step(images, targets)
        with torch.no_grad():
            outputs[label] = model.eval()(images)["out"]
    labels = list(outputs)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            gap = (outputs[a] - outputs[b]).abs().max().item()
            same = twins.get(b) == a or twins.get(a) == b or twins.get(a, a) == twins.get(b, b)
            assert (gap < 1e-4) == same, (a, b, gap)


# --- interior pixels -------------------------------------------------------------------------


def test_interior_pixels_lie_far_from_every_outline():
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:18, 2:18] = 7  # a 16 x 16 object
    mask[2:18, 2] = 255  # a void band on its left edge
    inner = ablation.interior(mask, 4)
    rows, cols = np.nonzero(inner)
    # 4 px from the object's outline inside it, from the background's edge outside it
    assert inner[10, 10] and not inner[10, 5] and not inner[1, 1]
    assert (mask[inner] != 255).all()
    assert set(np.unique(mask[inner])) == {7}  # the background strip is too thin
    assert rows.min() == 6 and rows.max() == 13 and cols.min() == 7 and cols.max() == 13


# --- running it ------------------------------------------------------------------------------


def test_one_row_per_backbone_setting_and_seed(grid):
    out, table = grid
    expected = [(b, s, k) for b in ablation.BACKBONES for s in ablation.SETTINGS for k in (0, 1)]
    assert list(zip(table["backbone"], table["setting"], table["seed"], strict=True)) == expected
    assert (table["feature map"] == "4x4").all()
    assert table["miou"].between(0, 1).all() and table["interior miou"].between(0, 1).all()
    assert table["epochs"].eq(1).all() and table["finished"].all()
    trained = table[table["same network as"].isna()]
    assert (trained["erf r50 (px)"] <= trained["erf r90 (px)"]).all()
    for row in trained.to_dict("records"):
        run = ablation.run_folder_of(out, row)
        assert (run / "interior.json").is_file() and (run / "erf.npy").is_file()
        assert not (run / "checkpoints").exists()  # pruned


def test_a_twin_is_not_trained_again_and_carries_its_twin_s_scores(grid):
    out, table = grid
    twin = table[(table["backbone"] == "dilated") & (table["setting"] == "report")]
    paper = table[(table["backbone"] == "dilated") & (table["setting"] == "paper")]
    assert twin["same network as"].eq("dilated / paper").all()
    assert twin["miou"].tolist() == paper["miou"].tolist()
    assert not (out / "dilated-report").exists()


def test_results_are_written_and_read_back_and_reused(grid, base, monkeypatch):
    out, table = grid
    read, record = ablation.read_ablation(out)
    pd.testing.assert_frame_equal(read, table)
    assert record["seeds"] == [0, 1] and record["backbones"] == ablation.BACKBONES
    from deeplab_kit.course import experiments

    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("retrained"))
    again = ablation.run_ablation(base, out, seeds=(0, 1), erf_images=2, keep_checkpoints=False)
    pd.testing.assert_frame_equal(again, table)


def test_the_statistics_cover_the_family(grid):
    _, table = grid
    tests = ablation.tests(table)
    assert len(tests) == 10 + 10 + 5 == len(ablation.pairs())
    assert tests.loc[("dilated / paper", "dilated / report"), "verdict"] == "same"


def test_the_learning_rate_sweep_and_its_choice(base, tmp_path):
    sweep = ablation.sweep_lr(base, tmp_path, candidates=(1e-3, 1e-2), epochs=1)
    keys = list(zip(sweep["lr"], sweep["backbone"], strict=True))
    assert keys == [(lr, b) for lr in (1e-3, 1e-2) for b in ("dilated", "small field")]
    assert (sweep["val_loss"] > 0).all() and sweep["miou"].between(0, 1).all()
    made_up = pd.DataFrame({"lr": [1e-3, 1e-3, 1e-2, 1e-2], "val_loss": [2.0, 1.6, 1.5, 1.8]})
    assert ablation.chosen_lr(made_up) == 1e-2  # the lower mean loss over both controls


# --- the command line ------------------------------------------------------------------------


def test_command_line(synthetic_root, tmp_path, capsys):
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "cli"
    argv = ["ablation", "--out", str(out), "--data", str(synthetic_root), "--seeds", "3"]
    assert main([*argv, "--quiet", "--prune", *options]) == 0
    table, _ = ablation.read_ablation(out)
    assert table["seed"].eq(3).all() and len(table) == 10
    assert "small field" in capsys.readouterr().out
