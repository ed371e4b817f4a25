"""The atrous-rate ablation: its geometry, its twins, its statistics, on tiny budgets."""

import json

import pandas as pd
import pytest
import torch

from deeplab_kit.cli import main
from deeplab_kit.course import ablation
from deeplab_kit.course.ablation import (
    SETTINGS,
    equivalent_settings,
    paired_differences,
    read_ablation,
    run_ablation,
    summarize,
)
from deeplab_kit.training.config import RunConfig
from deeplab_kit.training.loop import build_run_model
from deeplab_kit.training.schedule import make_optimizer
from deeplab_kit.training.step import TrainStep

# 4 generated 32-px images in batches of 2 (2 steps); at output stride 8 the map is 4 x 4, where
# every rate from 4 up reads only the centre: "report" and "OS8 rates" are one network there.
TINY = dict(
    backbone_width=8,
    aspp_channels=8,
    image_size=32,
    batch_size=2,
    eval_batch_size=2,
    epochs=1,
    amp="off",
    device="cpu",
)
FEW = {"1x1 only": (), "fitted": (1, 2, 3), "report": (8, 12, 16), "OS8 rates": (12, 24, 36)}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(synthetic_root):
    return synthetic_root


@pytest.fixture(scope="module")
def base(data):
    return RunConfig.from_recipe("ablation", data_root=str(data), **TINY)


@pytest.fixture(scope="module")
def two_seeds(base, tmp_path_factory):
    """FEW run with seeds 0 and 1, checkpoints pruned (shared by the tests that read it)."""
    out = tmp_path_factory.mktemp("ablation")
    table = run_ablation(
        FEW,
        base,
        out,
        seeds=(0, 1),
        erf_images=2,
        keep_checkpoints=False,
        provenance={"command": "test"},
    )
    return out, table


# --- geometry --------------------------------------------------------------------------------


def test_the_stored_geometry_is_the_reports_16x16_map():
    config = RunConfig.from_recipe("ablation")
    geometry = ablation.rate_geometry(config.image_size, config.output_stride, (8, 12, 16))
    assert geometry["feature map"] == "16x16"  # the report's: 256 px at output stride 16
    assert geometry["valid per branch"] == "44% / 25% / 11%"  # rate 16: the centre tap alone
    assert not config.decoder  # ASPP is the only path to the scores
    # On 16 x 16 only the report's variant and the OS8 rates coincide: 16, 24 and 36 read the
    # centre alone, and both keep rate 12 in their first branch.
    assert equivalent_settings(SETTINGS, config.image_size, config.output_stride) == {
        "OS8 rates": "report variant"
    }


def _outputs_after_steps(config, rates, images, targets, steps=2):
    """The scores of the ablation model with `rates` after a few training steps on one batch."""
    config = config.replace(atrous_rates=rates)
    model = build_run_model(config, pretrained=False)
    step = TrainStep(
        model, make_optimizer(model, config), device="cpu", amp="off", channels_last=False
    )
    for _ in range(steps):
        step(images, targets)
    model.eval()
    with torch.no_grad():
        return model(images)["out"]


def test_settings_train_to_the_same_network_exactly_when_the_geometry_says_so():
    """At the stored geometry (128 px, output stride 8) on a narrow backbone: after a few steps
    on one batch, two settings give the same scores if and only if they are declared twins.
    (The same up to rounding: convolutions at different dilations sum in different orders.)"""
    config = RunConfig.from_recipe("ablation", backbone_width=8, aspp_channels=8, amp="off")
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 128, 128, generator=generator)
    targets = torch.randint(0, 21, (2, 128, 128), generator=generator)
    outputs = {
        label: _outputs_after_steps(config, rates, images, targets)
        for label, rates in SETTINGS.items()
    }
    twins = equivalent_settings(SETTINGS, 128, 8)
    labels = list(SETTINGS)
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            gap = (outputs[a] - outputs[b]).abs().max().item()
            if twins.get(b) == a or twins.get(a) == b:
                assert gap < 1e-4, (a, b, gap)
            else:
                assert gap > 1e-2, (a, b, gap)


# --- running it ------------------------------------------------------------------------------


def test_one_row_per_setting_and_seed_with_the_models_real_rates(two_seeds):
    out, table = two_seeds
    assert list(zip(table["setting"], table["seed"], strict=True)) == [
        (label, seed) for label in FEW for seed in (0, 1)
    ]
    assert table["model rates"].tolist() == [rates for rates in FEW.values() for _ in (0, 1)]
    assert (table["feature map"] == "4x4").all()
    assert table["epochs"].eq(1).all() and table["finished"].all()
    assert table["miou"].between(0, 1).all()
    assert (table["erf r50 (px)"] <= table["erf r90 (px)"]).all()


def test_a_twin_is_not_trained_again_and_carries_its_twins_scores(two_seeds):
    out, table = two_seeds
    twin = table[table["setting"] == "OS8 rates"].reset_index(drop=True)
    report = table[table["setting"] == "report"].reset_index(drop=True)
    assert twin["same network as"].eq("report").all()
    assert twin["miou"].tolist() == report["miou"].tolist()
    assert not (out / "os8-rates").exists()
    assert table.loc[table["setting"] != "OS8 rates", "same network as"].isna().all()


def test_results_are_written_and_read_back(two_seeds):
    out, table = two_seeds
    stored, produced = read_ablation(out)
    pd.testing.assert_frame_equal(stored, table, check_dtype=False)
    assert produced["command"] == "test" and produced["seeds"] == [0, 1]
    assert produced["config"]["atrous_rates"] == [8, 12, 16]
    for label in ("1x1 only", "fitted", "report"):
        for seed in (0, 1):
            run = ablation.run_folder(out, label, seed)
            for name in ("history.csv", "metrics.json", "config.json", "erf.npy"):
                assert (run / name).is_file(), run / name
            assert not (run / "checkpoints").exists()
            assert json.loads((run / "config.json").read_text())["seed"] == seed


def test_finished_runs_are_not_trained_again(two_seeds, base, monkeypatch):
    out, table = two_seeds

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("deeplab_kit.training.loop.train", no_training)
    again = run_ablation(FEW, base, out, seeds=(0, 1), keep_checkpoints=False)
    assert again["miou"].tolist() == table["miou"].tolist()
    assert again["erf r90 (px)"].tolist() == table["erf r90 (px)"].tolist()


def test_a_pruned_run_is_not_reused_for_another_configuration(two_seeds, base):
    from deeplab_kit.training.checkpoint import CheckpointError

    out, table = two_seeds
    with pytest.raises(CheckpointError, match="lr: checkpoint 0.006, requested 0.001"):
        run_ablation({"report": FEW["report"]}, base.replace(lr=1e-3), out)


def test_bad_settings_are_refused(base, tmp_path):
    with pytest.raises(ValueError, match="no settings"):
        run_ablation({}, base, tmp_path)
    with pytest.raises(ValueError, match="distinct folder names"):
        run_ablation({"a b": (1, 1, 1), "a-b": (2, 2, 2)}, base, tmp_path)
    with pytest.raises(ValueError, match="seeds must be distinct"):
        run_ablation(FEW, base, tmp_path, seeds=(0, 0))
    with pytest.raises(ValueError, match="not an ablation.json"):
        (tmp_path / "ablation.json").write_text(json.dumps({"rows": 3}))
        read_ablation(tmp_path)


# --- statistics over seeds -------------------------------------------------------------------


def _table(scores: dict) -> pd.DataFrame:
    rows = [
        {
            "setting": label,
            "rates": (1,),
            "seed": seed,
            "feature map": "16x16",
            "valid weights": 1.0,
            "same network as": None,
            "miou": value,
        }
        for label, values in scores.items()
        for seed, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_summary_and_paired_differences_over_seeds():
    table = _table(
        {
            "report": [0.40, 0.30, 0.35],
            "better": [0.50, 0.41, 0.44],
            "noisy": [0.50, 0.20, 0.36],
            "same": [0.40, 0.30, 0.35],
        }
    )
    summary = summarize(table)
    assert summary.loc["report", "mean"] == pytest.approx(0.35)
    assert summary.loc["report", "sd"] == pytest.approx(0.05)
    assert (summary.loc["noisy", "min"], summary.loc["noisy", "max"]) == (0.20, 0.50)
    bars = ablation.percent(summary)  # what the bar chart takes: "label rates" -> %
    assert bars["report (1,)"] == pytest.approx(35.0)
    assert ablation.percent(summary, "sd")["report (1,)"] == pytest.approx(5.0)
    assert ablation.seed_points(table)["better (1,)"] == pytest.approx([50.0, 41.0, 44.0])
    diff = paired_differences(table, "report")
    assert "report" not in diff.index
    # better - report: 0.10, 0.11, 0.09 -> mean 0.10, sd 0.01, t = 0.10 / (0.01 / sqrt 3)
    assert diff.loc["better", "mean difference"] == pytest.approx(0.10)
    assert diff.loc["better", "sd"] == pytest.approx(0.01)
    assert diff.loc["better", "t"] == pytest.approx(0.10 / (0.01 / 3**0.5))
    assert diff.loc["better", "verdict"] == "resolved" and diff.loc["better", "higher on"] == 3
    assert diff.loc["noisy", "higher on"] == 2
    # noisy - report: 0.10, -0.10, 0.01: the mean is positive, the spread far larger
    assert diff.loc["noisy", "verdict"] == "not resolved"
    assert diff.loc["same", "verdict"] == "same" and diff.loc["same", "mean difference"] == 0
    said = ablation.describe_differences(diff, "report").splitlines()
    assert said[0].startswith("better: +10.0 points of mIoU against report (higher on 3 of 3")
    assert said[0].endswith(": resolved.") and "not resolved beyond seed noise" in said[1]
    assert said[2] == "same: the same network as report; no difference to resolve."
    with pytest.raises(ValueError, match="no setting 'nope'"):
        paired_differences(table, "nope")


# --- the command line ------------------------------------------------------------------------


def test_command_line(data, tmp_path, capsys):
    options = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    out = tmp_path / "cli"
    code = main(
        [
            "ablation",
            "--out",
            str(out),
            "--data",
            str(data),
            "--only",
            "report",
            "--add",
            "fitted=1,1,2",
            "--seeds",
            "0,3",
            "--quiet",
            *options,
        ]
    )
    assert code == 0
    table, produced = read_ablation(out)
    assert table["setting"].tolist() == ["report", "report", "fitted", "fitted"]
    assert table["seed"].tolist() == [0, 3, 0, 3]
    assert table["model rates"].tolist() == [(8, 12, 16)] * 2 + [(1, 1, 2)] * 2
    assert produced["command"].startswith("python -m deeplab_kit")
    assert produced["machine"]["cpu"] and produced["torch"] == torch.__version__
    assert "report" in capsys.readouterr().out
    assert main(["ablation", "--out", str(out), "--data", str(data), "--only", "nope"]) == 2
    assert "unknown setting(s) ['nope']" in capsys.readouterr().err
