"""The going-deeper experiments (the paper's Tables 1 and 2): their settings, the map-size
oracle, the cascaded blocks' geometry, their runs and planned contrasts, on a tiny budget."""

import numpy as np
import pandas as pd
import pytest

from deeplab_kit.config import RunConfig
from deeplab_kit.course import going_deeper
from deeplab_kit.course.experiments import run_folder
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {**{k: v for k, v in TINY_RUN.items() if k != "backbone"}, "backbone_width": 4}


def test_the_two_designs_and_their_geometry():
    table1, table2 = going_deeper.OUTPUT_STRIDE, going_deeper.CASCADED
    assert list(table1.settings) == [f"block7 OS{s}" for s in going_deeper.OUTPUT_STRIDES]
    assert list(table2.settings) == [f"block{b} OS16" for b in going_deeper.BLOCKS]
    assert len(table2.seeds) >= 5 and set(table2.twice) <= set(table2.settings)
    base = RunConfig.from_recipe("going-deeper")
    sides = going_deeper.geometry(table1, base)["feature map"].tolist()
    assert sides == ["17x17", "9x9", "5x5", "3x3", "2x2", "1x1"]  # distinct, as asked
    deep = going_deeper.geometry(table2, base.replace(image_size=table2.data["size"]))
    assert set(deep["feature map"]) == {"17x17"}
    block7 = deep.loc["block7 OS16"]
    assert [block7[f"layer{k} rate"] for k in (5, 6, 7)] == [4, 8, 16]
    assert block7["layer5 taps on the map"] == 0.71 and block7["layer7 taps on the map"] == 0.14


def test_the_block_majority_oracle_on_a_hand_made_mask():
    mask = np.zeros((8, 8), dtype=np.uint8)
    mask[:, 5:] = 3  # 3 of 8 columns
    mask[0, 0] = 255
    coarse = going_deeper.cell_majority(mask, 2)  # 2 x 2 cells of 4 x 4 pixels
    assert (coarse[:, :4] == 0).all() and (coarse[:, 4:] == 3).all()  # 3 of the 4 columns
    assert (going_deeper.cell_majority(mask, 8) == np.where(mask == 255, 0, mask)).all()
    assert going_deeper.map_oracle([mask], 8, num_classes=4) == 1.0  # a cell per pixel
    two = going_deeper.map_oracle([mask], 2, num_classes=4)
    assert two == pytest.approx((31 / 39 + 24 / 32) / 2)  # IoU of background and of class 3
    assert going_deeper.map_oracle([mask], 1, num_classes=4) == pytest.approx((39 / 63) / 2)


@pytest.fixture(scope="module")
def grid(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("going-deeper")
    base = RunConfig.from_recipe("going-deeper", data_root=str(synthetic_root), **TINY)
    rows = going_deeper.run(
        going_deeper.OUTPUT_STRIDE, base, out, seeds=(0, 1), keep_checkpoints=False
    )
    return out, pd.DataFrame(rows), base


def test_one_row_per_setting_and_seed_with_its_geometry(grid):
    out, table, _ = grid
    assert len(table) == 6 * 2
    assert table["output_stride"].tolist() == [
        s for s in going_deeper.OUTPUT_STRIDES for _ in (0, 1)
    ]
    assert (table["blocks"] == 7).all()
    assert (run_folder(out, "block7 OS256", 0) / "predictions.png").is_file()
    assert not (run_folder(out, "block7 OS256", 1) / "predictions.png").exists()
    assert set(table["feature map"]) == {"4x4", "2x2", "1x1"}


def test_the_planned_pairs_are_the_consecutive_strides(grid):
    _, table, _ = grid
    tests = going_deeper.tests(table, going_deeper.OUTPUT_STRIDE.planned)
    assert len(tests) == 5 and set(tests["seeds"]) == {2}
    assert ((tests["p (Holm)"] >= tests["p"]) | tests["p"].isna()).all()


def test_a_stopped_make_reuses_the_finished_runs(grid, monkeypatch):
    out, table, base = grid
    from deeplab_kit.course import experiments

    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("retrained"))
    again = going_deeper.run(
        going_deeper.OUTPUT_STRIDE, base, out, seeds=(0, 1), keep_checkpoints=False
    )
    pd.testing.assert_series_equal(pd.DataFrame(again)["miou"], table["miou"])


def test_the_convergence_check_trains_beside_the_grid_and_is_read_back(
    synthetic_root, tmp_path, monkeypatch
):
    from deeplab_kit.course import experiments

    base = RunConfig.from_recipe("going-deeper", data_root=str(synthetic_root), **TINY)
    design, checked = going_deeper.OUTPUT_STRIDE, going_deeper.label(7, 256)
    labels = [going_deeper.label(7, 128), checked]
    rows = going_deeper.run(
        design, base, tmp_path, seeds=(0, 1), labels=labels, twice=[checked],
        keep_checkpoints=False,
    )  # fmt: skip
    assert [(row["setting"], row["seed"]) for row in rows] == [
        (label, seed) for label in labels for seed in (0, 1)
    ]
    longer = tmp_path / experiments.TWICE / "block7-os256" / "seed-0"
    assert len(pd.read_csv(longer / "history.csv")) == 2 * base.epochs
    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("retrained"))
    check = experiments.twice_the_epochs(
        {checked: design.configs(base)[checked]}, rows, tmp_path, keep_checkpoints=False
    )
    assert check["setting"].tolist() == [checked] and check["epochs"].tolist() == [base.epochs]
    assert check["miou"].tolist() == [rows[2]["miou"]]  # block7 OS256, seed 0


def test_the_longest_runs_go_first():
    from deeplab_kit.course import experiments

    settings = going_deeper.OUTPUT_STRIDE.configs(RunConfig.from_recipe("going-deeper"))
    jobs = [(label, config, None) for label, config in settings.items()]
    jobs.append(("OS32 twice", settings["block7 OS32"].replace(epochs=32), None))
    order = [job[0] for job in experiments.longest_first(jobs)]
    assert order[0] == "block7 OS8" and order[-1] == "block7 OS256"
    assert order.index("OS32 twice") < order.index("block7 OS32")


def _two_strides(miou, oracle):
    """A stored output-stride table and geometry in miniature: OS8 (17 x 17, two seeds) and OS16
    (9 x 9, one seed), their mIoU (0..1) and each map's oracle (%)."""
    table = pd.DataFrame({"setting": ["block7 OS8", "block7 OS8", "block7 OS16"], "miou": miou})
    geometry = [
        {"setting": "block7 OS8", "feature map": "17x17", "oracle mIoU (%)": oracle[0]},
        {"setting": "block7 OS16", "feature map": "9x9", "oracle mIoU (%)": oracle[1]},
    ]
    return table, geometry


def test_the_output_stride_curve_is_keyed_by_map_side_for_the_map_size_figure():
    table, geometry = _two_strides([0.8, 0.78, 0.67], (86.8, 71.2))
    measured, paper, oracle = going_deeper.by_map_side(table, geometry, {8: 75.18, 256: 20.29})
    assert measured == {17: [80.0, 78.0], 9: [67.0]} and oracle == {17: 86.8, 9: 71.2}
    assert paper == {65: 75.18, 3: 20.29}  # the paper's 513-px crops: 65 cells at 8, 3 at 256


def test_map_size_shares_put_each_curve_on_its_own_best():
    table, geometry = _two_strides([0.8, 0.7, 0.6], (80.0, 60.0))
    shares = going_deeper.map_size_shares(table, geometry, {8: 50.0, 32: 40.0})
    assert list(shares.index) == [9, 17, 65]  # the paper's 513-px crops: 65 cells at 8, 17 at 32
    measured, paper, oracle = (shares[c] for c in shares.columns)
    assert measured[17] == pytest.approx(100) and measured[9] == pytest.approx(80)  # 60 of 75
    assert paper[65] == 100 and paper[17] == 80 and np.isnan(paper[9])
    assert oracle[9] == 75 and np.isnan(oracle[65])
