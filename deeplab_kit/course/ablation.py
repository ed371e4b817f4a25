"""The ASPP rate ablation: what ASPP's rates add, and what the backbone's dilation adds, each
apart from the other.

Both arms hand ASPP the report's own 16 x 16 map (128-pixel generated images at output stride
8, as 256-pixel images give at output stride 16), with the same network, parameters and depth:

- "dilated": the `ablation` recipe's eighth-width ResNet-26, layer3 and layer4 dilated (rates 2
  and 4): one output's theoretical field is 195 pixels, more than the image.
- "undilated": the same four stages with layer3 and layer4 at stride 1 and dilation 1
  (`dilated=False`): only the field changes (115 pixels).

Both run every ASPP setting (`SETTINGS`). Four contrasts named before the make (`PLANNED`)
carry the lesson; every other pair is exploratory. Each model is also scored on interior pixels
(what the local shape cannot tell) and on a band along the outlines, so that a loss from
gridding near edges and one from padding on the whole map can be told apart, and its effective
receptive field is measured (`deeplab_kit.course.erf`).

    base = results.experiment_config("ablation", arithmetic, lr=lr)   # the sweep's lr
    rows = run(base, "runs/ablation", erf_images=64, workers=2)
    tests(pd.DataFrame(rows))                     # the planned contrasts, Holm-corrected
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
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
    setting_folder,
)
from deeplab_kit.data.classes import IGNORE_INDEX
from deeplab_kit.data.loader import make_loader
from deeplab_kit.data.transforms import eval_collate, model_input, transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.evaluate import evaluate
from deeplab_kit.files import atomic_write, write_json
from deeplab_kit.runtime.arithmetic import Arithmetic
from deeplab_kit.runtime.run_files import metrics_dict

# ASPP settings: label -> (rates, image pooling).
SETTINGS: dict[str, tuple[tuple[int, ...], bool]] = {
    "control": ((), False),  # the 1x1 branch alone: no 3x3 branch, no image pooling
    "rate 1": ((1, 1, 1), False),  # three plain 3x3 branches: the rates' capacity, no reach
    "small rates": ((2, 4, 6), False),  # taps 16 to 48 px apart: within the objects
    "paper": ((6, 12, 18), False),  # DeepLabv3's rates at output stride 16
    "report": ((8, 12, 16), False),  # the report's model
    "paper + pooling": ((6, 12, 18), True),  # the paper's ASPP as the paper has it
}
BACKBONES: dict[str, dict] = {"dilated": dict(dilated=True), "undilated": dict(dilated=False)}
# The contrasts the lesson rests on, named before the make: (a, b) reads "a minus b".
PLANNED = (
    ("dilated / paper", "undilated / paper"),  # what the backbone's dilation adds
    ("undilated / paper", "undilated / rate 1"),  # large rates where the field is small
    ("undilated / small rates", "undilated / paper"),  # small rates against large ones
    ("undilated / paper + pooling", "undilated / paper"),  # image pooling
)
# Meant to resolve 2 points after Holm over four at the paired sd of the earlier ablation's like
# pairs (1.7 points): t(1 - 0.05/8, 7) * 1.7 / sqrt(8) = 2.0 (`experiments.resolvable`). The
# stored make's pairs spread wider, so they resolve less (notebook 04 says how much).
# Exploratory settings get two seeds: a look, not a claim.
PLANNED_SEEDS = tuple(range(8))
EXPLORATORY_SEEDS = (0, 1)
# The generated dataset (make_synthetic_voc's arguments): objects larger than the other sets'
# (half-extents of 30% to 50% of the side), so that their labels need context beyond a small
# field (chosen after a pilot of the earlier ablation, seed 0, where at the usual sizes a
# small-field backbone and ASPP's rates scored alike), drawn from the going-deeper sets' five
# classes (with all twenty, a pilot's runs were still 12 points from their 32-epoch score at 16
# epochs: the budget could not afford runs that finish learning). A "tune" split, apart from
# val, chooses the learning rate.
DATA = dict(
    num_train=900,
    num_val=120,
    size=128,
    seed=0,
    object_scale=(0.3, 0.5),
    classes=(1, 5, 8, 15, 19),
    num_tune=120,
)
ERF_IMAGES = 64  # validation images whose gradients make each effective receptive field
INTERIOR_DISTANCE = 16  # pixels from the nearest outline (two cells of the 16 x 16 map)
BAND = 8  # pixels from an outline (one cell): where gridding would show
# The learning-rate sweep: the paper's setting on each backbone, seed 0, the whole schedule,
# scored on the tune split; extended while the best rate sits at an end of the grid.
LR_GRID = (3e-3, 6e-3, 1.2e-2)
LR_EXTENSIONS = 3  # at most, each a doubling (or halving) past the end the best rate is at
LR_SETTINGS = ("dilated / paper", "undilated / paper")
TWICE = ("undilated / paper", "dilated / paper")  # rerun at twice the epochs (convergence)


def run_label(backbone: str, setting: str) -> str:
    return f"{backbone} / {setting}"


def configs(base: RunConfig) -> dict[str, RunConfig]:
    """One config per backbone and ASPP setting, in table order."""
    return {
        run_label(backbone, setting): base.replace(
            **fields, atrous_rates=rates, image_pooling=pooling
        )
        for backbone, fields in BACKBONES.items()
        for setting, (rates, pooling) in SETTINGS.items()
    }


def seeds_of(label: str) -> tuple[int, ...]:
    planned = {name for pair in PLANNED for name in pair}
    return PLANNED_SEEDS if label in planned else EXPLORATORY_SEEDS


def equivalent_settings(settings: Mapping[str, RunConfig]) -> dict[str, str]:
    """{label: the earlier label it is the same network as}: the same backbone and pooling, and
    rates that differ only where the taps read padding (`atrous.effective_rates`)."""
    first, same = {}, {}
    for label, config in settings.items():
        model = config.model
        size = feature_size(config.image_size, model.output_stride)
        key = (model.dilated, model.image_pooling, effective_rates(size, model.atrous_rates))
        if key in first:  # an earlier label has this network
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
                "rates": config.model.atrous_rates,
                "image_pooling": config.model.image_pooling,
                "feature map": f"{size}x{size}",
                "valid per branch": " / ".join(f"{share:.0%}" for share in shares) or "-",
                "backbone field (px)": field.backbone,
                "widest branch field (px)": int(max(field.branches.values())),
                "same network as": same.get(label),
            }
        )
    return pd.DataFrame(rows)


COLUMNS = (
    "backbone", "setting", "rates", "image_pooling", "seed", "feature map", "same network as",
    "miou", "interior miou", "band miou", "pixel_accuracy", "erf r50 (px)", "erf r90 (px)",
    "last six epochs gain", "epochs", "train seconds", "arithmetic", "finished",
)  # fmt: skip


def run(
    base: RunConfig, out_dir, *, erf_images: int = 0, seeds=None, labels=None, **grid
) -> list[dict]:
    """Train every backbone x ASPP setting (or those named in `labels`) on `base` (the
    `ablation` recipe), each with its seeds (`seeds_of`, or `seeds` for all); one row per run,
    in table order. `erf_images` > 0 measures each trained model's effective receptive field on
    that many validation images (erf.npy in its run folder). `grid`: `run_grid`'s options."""
    settings = configs(base)
    if labels is not None:
        settings = {label: settings[label] for label in labels}
    chosen = {label: seeds or seeds_of(label) for label in settings}
    return run_grid(settings, out_dir, seeds=chosen, measure=Measure(erf_images), **grid)


class Measure:
    """A run's own columns (picklable, so that runs can train in worker processes): its backbone
    and setting, its interior and band scores and its effective receptive field, measured once,
    when the run has just finished."""

    def __init__(self, erf_images: int = 0) -> None:
        self.erf_images = erf_images

    def __call__(self, label: str, config: RunConfig, run_dir: Path, outcome: Outcome) -> dict:
        backbone, setting = label.split(" / ")
        if outcome.finished and not outcome.reused:
            regions = score_regions(outcome.model, config, outcome.history[-1]["arithmetic"])
            write_json(run_dir / "regions.json", regions)
            if self.erf_images:
                grad = measure_erf(outcome.model, _validation_set(config), self.erf_images)
                atomic_write(run_dir / "erf.npy", lambda file: np.save(file, grad))
        regions = _read_json(run_dir / "regions.json")
        size = feature_size(config.image_size, config.model.output_stride)
        return {
            "backbone": backbone,
            "setting": setting,
            "rates": config.model.atrous_rates,
            "image_pooling": config.model.image_pooling,
            "feature map": f"{size}x{size}",
            "interior miou": regions.get("interior", {}).get("miou"),
            "band miou": regions.get("band", {}).get("miou"),
            **erf_radii(run_dir),
            "last six epochs gain": last_gain(outcome.history, 6),
        }


def _validation_set(config: RunConfig, split: str | None = None) -> VOCDataset:
    transforms = transforms_for(config.val_transforms, config.image_size)
    return VOCDataset(config.data_root, split=split or config.val_split, transforms=transforms)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def outline_distance(mask: np.ndarray) -> np.ndarray:
    """Each pixel's distance in pixels to the nearest outline (a change of label, or VOC's void
    band): (H, W) float."""
    mask = np.asarray(mask)
    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    edge |= mask == IGNORE_INDEX
    return ndimage.distance_transform_edt(~edge)


def interior(mask: np.ndarray, distance: int = INTERIOR_DISTANCE) -> np.ndarray:
    """The labelled pixels at least `distance` pixels from any outline: (H, W) bool. Their class
    cannot be read off a nearby edge."""
    return (outline_distance(mask) >= distance) & (np.asarray(mask) != IGNORE_INDEX)


def band(mask: np.ndarray, width: int = BAND) -> np.ndarray:
    """The labelled pixels within `width` pixels of an outline: (H, W) bool."""
    return (outline_distance(mask) <= width) & (np.asarray(mask) != IGNORE_INDEX)


class RegionMasks(Dataset):
    """A dataset's samples with every pixel outside `region(mask)` set to void."""

    def __init__(self, dataset, region) -> None:
        self.dataset, self.region = dataset, region

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, mask = self.dataset[index]
        keep = torch.from_numpy(self.region(mask.numpy()))
        return image, torch.where(keep, mask, torch.full_like(mask, IGNORE_INDEX))


def score_regions(model, config: RunConfig, arithmetic: str) -> dict:
    """The model's scores (metrics.json's form) on the validation images' interior pixels and
    on the band along their outlines, in the arithmetic the run trained in."""
    found = {}
    for name, region in (("interior", interior), ("band", band)):
        dataset = RegionMasks(_validation_set(config), region)
        loader = make_loader(dataset, config.eval_batch_size or 8, collate_fn=eval_collate)
        result = evaluate(
            model,
            loader,
            device="cpu",
            num_classes=config.model.num_classes,
            arithmetic=Arithmetic.parse(arithmetic),
        )
        found[name] = metrics_dict(result.confusion)
    found.update({"interior distance (px)": INTERIOR_DISTANCE, "band width (px)": BAND})
    return found


def measure_erf(model, val_set, count: int = ERF_IMAGES) -> np.ndarray:
    """The effective receptive field of a trained model's central output (`erf.gradient_map`)
    over the first `count` validation images, preprocessed as its validation was: (H, W)."""
    images = torch.stack([val_set[i][0] for i in range(min(count, len(val_set)))])
    images = model_input(images, torch.device("cpu"), torch.contiguous_format)
    return gradient_map(model.cpu().float(), images).astype(np.float32)


def erf_radii(run_dir: Path) -> dict:
    """The radii holding 50% and 90% of a run's stored gradient map (NaN without one)."""
    path = Path(run_dir) / "erf.npy"
    if not path.is_file():
        return {"erf r50 (px)": float("nan"), "erf r90 (px)": float("nan")}
    grad = np.load(path)
    return {"erf r50 (px)": erf_radius(grad, 0.5), "erf r90 (px)": erf_radius(grad, 0.9)}


def average_erf(paths) -> np.ndarray:
    """The mean of some erf.npy gradient maps, each scaled to sum 1 first (so every seed
    weighs the same)."""
    return np.mean([m / m.sum() for m in map(np.load, paths)], axis=0)


def erf_maps(frame: pd.DataFrame, path_of) -> dict[str, np.ndarray]:
    """For each backbone and setting of an ablation table, its effective receptive field (the
    seeds' gradient maps averaged, `average_erf`), keyed "backbone / setting". `path_of` maps a
    run's file ("<setting folder>/seed-<n>/erf.npy", relative to the ablation's folder) to where
    it is."""
    maps = {}
    for (backbone, setting), group in frame.groupby(["backbone", "setting"], sort=False):
        label = run_label(backbone, setting)
        paths = [path_of(f"{setting_folder(label)}/seed-{s}/erf.npy") for s in group["seed"]]
        maps[label] = average_erf(paths)
    return maps


def sweep_lr(
    base: RunConfig, out_dir, *, grid: Sequence[float] = LR_GRID, **options
) -> pd.DataFrame:
    """The one learning rate of the whole ablation, chosen apart from the reported scores:
    `LR_SETTINGS`, seed 0, the whole schedule at each rate of `grid`, scored on the tune split.
    One row per rate and setting: the tune split's mIoU and loss. `options`: `run_grid`'s."""
    settings = configs(base)
    runs = {
        f"lr {lr:g} {label}": settings[label].replace(lr=lr, val_split="tune")
        for lr in grid
        for label in LR_SETTINGS
    }
    rows = run_grid(runs, out_dir, seeds=(0,), **options)
    found = []
    for (lr, label), row in zip([(lr, s) for lr in grid for s in LR_SETTINGS], rows, strict=True):
        history = pd.read_csv(run_folder(out_dir, row["run"], 0) / "history.csv")
        tune_loss = float(history["val_loss"].iloc[-1])
        found.append({"lr": lr, "setting": label, "tune miou": row["miou"], "tune loss": tune_loss})
    return pd.DataFrame(found)


def tune_lr(base: RunConfig, out_dir, *, extensions: int = LR_EXTENSIONS, **options):
    """`sweep_lr` over `LR_GRID`, the grid doubled past whichever end the best rate sits at
    until it lies inside; an error after `extensions` steps (widen `LR_GRID` then)."""
    grid = list(LR_GRID)
    sweep = sweep_lr(base, out_dir, grid=grid, **options)
    while not inside_grid(sweep):
        if len(grid) - len(LR_GRID) == extensions:
            raise RuntimeError(f"{out_dir}: the best learning rate is still at an end of {grid}")
        low = chosen_lr(sweep) == min(grid)
        grid = [grid[0] / 2, *grid] if low else [*grid, grid[-1] * 2]
        sweep = sweep_lr(base, out_dir, grid=grid, **options)
    return sweep


def chosen_lr(sweep: pd.DataFrame) -> float:
    """The learning rate with the highest mean tune-split mIoU over the swept settings."""
    return float(sweep.groupby("lr")["tune miou"].mean().idxmax())


def inside_grid(sweep: pd.DataFrame) -> bool:
    """Whether the chosen rate lies inside the swept grid, not at one of its ends."""
    rates = sorted(sweep["lr"].unique())
    return rates[0] < chosen_lr(sweep) < rates[-1]


def table(rows: Sequence[Mapping]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    frame["rates"] = frame["rates"].map(tuple)
    twin = frame["same network as"].astype(object)
    frame["same network as"] = twin.where(twin.notna(), None)
    return frame


def tests(
    frame: pd.DataFrame, pairs=PLANNED, column: str = "miou", level: float = 0.95
) -> pd.DataFrame:
    """Paired t-tests seed by seed with Holm's correction over `pairs` (the planned contrasts
    unless told otherwise; any other family is exploratory: say so)."""
    return paired_tests(labelled(frame), list(pairs), column=column, level=level, by="run")


def labelled(frame: pd.DataFrame) -> pd.DataFrame:
    """An ablation table with each row's run label ("backbone / setting") in a "run" column."""
    pairs = zip(frame["backbone"], frame["setting"], strict=True)
    return frame.assign(run=[run_label(b, s) for b, s in pairs])


def exploratory_pairs() -> list[tuple[str, str]]:
    """Every other pair within a backbone, and each setting across the two: looks, not claims."""
    labels = list(configs(RunConfig.from_recipe("ablation")))
    found = []
    for backbone in BACKBONES:
        mine = [label for label in labels if label.startswith(backbone + " /")]
        found += [(a, b) for i, a in enumerate(mine) for b in mine[i + 1 :]]
    found += [(run_label("dilated", s), run_label("undilated", s)) for s in SETTINGS]
    planned = set(PLANNED) | {(b, a) for a, b in PLANNED}
    return [pair for pair in dict.fromkeys(found) if pair not in planned]
