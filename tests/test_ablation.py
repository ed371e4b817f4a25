"""The ASPP rate ablation: its two backbones of one depth, its geometry, its regions (interior,
band), its learning-rate sweep on the tune split, its planned contrasts and its runs, on tiny
budgets."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from deeplab_kit.cli import main
from deeplab_kit.config import RunConfig
from deeplab_kit.course import ablation
from deeplab_kit.course.atrous import receptive_field, receptive_field_from_config
from deeplab_kit.course.experiments import resolvable, run_folder
from deeplab_kit.model import build_model, describe
from tests.conftest import TINY_RUN

# conftest's tiny run on the ablation recipe's output stride 8: on 32-px images a 4 x 4 map,
# where every rate from 4 up reads only the centre.
TINY = {k: v for k, v in TINY_RUN.items() if k != "backbone"}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    from deeplab_kit.data.synthetic import make_synthetic_voc

    root = make_synthetic_voc(tmp_path_factory.mktemp("data"), 4, 2, 32, num_tune=2)
    return RunConfig.from_recipe("ablation", data_root=str(root), **TINY)


# --- the design ----------------------------------------------------------------------------------


def test_both_backbones_give_aspp_the_report_s_16x16_map_with_one_depth():
    geometry = ablation.geometry_table(RunConfig.from_recipe("ablation")).set_index(
        ["backbone", "setting"]
    )
    assert (geometry["feature map"] == "16x16").all()
    assert geometry["same network as"].isna().all()  # on 16 x 16 no two settings coincide
    assert geometry.loc[("dilated", "control"), "backbone field (px)"] == 195
    assert geometry.loc[("undilated", "control"), "backbone field (px)"] == 115
    assert geometry.loc[("undilated", "report"), "valid per branch"] == "44% / 25% / 11%"
    models = {
        arm: build_model(RunConfig.from_recipe("ablation", **fields).model)
        for arm, fields in ablation.BACKBONES.items()
    }
    dilated, undilated = (describe(models[arm]) for arm in ("dilated", "undilated"))
    assert dilated["parameters"] == undilated["parameters"]  # only the field differs
    assert dilated["strides"] == undilated["strides"]
    assert dilated["dilations"]["layer4"] == (2, 4) and undilated["dilations"]["layer4"] == (1, 1)
    for model in models.values():
        assert receptive_field(model) == receptive_field_from_config(model.config)
        with torch.no_grad():
            assert model.backbone(torch.zeros(1, 3, 128, 128))["out"].shape[-2:] == (16, 16)


def test_the_planned_contrasts_have_the_seeds_that_resolve_two_points():
    planned = {name for pair in ablation.PLANNED for name in pair}
    labels = ablation.configs(RunConfig.from_recipe("ablation"))
    assert planned <= set(labels)
    assert all(ablation.seeds_of(name) == ablation.PLANNED_SEEDS for name in planned)
    assert ablation.seeds_of("dilated / control") == ablation.EXPLORATORY_SEEDS
    seeds = len(ablation.PLANNED_SEEDS)
    assert resolvable(1.7, seeds, len(ablation.PLANNED)) == pytest.approx(2.0, abs=0.1)
    explored = ablation.exploratory_pairs()
    assert not set(explored) & set(ablation.PLANNED) and len(explored) == len(set(explored))


# --- interior pixels and the band -------------------------------------------------------------


def test_interior_pixels_lie_far_from_every_outline_and_the_band_near_one():
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[2:18, 2:18] = 7  # a 16 x 16 object
    mask[2:18, 2] = 255  # a void band on its left edge
    inner = ablation.interior(mask, 4)
    rows, cols = np.nonzero(inner)
    assert inner[10, 10] and not inner[10, 5] and not inner[1, 1]
    assert (mask[inner] != 255).all()
    assert set(np.unique(mask[inner])) == {7}  # the background strip is too thin
    assert rows.min() == 6 and rows.max() == 13 and cols.min() == 7 and cols.max() == 13
    near = ablation.band(mask, 2)
    assert near[10, 4] and near[1, 10] and not near[10, 10] and not (near & inner).any()
    assert (mask[near] != 255).all()


# --- running it ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid(base, tmp_path_factory, monkeypatch_module):
    """Both backbones x six settings; planned seeds 0 and 1, exploratory seed 0."""
    monkeypatch_module.setattr(ablation, "PLANNED_SEEDS", (0, 1))
    monkeypatch_module.setattr(ablation, "EXPLORATORY_SEEDS", (0,))
    out = tmp_path_factory.mktemp("ablation")
    rows = ablation.run(base, out, erf_images=2, keep_checkpoints=False)
    return out, ablation.table(rows)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_one_row_per_run_in_table_order(grid):
    out, table = grid
    expected = [
        (b, s, k)
        for b in ablation.BACKBONES
        for s in ablation.SETTINGS
        for k in ablation.seeds_of(ablation.run_label(b, s))
    ]
    assert list(zip(table["backbone"], table["setting"], table["seed"], strict=True)) == expected
    assert (table["feature map"] == "4x4").all()
    for column in ("miou", "interior miou", "band miou"):
        assert table[column].between(0, 1).all(), column
    assert table["epochs"].eq(1).all() and table["finished"].all()
    assert (table["erf r50 (px)"] <= table["erf r90 (px)"]).all()
    for row in table.to_dict("records"):
        label = ablation.run_label(row["backbone"], row["setting"])
        run = run_folder(out, label, int(row["seed"]))
        assert (run / "regions.json").is_file() and (run / "erf.npy").is_file()
        assert not (run / "checkpoints").exists()  # pruned


def test_a_finished_grid_is_reused_not_retrained(grid, base, monkeypatch):
    out, table = grid
    from deeplab_kit.course import experiments

    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("retrained"))
    again = ablation.table(ablation.run(base, out, erf_images=2, keep_checkpoints=False))
    pd.testing.assert_frame_equal(again, table)


def test_the_planned_contrasts_are_tested_apart_from_the_rest(grid):
    _, table = grid
    planned = ablation.tests(table)
    assert list(planned.index) == list(ablation.PLANNED) and set(planned["seeds"]) == {2}
    assert ((planned["p (Holm)"] >= planned["p"]) | planned["p"].isna()).all()
    explored = ablation.tests(table, ablation.exploratory_pairs())
    assert len(explored) == len(ablation.exploratory_pairs())


def test_the_learning_rate_is_chosen_on_the_tune_split_inside_its_grid(base, tmp_path):
    sweep = ablation.sweep_lr(base, tmp_path, grid=(1e-3, 1e-2), keep_checkpoints=False)
    keys = list(zip(sweep["lr"], sweep["setting"], strict=True))
    assert keys == [(lr, s) for lr in (1e-3, 1e-2) for s in ablation.LR_SETTINGS]
    assert sweep["tune miou"].between(0, 1).all() and (sweep["tune loss"] > 0).all()
    run = tmp_path / "lr-0.001-dilated-paper" / "seed-0"
    assert RunConfig.from_dict(json.loads((run / "config.json").read_text())).val_split == "tune"
    made_up = pd.DataFrame({"lr": [1, 1, 2, 2, 4, 4], "tune miou": [0.2, 0.3, 0.5, 0.4, 0.1, 0.2]})
    assert ablation.chosen_lr(made_up) == 2 and ablation.inside_grid(made_up)
    assert not ablation.inside_grid(made_up[made_up["lr"] < 4])  # 2 would be the grid's end


def test_the_grid_grows_past_the_end_the_best_rate_is_at_and_stops_with_an_error(monkeypatch):
    def sweep_peaking_at(best):
        def sweep(base, out_dir, *, grid, **options):
            scores = [1 / (1 + abs(math.log2(lr / best))) for lr in grid]
            return pd.DataFrame({"lr": list(grid), "tune miou": scores})

        return sweep

    monkeypatch.setattr(ablation, "sweep_lr", sweep_peaking_at(4.8e-2))
    sweep = ablation.tune_lr(None, "out")
    assert sorted(sweep["lr"]) == pytest.approx([3e-3, 6e-3, 1.2e-2, 2.4e-2, 4.8e-2, 9.6e-2])
    assert ablation.chosen_lr(sweep) == pytest.approx(4.8e-2) and ablation.inside_grid(sweep)
    monkeypatch.setattr(ablation, "sweep_lr", sweep_peaking_at(1e-4))  # below the grid
    with pytest.raises(RuntimeError, match="still at an end"):
        ablation.tune_lr(None, "out", extensions=2)


def test_command_line(synthetic_root, tmp_path, capsys):
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "cli"
    argv = ["ablation", "--out", str(out), "--data", str(synthetic_root), "--seeds", "3"]
    assert main([*argv, "--quiet", "--prune", *options]) == 0
    said = capsys.readouterr().out
    assert "undilated" in said and "small rates" in said
    assert len(list(out.glob("*/seed-3/metrics.json"))) == 12
