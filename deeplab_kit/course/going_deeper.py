"""The paper's central experiment at CPU scale: going deeper with atrous convolution.

The paper (Section 3.1, Tables 1-2) duplicates block4 of ResNet-50 three times in cascade
(block5..block7) and drops ASPP. (a) With block7, it moves the output stride from 8 to 256: at
256 there is no atrous convolution at all, every stage strides, and the last map is tiny; at 8,
the later blocks keep a fine map and dilate instead. (b) At output stride 16 it adds the
cascaded blocks one by one (block4..block7).

    settings = SETTINGS                  # label -> the overrides of the `going-deeper` recipe
    rows = run_going_deeper(base, "runs/results/going-deeper", seeds=SEEDS)
    table = going_deeper_table(rows)     # one row per experiment, setting and seed

The kit's replication: the `going-deeper` recipe (a quarter-width ResNet-26 and its cascaded
copies, a 1x1 classifier, on generated 136-pixel images, where output strides 8..256 give
feature maps of 17, 9, 5, 3, 2 and 1 pixels). block7 at output stride 16 is in both
experiments: it is trained once, and its rows appear under both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deeplab_kit.config import RunConfig
from deeplab_kit.course.atrous import feature_size, receptive_field_from_config
from deeplab_kit.course.experiments import Outcome, paired_tests, run_grid, seconds_per_step
from deeplab_kit.data.classes import save_mask
from deeplab_kit.data.transforms import model_input, transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.model import build_model, describe

OUTPUT_STRIDES = (8, 16, 32, 64, 128, 256)  # (a): block7 at each
BLOCKS = (4, 5, 6, 7)  # (b): at output stride 16
SHARED = "block7 OS16"  # in both experiments
SEEDS = (0, 1, 2)
# The generated dataset of the stored result (make_synthetic_voc's arguments).
# Its objects come from 5 of the 20 classes (aeroplane, bottle, cat, person, train), so that
# every run can leave the background plateau within the CPU budget: what the output stride
# changes, the map's resolution, does not depend on how many classes there are.
GOING_DEEPER_DATA = dict(num_train=1100, num_val=120, size=136, seed=0, classes=(1, 5, 8, 15, 19))
EXAMPLE_IMAGES = 4  # validation images whose predictions each seed-0 run stores
EXPERIMENTS = ("output stride", "cascaded blocks")


def label(blocks: int, output_stride: int) -> str:
    return f"block{blocks} OS{output_stride}"


def settings() -> dict[str, dict]:
    """label -> the overrides of the base config: block7 at each output stride, then blocks
    4..6 at output stride 16 (block7 OS16 once)."""
    found = {label(7, s): dict(extra_blocks=3, output_stride=s) for s in OUTPUT_STRIDES}
    for blocks in BLOCKS[:-1]:
        found[label(blocks, 16)] = dict(extra_blocks=blocks - 4, output_stride=16)
    return found


SETTINGS = settings()


def experiment_rows(setting: str) -> list[tuple[str, int, int]]:
    """(experiment, output stride, blocks) of the table rows a setting gives."""
    overrides = SETTINGS[setting]
    blocks, stride = 4 + overrides["extra_blocks"], overrides["output_stride"]
    found = []
    if blocks == 7:
        found.append(("output stride", stride, blocks))
    if stride == 16:
        found.append(("cascaded blocks", stride, blocks))
    return found


def geometry_table(base: RunConfig) -> pd.DataFrame:
    """What each setting is before any training: feature-map side, the stages that stride and
    the rates of those that dilate, and the theoretical receptive field of one output."""
    rows = []
    for name, overrides in SETTINGS.items():
        field = receptive_field_from_config(base.replace(**overrides).model)
        side = feature_size(base.image_size, overrides["output_stride"])
        rows.append(
            {
                "setting": name,
                "blocks": 4 + overrides["extra_blocks"],
                "output stride": overrides["output_stride"],
                "feature map": f"{side}x{side}",
                "receptive field (px)": field.backbone,
            }
        )
    return pd.DataFrame(rows).set_index("setting")


def run_going_deeper(
    base: RunConfig,
    out_dir,
    *,
    seeds: Sequence[int] = SEEDS,
    progress: bool = False,
    keep_checkpoints: bool = True,
    workers: int = 1,
) -> pd.DataFrame:
    """Train every setting once per seed on `base` (the `going-deeper` recipe), `workers` runs
    at a time, and return the table (`going_deeper_table`). Seed-0 runs also store their
    predictions of the first validation images (predictions.png, VOC's palette, side by side)."""
    configs = {name: base.replace(**overrides) for name, overrides in SETTINGS.items()}
    rows = run_grid(
        configs,
        out_dir,
        seeds=seeds,
        measure=measure_run,
        progress=progress,
        keep_checkpoints=keep_checkpoints,
        workers=workers,
    )
    return going_deeper_table(rows)


def measure_run(name: str, config: RunConfig, run: Path, outcome: Outcome) -> dict:
    """A run's own columns: its feature map; seed 0 also stores its predictions."""
    if config.seed == 0 and outcome.finished and not outcome.reused:
        _store_predictions(outcome.model, config, run)
    side = feature_size(config.image_size, config.model.output_stride)
    return {"feature map": f"{side}x{side}"}


COLUMNS = (
    "experiment",
    "setting",
    "output_stride",
    "blocks",
    "seed",
    "feature map",
    "miou",
    "pixel_accuracy",
    "epochs",
    "train seconds",
    "arithmetic",
    "finished",
)


def going_deeper_table(rows: Sequence[Mapping]) -> pd.DataFrame:
    """One row per experiment, setting and seed (block7 OS16's runs appear under both)."""
    table = []
    for experiment in EXPERIMENTS:
        for row in rows:
            for name, stride, blocks in experiment_rows(row["setting"]):
                if name == experiment:
                    extra = {"experiment": name, "output_stride": stride, "blocks": blocks}
                    table.append({**row, **extra})
    return pd.DataFrame(table, columns=list(COLUMNS))


def _store_predictions(model, config: RunConfig, run: Path) -> None:
    """The first validation images' predicted classes, side by side, as a palette PNG."""
    transforms = transforms_for(config.val_transforms, config.image_size)
    val_set = VOCDataset(config.data_root, split=config.val_split, transforms=transforms)
    images = torch.stack([val_set[i][0] for i in range(min(EXAMPLE_IMAGES, len(val_set)))])
    images = model_input(images, torch.device("cpu"), torch.contiguous_format)
    model = model.cpu().float().eval()
    with torch.no_grad():
        predicted = model(images)["out"].argmax(1)  # (n, H, W)
    save_mask(np.concatenate(list(predicted.numpy()), axis=1), run / "predictions.png")


# --- the statistics -------------------------------------------------------------------------


def pairs() -> list[tuple[str, str]]:
    """The family of comparisons: every pair of output strides (block7), every pair of depths
    (output stride 16); block7 OS16 in both."""
    strides = [label(7, s) for s in OUTPUT_STRIDES]
    depths = [label(b, 16) for b in BLOCKS]
    return [(a, b) for i, a in enumerate(strides) for b in strides[i + 1 :]] + [
        (a, b) for i, a in enumerate(depths) for b in depths[i + 1 :]
    ]


def tests(table: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Paired t-tests seed by seed with Holm's correction over all `pairs()`."""
    runs = table.drop_duplicates(["setting", "seed"])
    return paired_tests(runs, pairs(), level=level)


# --- for the notebook -----------------------------------------------------------------------


def split_predictions(path) -> list[np.ndarray]:
    """The predictions a seed-0 run stored (predictions.png: square masks side by side), one
    (H, W) label array per validation image."""
    with Image.open(path) as image:
        strip = np.asarray(image)  # palette indices = class labels
    side = strip.shape[0]
    return [strip[:, k * side : (k + 1) * side] for k in range(strip.shape[1] // side)]


def estimate_minutes(base: RunConfig, seeds: Sequence[int], train_images: int) -> pd.DataFrame:
    """Before a long run: each setting's seconds per training step here (`seconds_per_step`, in
    the arithmetic the run would take) and the minutes its runs would take, validation aside."""
    rows = []
    for name, overrides in SETTINGS.items():
        config = base.replace(**overrides)
        seconds = seconds_per_step(config)
        steps = config.epochs * (train_images // config.batch_size)
        minutes = round(seconds * steps * len(seeds) / 60, 1)
        rows.append({"setting": name, "seconds per step": round(seconds, 3), "minutes": minutes})
    return pd.DataFrame(rows).set_index("setting")


def stage_table(base: RunConfig, output_strides: Sequence[int]) -> pd.DataFrame:
    """Each stage's stride and dilations at each output stride, read back from built models."""
    columns = {}
    for stride in output_strides:
        info = describe(build_model(base.model, output_stride=stride, pretrained_backbone=False))
        columns[f"OS {stride}"] = {
            name: f"stride {info['strides'][name][0]}, dilation {info['dilations'][name]}"
            for name in info["strides"]
        }
    return pd.DataFrame(columns)
