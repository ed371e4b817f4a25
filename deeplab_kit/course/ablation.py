"""The ASPP rate ablation, crossed with two ways of getting context.

The paper uses atrous convolution in cascade (a dilated backbone) and in parallel (ASPP). This
experiment crosses them: ASPP settings from a control with no 3x3 branch at all to the report's
rates, on two backbones that both hand ASPP the report's own 16 x 16 feature map (128-pixel
generated images at output stride 8, as 256-pixel images give at output stride 16):

- "dilated": the quarter-width ResNet-26 with its later stages dilated (output stride 8); one
  output already sees about 195 pixels, more than the whole 128-pixel image.
- "small field": the same network cut after layer2 (also output stride 8); one output sees 51
  pixels, less than the larger objects need (`geometry_table` says how much less), so whatever
  context the labels need has to come from ASPP.

    base = ablation_config(lr)                       # the recipe, at the swept learning rate
    table = run_ablation(base, "runs/ablation", seeds=SEEDS, erf_images=64)
    tests(table)                                     # Holm-corrected paired t-tests

Each (backbone, setting, seed) trains in its own run folder. A setting whose rates differ from
an earlier one's only where the taps read padding (a rate at least as large as the map reads
its centre alone, `atrous.effective_rates`) builds the same network; it is not trained again.
Rows also score the validation images on their interior pixels alone (more than
`INTERIOR_DISTANCE` pixels from any outline: what the local shape cannot tell) and measure the
effective receptive field (`deeplab_kit.course.erf`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from torch.utils.data import Dataset

from deeplab_kit.config import RunConfig
from deeplab_kit.course.atrous import (
    effective_rates,
    feature_size,
    receptive_field_from_config,
    valid_share,
)
from deeplab_kit.course.erf import erf_radius, gradient_map
from deeplab_kit.course.experiments import (
    Outcome,
    last_gain,
    paired_tests,
    run_folder,
    run_grid,
)
from deeplab_kit.data.classes import IGNORE_INDEX
from deeplab_kit.data.loader import make_loader
from deeplab_kit.data.transforms import model_input, transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.evaluate import evaluate
from deeplab_kit.files import atomic_write, plain, write_json, write_text
from deeplab_kit.runtime.arithmetic import Arithmetic
from deeplab_kit.runtime.run_files import metrics_dict

# ASPP settings: label -> (rates, image pooling).
SETTINGS: dict[str, tuple[tuple[int, ...], bool]] = {
    "control": ((), False),  # the 1x1 branch alone: no 3x3 branch, no image pooling
    "no atrous": ((1, 1, 1), False),  # three plain 3x3 branches: the rates' capacity, no reach
    "paper": ((6, 12, 18), False),  # DeepLabv3's rates at output stride 16
    "report": ((8, 12, 16), False),  # the report's model
    "report variant": ((12, 16, 24), False),  # the report's other try
}
# The backbones: label -> the config fields that make them.
BACKBONES: dict[str, dict] = {
    "dilated": dict(backbone_stages=4),
    "small field": dict(backbone_stages=2, output_stride=8),
}
SEEDS = (0, 1, 2, 3, 4)
# The generated dataset of the stored ablation (make_synthetic_voc's arguments).
# Its objects are larger than the other generated sets' (half-extents of 30% to 50% of the
# side, against 20% to 42%): in a pilot (seed 0, this recipe) the small-field control then fell
# to 17% mIoU while rates (6, 12, 18) reached 36%; at the usual sizes both reached 34%: the
# context the labels need lay within the small field's reach.
ABLATION_DATA = dict(num_train=900, num_val=120, size=128, seed=0, object_scale=(0.3, 0.5))
ERF_IMAGES = 64  # validation images whose gradients make each effective receptive field
INTERIOR_DISTANCE = 16  # pixels from the nearest outline (two cells of the 16 x 16 map)
# The learning rates the sweep tries, on each backbone's control (the runs that learn slowest),
# for a few epochs each. It picks by validation loss: in so short a run the mIoU of every rate
# can still sit at the background plateau (all of them did in 3 epochs), while the loss already
# tells the rates apart.
LR_CANDIDATES = (3e-3, 6e-3, 1.2e-2)
SWEEP_EPOCHS = 4


def run_label(backbone: str, setting: str) -> str:
    return f"{backbone} / {setting}"


def configs(base: RunConfig) -> dict[str, RunConfig]:
    """One config per backbone and ASPP setting, in table order. A backbone at another output
    stride than `base` (the small field's 8 beside the report's 16 on VOC) gets inputs scaled
    so that ASPP's map keeps its size; on the stored recipe (output stride 8) nothing moves."""
    found = {}
    for backbone, fields in BACKBONES.items():
        fields = dict(fields)
        stride = fields.get("output_stride", base.model.output_stride)
        if stride != base.model.output_stride:
            fields["image_size"] = base.image_size * stride // base.model.output_stride
        for setting, (rates, pooling) in SETTINGS.items():
            config = base.replace(**fields, atrous_rates=rates, image_pooling=pooling)
            found[run_label(backbone, setting)] = config
    return found


def equivalent_settings(settings: Mapping[str, RunConfig]) -> dict[str, str]:
    """{label: the earlier label it is the same network as}: the same backbone and pooling, and
    rates that differ only where the taps read padding (`atrous.effective_rates`)."""
    first: dict[tuple, str] = {}
    same = {}
    for label, config in settings.items():
        size = feature_size(config.image_size, config.model.output_stride)
        key = (
            config.model.backbone_stages,
            config.model.image_pooling,
            effective_rates(size, config.model.atrous_rates),
        )
        if key in first:
            same[label] = first[key]
        else:
            first[key] = label
    return same


def geometry_table(base: RunConfig) -> pd.DataFrame:
    """What the geometry says before any training, per backbone and setting: ASPP's map, the
    share of each branch's weights that read it, the theoretical field of one output of the
    backbone and of the widest branch, and the earlier setting it is the same network as."""
    settings = configs(base)
    same = equivalent_settings(settings)
    rows = []
    for label, config in settings.items():
        backbone, setting = label.split(" / ")
        field = receptive_field_from_config(config.model, image_pooling=False)
        size = feature_size(config.image_size, config.model.output_stride)
        shares = [valid_share(size, rate) for rate in config.model.atrous_rates]
        rows.append(
            {
                "backbone": backbone,
                "setting": setting,
                "rates": tuple(config.model.atrous_rates),
                "image_pooling": config.model.image_pooling,
                "feature map": f"{size}x{size}",
                "valid per branch": " / ".join(f"{share:.0%}" for share in shares) or "-",
                "backbone field (px)": field.backbone,
                "widest branch field (px)": int(max(field.branches.values())),
                "same network as": same.get(label),
            }
        )
    return pd.DataFrame(rows)


# --- the runs -------------------------------------------------------------------------------

COLUMNS = (
    "backbone",
    "setting",
    "rates",
    "image_pooling",
    "seed",
    "feature map",
    "same network as",
    "miou",
    "interior miou",
    "pixel_accuracy",
    "erf r50 (px)",
    "erf r90 (px)",
    "last two epochs gain",
    "epochs",
    "train seconds",
    "arithmetic",
    "finished",
)


def run_ablation(
    base: RunConfig,
    out_dir: str | os.PathLike,
    *,
    seeds: Sequence[int] = SEEDS,
    erf_images: int = 0,
    progress: bool = False,
    keep_checkpoints: bool = True,
    provenance: dict | None = None,
    sweep: pd.DataFrame | None = None,
    workers: int = 1,
) -> pd.DataFrame:
    """Train every backbone x ASPP setting once per seed on `base` (the `ablation` recipe),
    `workers` runs at a time; write out_dir/ablation.csv and ablation.json (the table, the
    configuration, the settings, the seeds, the learning-rate sweep and `provenance` at its top
    level); return the table.

    `erf_images` > 0 measures each trained model's effective receptive field on that many
    validation images (erf.npy in its run folder). A run resumes where a stopped call left it;
    with `keep_checkpoints=False`, a finished run's checkpoints are deleted and a later call
    reuses its files untrained.
    """
    settings = configs(base)
    rows = run_grid(
        settings,
        out_dir,
        seeds=seeds,
        measure=Measure(erf_images),
        same_as=equivalent_settings(settings),
        progress=progress,
        keep_checkpoints=keep_checkpoints,
        workers=workers,
    )
    for row in rows:  # a twin's row is its twin's, renamed: say which backbone and setting
        backbone, setting = row["run"].split(" / ")
        rates, pooling = SETTINGS[setting]
        row.update(backbone=backbone, setting=setting, rates=rates, image_pooling=pooling)
    table = _tidy(pd.DataFrame(rows, columns=list(COLUMNS)))
    out_dir = Path(out_dir)
    write_text(out_dir / "ablation.csv", table.to_csv(index=False))
    record = {
        **(provenance or {}),
        "config": base.to_dict(),
        "settings": {
            name: {"rates": list(rates), "image_pooling": pooling}
            for name, (rates, pooling) in SETTINGS.items()
        },
        "backbones": BACKBONES,
        "seeds": [int(s) for s in seeds],
        "interior distance (px)": INTERIOR_DISTANCE,
        "lr sweep": sweep.to_dict("records") if sweep is not None else None,
        "rows": table.to_dict("records"),
    }
    write_json(out_dir / "ablation.json", plain(record))
    return table


@dataclass(frozen=True)
class Measure:
    """A run's own columns (picklable, so that runs can train in worker processes): the
    backbone and setting, the interior pixels' mIoU and the effective receptive field, both
    measured once, when the run has just finished."""

    erf_images: int = 0

    def __call__(self, label: str, config: RunConfig, run: Path, outcome: Outcome) -> dict:
        backbone, setting = label.split(" / ")
        if outcome.finished and not outcome.reused:
            val_set = _validation_set(config)
            _score_interior(outcome.model, config, InteriorMasks(val_set, INTERIOR_DISTANCE), run)
            if self.erf_images and not (run / "erf.npy").is_file():
                grad = measure_erf(outcome.model, val_set, self.erf_images)
                atomic_write(run / "erf.npy", lambda file: np.save(file, grad))
        size = feature_size(config.image_size, config.model.output_stride)
        return {
            "backbone": backbone,
            "setting": setting,
            "rates": tuple(config.model.atrous_rates),
            "image_pooling": config.model.image_pooling,
            "feature map": f"{size}x{size}",
            "interior miou": _read_json(run / "interior.json").get("miou"),
            **erf_radii(run),
            "last two epochs gain": last_gain(outcome.history),
        }


def _validation_set(config: RunConfig) -> VOCDataset:
    transforms = transforms_for(config.val_transforms, config.image_size)
    return VOCDataset(config.data_root, split=config.val_split, transforms=transforms)


# --- interior pixels ------------------------------------------------------------------------


def interior(mask: np.ndarray, distance: int) -> np.ndarray:
    """The labelled pixels at least `distance` pixels from any outline (a change of label, or
    VOC's void band): (H, W) bool. Their class cannot be read off a nearby edge."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    edge |= mask == IGNORE_INDEX
    far = ndimage.distance_transform_edt(~edge) >= distance
    return far & (mask != IGNORE_INDEX)


class InteriorMasks(Dataset):
    """A dataset's samples with every pixel but the interior ones (`interior`) set to void."""

    def __init__(self, dataset, distance: int) -> None:
        self.dataset, self.distance = dataset, distance

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, mask = self.dataset[index]
        keep = torch.from_numpy(interior(mask.numpy(), self.distance))
        return image, torch.where(keep, mask, torch.full_like(mask, IGNORE_INDEX))


def _score_interior(model, config: RunConfig, dataset: InteriorMasks, run: Path) -> None:
    loader = make_loader(
        dataset,
        batch_size=config.eval_batch_size or config.batch_size,
        shuffle=False,
        drop_last=False,
    )
    result = evaluate(
        model,
        loader,
        device="cpu",
        num_classes=config.model.num_classes,
        arithmetic=Arithmetic(),
    )
    write_json(run / "interior.json", metrics_dict(result.confusion, distance=dataset.distance))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- effective receptive fields -------------------------------------------------------------


def measure_erf(model, val_set, count: int = ERF_IMAGES) -> np.ndarray:
    """The effective receptive field of a trained model's central output (`erf.gradient_map`)
    over the first `count` validation images, preprocessed as its validation was: (H, W)."""
    images = torch.stack([val_set[i][0] for i in range(min(count, len(val_set)))])
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


# --- the learning rate ----------------------------------------------------------------------


def sweep_lr(
    base: RunConfig,
    out_dir,
    *,
    candidates=LR_CANDIDATES,
    epochs: int = SWEEP_EPOCHS,
    progress: bool = False,
    workers: int = 1,
) -> pd.DataFrame:
    """A short sweep for the one learning rate of the whole ablation: each backbone's control
    (the runs that learn slowest), `epochs` epochs each (a short cosine schedule of their own),
    seed 0. Returns one row per learning rate and backbone with the final validation loss and
    mIoU; `chosen_lr` picks from it."""
    controls = {
        label.split(" / ")[0]: c for label, c in configs(base).items() if "control" in label
    }
    keys = [(lr, backbone) for lr in candidates for backbone in BACKBONES]
    runs = {
        f"lr {lr:g} {backbone}": controls[backbone].replace(lr=lr, epochs=epochs)
        for lr, backbone in keys
    }
    rows = run_grid(
        runs, out_dir, seeds=(0,), progress=progress, keep_checkpoints=False, workers=workers
    )
    found = []
    for (lr, backbone), row in zip(keys, rows, strict=True):
        history = pd.read_csv(run_folder(out_dir, f"lr {lr:g} {backbone}", 0) / "history.csv")
        loss = float(history["val_loss"].iloc[-1])
        found.append({"lr": lr, "backbone": backbone, "val_loss": loss, "miou": row["miou"]})
    return pd.DataFrame(found)


def chosen_lr(sweep: pd.DataFrame) -> float:
    """The learning rate with the lowest mean final validation loss over the two controls."""
    return float(sweep.groupby("lr")["val_loss"].mean().idxmin())


# --- the table ------------------------------------------------------------------------------


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
    table["rates"] = table["rates"].map(tuple)
    for column in ("erf r50 (px)", "erf r90 (px)", "last two epochs gain"):  # JSON's null: NaN
        table[column] = pd.to_numeric(table[column])
    return _tidy(table), {k: v for k, v in record.items() if k != "rows"}


def _tidy(table: pd.DataFrame) -> pd.DataFrame:
    """One representation for "no twin": None (pandas would otherwise pick NaN or <NA>)."""
    twin = table["same network as"].astype(object)
    table["same network as"] = twin.where(twin.notna(), None)
    return table


def run_folder_of(out_dir, row: Mapping) -> Path:
    return run_folder(out_dir, run_label(row["backbone"], row["setting"]), int(row["seed"]))


# --- the statistics -------------------------------------------------------------------------


def pairs() -> list[tuple[str, str]]:
    """The family: every pair of settings within each backbone, and each setting across the
    two backbones."""
    found = []
    names = list(SETTINGS)
    for backbone in BACKBONES:
        labels = [run_label(backbone, name) for name in names]
        found += [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    first, second = list(BACKBONES)
    found += [(run_label(first, name), run_label(second, name)) for name in names]
    return found


def tests(table: pd.DataFrame, column: str = "miou", level: float = 0.95) -> pd.DataFrame:
    """Paired t-tests seed by seed with Holm's correction over all `pairs()`."""
    runs = table.assign(
        run=[run_label(b, s) for b, s in zip(table["backbone"], table["setting"], strict=True)]
    )
    return paired_tests(runs, pairs(), column=column, level=level, by="run")


def seed_points(table: pd.DataFrame, column: str = "miou") -> dict[str, dict[str, list[float]]]:
    """{backbone: {setting: each seed's value in %}}, for the figure."""
    return {
        backbone: {
            setting: [100.0 * v for v in group[column]]
            for setting, group in rows.groupby("setting", sort=False)
        }
        for backbone, rows in table.groupby("backbone", sort=False)
    }
