"""The going-deeper experiment: its settings, its table (block7 OS16 under both experiments),
its runs and its statistics, on a tiny budget."""

import pandas as pd
import pytest

from deeplab_kit.config import RunConfig
from deeplab_kit.course import going_deeper
from deeplab_kit.course.experiments import run_folder

TINY = dict(
    backbone_width=4,
    image_size=40,
    batch_size=2,
    eval_batch_size=2,
    epochs=1,
    amp="off",
    channels_last=False,
    device="cpu",
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_nine_settings_and_the_geometry_of_the_stored_recipe():
    assert list(going_deeper.SETTINGS) == [
        "block7 OS8", "block7 OS16", "block7 OS32", "block7 OS64", "block7 OS128",
        "block7 OS256", "block4 OS16", "block5 OS16", "block6 OS16",
    ]  # fmt: skip
    geometry = going_deeper.geometry_table(RunConfig.from_recipe("going-deeper"))
    sides = [geometry.loc[f"block7 OS{s}", "feature map"] for s in going_deeper.OUTPUT_STRIDES]
    assert sides == ["17x17", "9x9", "5x5", "3x3", "2x2", "1x1"]  # distinct, as the issue asks
    assert len(going_deeper.pairs()) == 15 + 6


@pytest.fixture(scope="module")
def grid(synthetic_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("going-deeper")
    base = RunConfig.from_recipe("going-deeper", data_root=str(synthetic_root), **TINY)
    table = going_deeper.run_going_deeper(base, out, seeds=(0, 1), keep_checkpoints=False)
    return out, table, base


def test_block7_at_16_is_trained_once_and_appears_in_both_experiments(grid):
    out, table, _ = grid
    assert len(table) == (6 + 4) * 2  # both experiments' rows, two seeds
    shared = table[table["setting"] == "block7 OS16"]
    assert sorted(shared["experiment"]) == ["cascaded blocks"] * 2 + ["output stride"] * 2
    assert shared.groupby("seed")["miou"].nunique().eq(1).all()  # the same run's scores
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"block{b}-os{s}" for b, s in [(7, 8), (7, 16), (7, 32), (7, 64), (7, 128), (7, 256),
                                       (4, 16), (5, 16), (6, 16)]
    )  # fmt: skip
    assert (run_folder(out, "block7 OS256", 0) / "predictions.png").is_file()
    assert not (run_folder(out, "block7 OS256", 1) / "predictions.png").exists()
    assert set(table["feature map"]) == {"5x5", "3x3", "2x2", "1x1"}


def test_the_statistics_cover_the_table_s_pairs(grid):
    _, table, _ = grid
    tests = going_deeper.tests(table)
    assert len(tests) == 21 and set(tests["seeds"]) == {2}
    assert ((tests["p (Holm)"] >= tests["p"]) | tests["p"].isna()).all()


def test_a_stopped_make_reuses_the_finished_runs(grid, monkeypatch):
    out, table, _ = grid
    from deeplab_kit.course import experiments

    monkeypatch.setattr(experiments, "train", lambda *a, **k: pytest.fail("retrained"))
    base = RunConfig.from_recipe("going-deeper", data_root=table.attrs.get("root", ""), **TINY)
    again = going_deeper.run_going_deeper(
        base.replace(data_root=str(out.parent)), out, seeds=(0, 1), keep_checkpoints=False
    )
    pd.testing.assert_series_equal(again["miou"], table["miou"])
