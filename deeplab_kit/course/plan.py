"""What each notebook costs, per profile, on a 2-core CPU and on Colab's free T4: the plan a class
reads before it spends a Colab day.

    plan()            # one row per notebook and profile: what it runs, CPU time, T4 time
    plan("04")        # one notebook's rows (each notebook shows its own in its first cells)

Every time says how it is known. "measured": the quick profile's from `notebook-times` (each
notebook executed in the quick profile by `python -m deeplab_kit results make notebook-times`),
the cpu profile's from the stored results' own provenance (the make that produced what the cpu
profile reproduces). "estimated": a T4's, from the training steps' floating-point operations
(counted by torch's FlopCounterMode on the notebook's own configuration) at `T4_FLOPS`, an
assumed sustained rate; no T4 was measured by this project.
"""

from __future__ import annotations

import pandas as pd

from deeplab_kit.config import RunConfig
from deeplab_kit.course import notebook_profiles, results
from deeplab_kit.course.experiments import step_flops

# Assumed: a sixteenth of the T4's 65 TFLOPS fp16 tensor-core peak, what a segmentation net at a
# batch of 4 with batch norm may sustain under autocast; and Colab's 2 vCPUs decoding and
# resizing VOC's JPEGs at 300 images a second (benchmarks/bench_data.py measured 310 on a 2-core
# Xeon). An estimate's error is these assumptions'.
T4_FLOPS = 4e12
DECODE_PER_SECOND = 300
VOC_TRAIN, VOC_VAL = 1464, 1449
# Assumed for the download: VOC's 2 GB at 10 MB/s, then about two minutes to extract and count.
VOC_MB, DOWNLOAD_MB_PER_SECOND, EXTRACT_AND_COUNT_MINUTES = 2000, 10, 2

COLUMNS = ("notebook", "profile", "runs", "2-core CPU", "free T4")  # of the plan's frame
# What each notebook runs per profile: (notebook, profile, what, how its time is known). The
# `full` profile is sized for a student (one seed, the few settings that carry each lesson:
# `notebook_profiles.STUDENT_SETTINGS`); `complete` runs an experiment whole, as the stored
# result's design has it.
ROWS = (
    ("01", "quick", "a small generated set: counts, figures, the cache", "quick"),
    ("01", "full", "VOC 2012 downloaded (2 GB) and counted", "download"),
    ("02", "quick", "geometry, figures and the ASPP source: nothing to train", "quick"),
    ("02", "full", "the same: nothing to train", "quick"),
    ("03", "quick", "every setting of both experiments, one epoch on a few generated images", "quick"),
    ("03", "cpu", "both experiments made at their stored scale (going-deeper, cascaded-blocks)", "cpu:going-deeper,cascaded-blocks"),
    ("03", "full", "VOC, ImageNet ResNet-50 on 321 px crops, 20 epochs, one seed: block7 at OS 8, 16, 32; blocks 4 and 7 at OS 16", "t4:going-deeper"),
    ("03", "complete", "VOC, every setting of both experiments with the stored designs' seeds", "t4:going-deeper-complete"),
    ("04", "quick", "every backbone and ASPP setting, one epoch on a few generated images", "quick"),
    ("04", "cpu", "the ablation made at its stored scale", "cpu:ablation"),
    ("04", "full", "VOC, the report's recipe 20 epochs, one seed: the paper's rates on both backbones, rate 1 on the undilated", "t4:ablation"),
    ("04", "complete", "VOC, every setting of both backbones with the stored design's seeds", "t4:ablation-complete"),
    ("05", "quick", "four tiny epochs in two sessions", "quick"),
    ("05", "cpu", "the stored demo run, twice (in sessions, then in one)", "cpu:demo,demo"),
    ("05", "full", "VOC, the report's recipe: one 20-epoch session", "t4:report-session"),
    ("05", "complete", "VOC, the report's recipe: all 200 epochs (ten sessions)", "t4:report"),
    ("06", "quick", "the stored demo's tables; notebook 05's run scored", "quick"),
    ("06", "full", "the trained report run scored, protocols, the paper's inference table", "t4:inference"),
    ("07", "quick", "a generated RGB-mask set: trained, evaluated, predicted, exported", "quick"),
    ("07", "full", "the same steps on your own data: the report's recipe, one 20-epoch session on a set the size of VOC train", "t4:report-session"),
)  # fmt: skip


def plan(notebook: str | None = None) -> pd.DataFrame:
    """One row per notebook and profile: what it runs, the time on a 2-core CPU and on a free
    T4, each labelled measured or estimated."""
    rows = [
        dict(zip(COLUMNS, (name, profile, what, *_times(name, how)), strict=True))
        for name, profile, what, how in ROWS
        if notebook in (None, name)
    ]
    return pd.DataFrame(rows).set_index(["notebook", "profile"])


def _times(notebook: str, how: str) -> tuple[str, str]:
    if how == "quick":
        seconds = _notebook_seconds().get(notebook)
        cpu = f"{_minutes(seconds)} (measured)" if seconds else "not measured"
        return cpu, "about the CPU's: the quick profile runs on the CPU (estimated)"
    if how.startswith("cpu:"):
        names, gpu = how[4:].split(","), "runs on the CPU: as the CPU column"
        records = {
            name: results.read_stored_json(f"{name}/{results.PROVENANCE}")
            for name in dict.fromkeys(names)  # each read once
        }
        seconds = sum(float(records[name]["seconds"]) for name in names)  # a repeat counts again
        return f"{_minutes(seconds)} (measured, stored)", gpu
    if how.startswith("t4:"):
        return "needs a GPU", f"{_minutes(60 * t4_minutes(how[3:]))} (estimated)"
    if how == "download":
        minutes = VOC_MB / DOWNLOAD_MB_PER_SECOND / 60 + EXTRACT_AND_COUNT_MINUTES
        return f"{_minutes(60 * minutes)} (estimated)", f"{_minutes(60 * minutes)} (estimated)"
    raise ValueError(f"no time for {how!r}")


def _minutes(seconds: float) -> str:
    minutes = seconds / 60
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _notebook_seconds() -> dict[str, float]:
    try:
        record = results.read_stored_json("notebook-times/notebook-times.json")
    except FileNotFoundError:
        return {}
    return {row["notebook"][:2]: row["seconds"] for row in record["rows"]}


def _run_minutes(
    config: RunConfig, size: int, train: int, val: int, epochs: int, val_size: int | None = None
) -> float:
    flops = step_flops(config, size)
    val_flops = step_flops(config, val_size) if val_size else flops
    compute = (flops * train + val_flops / 3 * val) / T4_FLOPS  # a forward pass: about a third
    return epochs * (compute + (train + val) / DECODE_PER_SECOND) / 60


# VOC's images are about 500 x 375: a whole-image evaluation costs about a 433-pixel square's.
VOC_WHOLE_IMAGE = 433


def _experiment_runs(name: str, complete: bool) -> list[tuple[RunConfig, int]]:
    """(configuration, seeds) of each run of experiment `name` on VOC: the full profile's
    settings with one seed, or (complete) every setting with the design's seeds."""
    profile = notebook_profiles.Profile.from_env({"DEEPLAB_KIT_PROFILE": "full"}, mount=False)
    configs = results.experiment_settings(name, profile.experiment_config(name))
    if not complete:
        return [(configs[label], 1) for label in notebook_profiles.STUDENT_SETTINGS[name]]
    return [(config, len(results.design_seeds(name, label))) for label, config in configs.items()]


def _experiment_minutes(names: tuple[str, ...], complete: bool) -> float:
    total = 0.0
    for name in names:
        val_size = None if name == "ablation" else VOC_WHOLE_IMAGE
        for config, seeds in _experiment_runs(name, complete):
            size, epochs = config.image_size, config.epochs
            total += seeds * _run_minutes(config, size, VOC_TRAIN, VOC_VAL, epochs, val_size)
    return total


def t4_minutes(what: str) -> float:
    """The estimated T4 minutes of one plan entry (see `ROWS`)."""
    report = RunConfig.from_recipe("report")
    session = report.session_epochs or report.epochs
    deeper = ("going-deeper", "cascaded-blocks")
    estimates = {
        "report": lambda: _run_minutes(report, 256, VOC_TRAIN, VOC_VAL, report.epochs),
        "report-session": lambda: _run_minutes(report, 256, VOC_TRAIN, VOC_VAL, session),
        "ablation": lambda: _experiment_minutes(("ablation",), complete=False),
        "ablation-complete": lambda: _experiment_minutes(("ablation",), complete=True),
        "going-deeper": lambda: _experiment_minutes(deeper, complete=False),
        "going-deeper-complete": lambda: _experiment_minutes(deeper, complete=True),
        # the paper's table (four settings) and the two protocols, on whole images
        "inference": lambda: 6 * _run_minutes(report, 256, 0, VOC_VAL, 1, VOC_WHOLE_IMAGE),
    }
    if what not in estimates:
        raise ValueError(f"no estimate for {what!r}")
    return estimates[what]()


def dumps(frame: pd.DataFrame) -> str:
    """The plan as README's Markdown table."""
    lines = [f"| {' | '.join(COLUMNS)} |", "|" + "---|" * len(COLUMNS)]
    lines += [f"| {' | '.join(map(str, (*index, *row)))} |" for index, row in frame.iterrows()]
    return "\n".join(lines)
