"""What the experiments share: the statistics over seeds (paired tests, Holm's correction, the
smallest resolvable difference) and the convergence check."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from deeplab_kit.course import experiments


def test_holm_on_known_p_values():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    adjusted = experiments.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(experiments.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    both = experiments.holm([np.nan, 0.02, 0.01])
    assert np.isnan(both[0]) and np.allclose(both[1:], [0.02, 0.02])  # NaN is not counted


def _table(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for label, values in scores.items():
        rows += [{"setting": label, "seed": seed, "miou": v} for seed, v in enumerate(values)]
    return pd.DataFrame(rows)


def test_paired_tests_seed_by_seed_with_the_correction():
    table = _table(
        {
            "ref": [0.40, 0.30, 0.35, 0.45, 0.38],
            "better": [0.50, 0.41, 0.44, 0.55, 0.49],
            "noisy": [0.50, 0.20, 0.36, 0.40, 0.30],
            "same": [0.40, 0.30, 0.35, 0.45, 0.38],
        }
    )
    pairs = [("better", "ref"), ("noisy", "ref"), ("same", "ref")]
    tests = experiments.paired_tests(table, pairs)
    diff = np.array([0.10, 0.11, 0.09, 0.10, 0.11])
    row = tests.loc[("better", "ref")]
    assert row["mean difference"] == pytest.approx(diff.mean())
    paired = stats.ttest_rel(table.miou[5:10].values, table.miou[:5].values)
    assert row["t"] == pytest.approx(paired.statistic)
    assert row["p (Holm)"] == pytest.approx(min(1.0, 2 * row["p"]))  # the smaller p of two
    assert row["verdict"] == "resolved" and row["a higher on"] == 5
    noisy = tests.loc[("noisy", "ref")]
    assert noisy["verdict"] == "not resolved"
    quantile = stats.t.ppf(1 - 0.05 / (2 * 3), df=4)
    assert noisy["smallest resolvable"] == pytest.approx(quantile * noisy["sd"] / np.sqrt(5))
    assert tests.loc[("same", "ref"), "verdict"] == "same"
    said = experiments.describe_tests(tests).splitlines()
    assert said[0].startswith("better vs ref: +10.2 points of mIoU (higher on 5 of 5 seeds")
    assert said[0].endswith(": resolved.")
    assert "not resolved; these seeds resolve differences of" in said[1]
    assert said[2] == "same vs ref: the same network; no difference to resolve."


def test_the_convergence_check_is_the_last_two_epochs_gain():
    history = pd.DataFrame({"miou": [0.1, 0.3, 0.4, 0.45, 0.46]})
    assert experiments.last_gain(history) == pytest.approx(0.06)
    assert np.isnan(experiments.last_gain(history.iloc[:2]))


def test_summaries_keep_the_table_s_order():
    summary = experiments.summarize(_table({"b": [0.2, 0.4], "a": [0.1, 0.3]}))
    assert list(summary.index) == ["b", "a"]
    assert summary.loc["b", "sd"] == pytest.approx(np.std([0.2, 0.4], ddof=1))


def _fail_on_the_short_run(label, config, run, outcome):
    if label == "short":
        raise RuntimeError(f"{run}: measuring failed")
    return {}


def test_a_failed_run_stops_the_workers_at_once_and_the_rest_resume_later(synthetic_root, tmp_path):
    """Two workers: a long run starts first (the longest go first) beside a short one whose
    measurement fails. The error surfaces without waiting for the long run, which is stopped
    mid-way, its checkpoints left to resume from (a Ctrl-C ends a make the same way)."""
    from tests.conftest import tiny_config

    settings = {
        "long": tiny_config(data_root=str(synthetic_root), epochs=400),
        "short": tiny_config(data_root=str(synthetic_root), epochs=5),
    }
    with pytest.raises(RuntimeError, match="measuring failed"):
        experiments.run_grid(
            settings, tmp_path / "grid", seeds=(0,), workers=2, measure=_fail_on_the_short_run
        )
    long = experiments.run_folder(tmp_path / "grid", "long", 0)
    assert 0 < len(pd.read_csv(long / "history.csv")) < 400
    assert list((long / "checkpoints").glob("*.pt"))
