"""The atrous-rate ablation: one model trained per set of ASPP rates and per seed, all else equal.

    table = run_ablation(SETTINGS, RunConfig.from_recipe("ablation", data_root=...), "runs/abl",
                         seeds=(0, 1, 2))
    summarize(table)                      # mean and spread of val mIoU per setting
    paired_differences(table, "report")   # each setting minus the report's, seed by seed
    python -m deeplab_kit ablation --out runs/ablation [--recipe ablation] [--seeds 0,1,2]

The `ablation` recipe puts ASPP on the report's own 16 x 16 feature map (128-pixel generated
images at output stride 8, as 256-pixel images at output stride 16 give), so the report's rates
are tested at their real scale. ASPP is the model's only path to its scores (no decoder).

Each (setting, seed) trains in its own run folder, out_dir/<setting>/seed-<k>/, resumable like
any run. Before training, the geometry is checked: a rate at least as large as the map reads
only the map's centre, so two settings whose rates differ only there build the same function
(`atrous.effective_rates`). Such a setting is not trained again: its row says which setting it
equals and carries that setting's scores. The table has one row per (setting, seed): the rates
asked for and the rates the model really has (read back from its modules), the feature map,
the share of the 3x3 weights that read it (`atrous.valid_share`), the validation scores and,
with `erf_images`, the radii of the effective receptive field (`deeplab_kit.course.erf`).
`out_dir/ablation.csv` holds the table; `out_dir/ablation.json` the table with its provenance.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from deeplab_kit.course.atrous import (
    effective_rates,
    feature_size,
    receptive_field_from_config,
    valid_share,
)
from deeplab_kit.course.erf import erf_radius, gradient_map
from deeplab_kit.data.transforms import model_input, transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.files import atomic_write, plain, write_json, write_text
from deeplab_kit.model import describe
from deeplab_kit.training.checkpoint import check_config, find_checkpoints
from deeplab_kit.training.loop import build_run_model, train
from deeplab_kit.training.run_files import read_metrics

# The settings of notebook 02: label -> ASPP rates.
SETTINGS: dict[str, tuple[int, ...]] = {
    "1x1 only": (),  # the control: ASPP keeps its 1x1 branch and image pooling, no 3x3 branch
    "no atrous": (1, 1, 1),  # three plain 3x3 convolutions
    "fitted to 16x16": (3, 6, 9),  # the paper's rates for a 33 x 33 map, scaled to 16 x 16
    "paper": (6, 12, 18),  # DeepLabv3 at output stride 16 (made for 513 crops: a 33 x 33 map)
    "report": (8, 12, 16),  # the report's model
    "report variant": (12, 16, 24),  # the report's other try, which "did not yield" better
    "OS8 rates": (12, 24, 36),  # the paper's rates doubled for output stride 8 (torchvision's)
}
CONTROL = "1x1 only"
REFERENCE = "report"
SEEDS = (0, 1, 2)
# The generated dataset of the stored ablation (make_synthetic_voc's arguments).
ABLATION_DATA = dict(num_train=2000, num_val=200, size=128, seed=0)
ERF_IMAGES = 64  # validation images whose gradients make each effective receptive field
COLUMNS = (
    "setting",
    "rates",
    "seed",
    "model rates",
    "feature map",
    "valid weights",
    "valid per branch",
    "same network as",
    "miou",
    "pixel_accuracy",
    "erf r50 (px)",
    "erf r90 (px)",
    "epochs",
    "train seconds",
    "finished",
)


def setting_folder(label: str) -> str:
    """A folder name for a setting label: "report variant" -> "report-variant"."""
    slug = re.sub(r"[^\w.]+", "-", label.strip().lower()).strip("-")
    if not slug:
        raise ValueError(f"setting label {label!r} gives an empty folder name")
    return slug


def run_folder(out_dir: str | os.PathLike, label: str, seed: int) -> Path:
    return Path(out_dir) / setting_folder(label) / f"seed-{seed}"


def rate_geometry(image_size: int, output_stride: int, rates: Sequence[int]) -> dict:
    """The feature map the ASPP rates act on for a square input, and the share of each 3x3
    branch's weights that read it rather than its zero padding (mean over the branches too;
    1 when there is no 3x3 branch: the 1x1 branch reads only the map)."""
    size = feature_size(int(image_size), int(output_stride))
    shares = [valid_share(size, int(rate)) for rate in rates]
    return {
        "feature map": f"{size}x{size}",
        "valid weights": sum(shares) / len(shares) if shares else 1.0,
        "valid per branch": " / ".join(f"{share:.0%}" for share in shares) or "-",
    }


def equivalent_settings(
    settings: Mapping[str, Sequence[int]], image_size: int, output_stride: int
) -> dict[str, str]:
    """{label: the earlier label it is the same network as} for the settings whose rates differ
    from an earlier one's only where the taps read padding (see `atrous.effective_rates`)."""
    size = feature_size(int(image_size), int(output_stride))
    first: dict[tuple, str] = {}
    same = {}
    for label, rates in settings.items():
        key = effective_rates(size, rates)
        if key in first:
            same[label] = first[key]
        else:
            first[key] = label
    return same


def geometry_table(settings: Mapping[str, Sequence[int]], config) -> pd.DataFrame:
    """What the geometry says before any training: per setting, the feature map, the share of
    each branch's weights that read it, the theoretical receptive field of its widest branch
    (pixels, image pooling aside), and the earlier setting it is the same network as."""
    same = equivalent_settings(settings, config.image_size, config.output_stride)
    fields = theoretical_fields(settings, config)
    rows = [
        {
            "setting": label,
            "rates": tuple(rates),
            **rate_geometry(config.image_size, config.output_stride, rates),
            "theoretical field (px)": fields[label],
            "same network as": same.get(label),
        }
        for label, rates in settings.items()
    ]
    return _tidy(pd.DataFrame(rows)).set_index("setting")


def theoretical_fields(settings: Mapping[str, Sequence[int]], config) -> dict[str, int]:
    """{label: the theoretical receptive field (pixels across) of the widest 3x3 branch, or of
    the 1x1 branch when there is none}; image pooling, which sees everything, aside."""

    fields = {}
    for label, rates in settings.items():
        model = {**config.model_kwargs(), "atrous_rates": tuple(rates), "image_pooling": False}
        model.pop("pretrained_backbone")
        fields[label] = int(max(receptive_field_from_config(model).branches.values()))
    return fields


def run_ablation(
    settings: Mapping[str, Sequence[int]],
    base_config,
    out_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = (0,),
    train_set=None,
    val_set=None,
    erf_images: int = 0,
    progress: bool = False,
    keep_checkpoints: bool = True,
    provenance: dict | None = None,
) -> pd.DataFrame:
    """Train `base_config` once per setting and seed (its `atrous_rates` and `seed` replaced).

    Args:
        settings: label -> ASPP rates, e.g. `SETTINGS`.
        base_config: a `RunConfig`; only `atrous_rates` and `seed` change between runs.
        out_dir: one run folder per (setting, seed) under it, plus ablation.csv/.json.
        seeds: each seed changes the initial weights and the data order.
        train_set, val_set: datasets to use instead of `base_config.data_root`'s.
        erf_images: measure each trained model's effective receptive field on this many
            validation images (0: not at all); saved as erf.npy in its run folder.
        progress: progress bars and per-epoch lines of the training loop.
        keep_checkpoints: False deletes a run's checkpoints once it has finished (history.csv,
            metrics.json, config.json and erf.npy stay); a later call with the same
            configuration then reuses its row untrained (another configuration is an error).
        provenance: how the table was made (`deeplab_kit.course.provenance`), written at the top
            level of ablation.json.

    A run resumes where an earlier call stopped (as `train` does); the table's "finished"
    says whether all its epochs are done (False when a session limit ended it).
    """
    if not settings:
        raise ValueError("no settings to run")
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {list(seeds)}")
    folders = [setting_folder(label) for label in settings]
    if len(set(folders)) != len(folders):
        raise ValueError(f"setting labels must give distinct folder names, got {folders}")
    out_dir = Path(out_dir)
    same = equivalent_settings(settings, base_config.image_size, base_config.output_stride)
    rows: dict[tuple[str, int], dict] = {}
    for seed in seeds:
        for label, rates in settings.items():
            config = base_config.replace(atrous_rates=tuple(rates), seed=int(seed))
            if label in same:
                rows[label, seed] = _same_as(rows[same[label], seed], label, rates, same[label])
                continue
            run = run_folder(out_dir, label, seed)
            rows[label, seed] = _run_one(
                label, config, run, train_set, val_set, erf_images, progress, keep_checkpoints
            )
    ordered = [rows[label, seed] for label in settings for seed in seeds]
    table = _tidy(pd.DataFrame(ordered, columns=COLUMNS))
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "ablation.csv", table.to_csv(index=False))
    record = {
        **(provenance or {}),
        "config": base_config.to_dict(),
        "settings": {label: list(rates) for label, rates in settings.items()},
        "seeds": [int(s) for s in seeds],
        "rows": table.to_dict("records"),
    }
    write_json(out_dir / "ablation.json", plain(record))
    return table


def _same_as(row: dict, label: str, rates, twin: str) -> dict:
    """The row of a setting that builds the same network as `twin`: the twin's scores."""
    return {
        **row,
        "setting": label,
        "rates": tuple(int(r) for r in rates),
        "model rates": tuple(int(r) for r in rates),
        "same network as": twin,
    }


def _run_one(label, config, run, train_set, val_set, erf_images, progress, keep) -> dict:
    """Train (or reuse) one run folder and return its row."""

    pruned = _finished_without_checkpoints(run, config)
    if pruned:
        # The scores are on disk; the rates come from the architecture (its weights are gone,
        # so an ERF not measured before cannot be measured now).
        check_config(json.loads((run / "config.json").read_text()), config.to_dict(), run)
        model = build_run_model(config, pretrained=False)
        history = pd.read_csv(run / "history.csv").to_dict("records")
        metrics, finished = read_metrics(run), True
    else:
        result = train(config, run, progress=progress, train_set=train_set, val_set=val_set)
        model, history, metrics = result.model, result.history, result.metrics
        finished = result.finished
        if finished:  # the config is kept to check a later reuse
            write_json(run / "config.json", config.to_dict())
    if finished and erf_images and not pruned and not (run / "erf.npy").is_file():
        grad = measure_erf(model, config, val_set, erf_images)
        atomic_write(run / "erf.npy", lambda file: np.save(file, grad))
    if finished and not keep:
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    info = describe(model)  # what the trained network really is
    return {
        "setting": label,
        "rates": tuple(config.atrous_rates),
        "seed": config.seed,
        "model rates": tuple(info["atrous_rates"]),
        **rate_geometry(config.image_size, info["output_stride"], info["atrous_rates"]),
        "same network as": None,
        "miou": (metrics or {}).get("miou"),
        "pixel_accuracy": (metrics or {}).get("pixel_accuracy"),
        **erf_radii(run),
        "epochs": len(history),
        "train seconds": round(sum(float(row["seconds"]) for row in history), 1),
        "finished": finished,
    }


def _finished_without_checkpoints(run: Path, config) -> bool:
    """A run that finished earlier and whose checkpoints were then deleted."""

    if find_checkpoints(run / "checkpoints") or not (run / "metrics.json").is_file():
        return False
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{run}: a finished run without checkpoints or config.json; its configuration "
            "cannot be checked, so use a new output folder"
        )
    history = pd.read_csv(run / "history.csv") if (run / "history.csv").is_file() else None
    return history is not None and len(history) >= config.epochs


# --- effective receptive fields -----------------------------------------------------------


def measure_erf(model, config, val_set=None, count: int = ERF_IMAGES) -> np.ndarray:
    """The effective receptive field of a trained model's central output (`erf.gradient_map`)
    over the first `count` validation images, preprocessed as its validation was: (H, W)."""
    import torch

    if val_set is None:
        transforms = transforms_for(config.val_transforms, config.image_size)
        val_set = VOCDataset(config.data_root, split=config.val_split, transforms=transforms)
    images = torch.stack([val_set[i][0] for i in range(min(count, len(val_set)))])
    if images.dtype == torch.uint8:  # a dataset handing out raw bytes: normalise as training did
        images = model_input(images, torch.device("cpu"), torch.contiguous_format)
    return gradient_map(model.cpu().float(), images).astype(np.float32)


def erf_radii(run: Path) -> dict:
    """The radii holding 50% and 90% of a run's stored gradient map (NaN without one)."""

    path = Path(run) / "erf.npy"
    if not path.is_file():
        return {"erf r50 (px)": float("nan"), "erf r90 (px)": float("nan")}
    grad = np.load(path)
    return {"erf r50 (px)": erf_radius(grad, 0.5), "erf r90 (px)": erf_radius(grad, 0.9)}


def average_erf(paths) -> np.ndarray:
    """The mean of some erf.npy gradient maps, each scaled to sum 1 first (so every seed
    weighs the same)."""
    maps = [np.load(path) for path in paths]
    return np.mean([m / m.sum() for m in maps], axis=0)


def compare_with(table: pd.DataFrame, stored: pd.DataFrame, column: str = "miou") -> pd.DataFrame:
    """A run of the ablation beside a stored one, row by row (setting, seed): both values and
    their difference (0 where a run reproduced the stored one exactly)."""
    keys = ["setting", "seed"]
    both = table[[*keys, column]].merge(
        stored[[*keys, column]], on=keys, how="left", suffixes=(" here", " stored")
    )
    both["difference"] = both[f"{column} here"] - both[f"{column} stored"]
    return both


# --- statistics over seeds ----------------------------------------------------------------


def summarize(table: pd.DataFrame, column: str = "miou") -> pd.DataFrame:
    """One row per setting: its rates and geometry, and the mean, standard deviation (over
    seeds, n - 1), minimum and maximum of `column`."""
    first = table.groupby("setting", sort=False).first()
    scores = table.groupby("setting", sort=False)[column]
    summary = first[["rates", "feature map", "valid weights", "same network as"]].copy()
    summary["seeds"] = scores.size()
    summary["mean"], summary["sd"] = scores.mean(), scores.std(ddof=1)
    summary["min"], summary["max"] = scores.min(), scores.max()
    return summary


def paired_differences(
    table: pd.DataFrame, against: str = REFERENCE, column: str = "miou", level: float = 0.95
) -> pd.DataFrame:
    """Each setting minus `against`, seed by seed (the same seed: the same data order), in
    `column`: on how many seeds it is higher, the mean and standard deviation of the
    differences, a paired t statistic, and whether the difference is resolved beyond seed noise
    (a two-sided t-test at `level`).

    A difference of exactly 0 on every seed (the same network) is "same", never resolved.
    """
    from scipy import stats

    wide = table.pivot(index="seed", columns="setting", values=column)
    if against not in wide:
        raise ValueError(f"no setting {against!r} in the table; settings: {list(wide.columns)}")
    rows = []
    for label in table["setting"].unique():
        if label == against:
            continue
        diff = (wide[label] - wide[against]).dropna()
        n, mean, sd = len(diff), float(diff.mean()), float(diff.std(ddof=1))
        if n < 2:
            t, p = float("nan"), float("nan")
        elif sd == 0:
            t, p = (0.0, 1.0) if mean == 0 else (float("inf") * np.sign(mean), 0.0)
        else:
            t = mean / (sd / np.sqrt(n))
            p = float(2 * stats.t.sf(abs(t), df=n - 1))
        verdict = "same" if (diff == 0).all() else ("resolved" if p < 1 - level else "not resolved")
        rows.append(
            {
                "setting": label,
                "seeds": n,
                "higher on": int((diff > 0).sum()),
                "mean difference": mean,
                "sd": sd,
                "t": t,
                "p": p,
                "verdict": verdict,
            }
        )
    return pd.DataFrame(rows).set_index("setting")


# --- files --------------------------------------------------------------------------------


def read_ablation(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """An ablation.json (or the folder holding it): the table and what produced it."""
    path = Path(path)
    path = path / "ablation.json" if path.is_dir() else path
    try:
        record = json.loads(path.read_text())
        table = pd.DataFrame(record["rows"], columns=list(COLUMNS))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no ablation results here") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not an ablation.json written by run_ablation ({error})"
        ) from None
    for column in ("rates", "model rates"):
        table[column] = table[column].map(tuple)
    return _tidy(table), {k: v for k, v in record.items() if k != "rows"}


def _tidy(table: pd.DataFrame) -> pd.DataFrame:
    """One representation for "no twin": None (pandas would otherwise pick NaN or <NA>)."""
    twin = table["same network as"].astype(object)
    table["same network as"] = twin.where(twin.notna(), None)
    return table


def seed_points(table: pd.DataFrame, column: str = "miou") -> dict[str, list[float]]:
    """{setting label with its rates: each seed's value in %}, keyed as `percent` keys."""
    return {
        f"{label} {tuple(group['rates'].iloc[0])}": [100.0 * v for v in group[column]]
        for label, group in table.groupby("setting", sort=False)
    }


def describe_differences(diff: pd.DataFrame, against: str) -> str:
    """`paired_differences` in sentences, one per setting, with no claim beyond the numbers."""
    lines = []
    for label, row in diff.iterrows():
        if row["verdict"] == "same":
            lines.append(f"{label}: the same network as {against}; no difference to resolve.")
            continue
        change = f"{100 * row['mean difference']:+.1f} points of mIoU"
        spread = (
            f"higher on {row['higher on']} of {row['seeds']} seeds, sd "
            f"{100 * row['sd']:.1f}, p = {row['p']:.3f}"
        )
        verdict = "resolved" if row["verdict"] == "resolved" else "not resolved beyond seed noise"
        lines.append(f"{label}: {change} against {against} ({spread}): {verdict}.")
    return "\n".join(lines)


def percent(summary: pd.DataFrame, column: str = "mean") -> dict[str, float]:
    """{setting label with its rates: the column in %}, as `atrous_figures.plot_ablation` takes it."""
    return {
        f"{label} {tuple(row['rates'])}": 100.0 * float(row[column])
        for label, row in summary.iterrows()
    }
