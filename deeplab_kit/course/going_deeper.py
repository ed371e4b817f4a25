"""The paper's central experiment at CPU scale: going deeper with atrous convolution.

The paper (Section 3.1) copies block4 of ResNet-50 three times in cascade (block5..block7) and
drops ASPP. Its Table 1 moves the output stride of block7 from 8 to 256 (at 256 no atrous
convolution at all, every stage strides); its Table 2 adds the cascaded blocks one by one at
output stride 16 (block4..block7). The kit runs each as its own stored experiment on the
`going-deeper` recipe (a quarter-width ResNet-26 and its cascaded copies, a 1x1 classifier):

    OUTPUT_STRIDE   block7 at output stride 8..256 on 136-pixel images: maps of 17 down to 1 cell
    CASCADED        blocks 4..7 at output stride 16 on 272-pixel images: a 17 x 17 map, where the
                    block-majority oracle leaves room above block4 and block5's and block6's taps
                    land mostly on the map (`geometry`)

    rows = run(OUTPUT_STRIDE, base, "runs/results/going-deeper", workers=2)
    table = pd.DataFrame(rows); tests(table, OUTPUT_STRIDE.planned)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from deeplab_kit.backbone import stage_plan
from deeplab_kit.config import RunConfig
from deeplab_kit.course.atrous import feature_size, receptive_field_from_config, valid_share
from deeplab_kit.course.experiments import Outcome, last_gain, paired_tests, run_grid
from deeplab_kit.data.classes import IGNORE_INDEX, save_mask
from deeplab_kit.data.synthetic import make_synthetic_voc
from deeplab_kit.data.transforms import model_input, transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.metrics import ConfusionMatrix
from deeplab_kit.model import build_model, describe

OUTPUT_STRIDES = (8, 16, 32, 64, 128, 256)
BLOCKS = (4, 5, 6, 7)
# The objects come from 5 of the 20 classes (aeroplane, bottle, cat, person, train), so that
# every run can leave the background plateau within the CPU budget: what these experiments
# change, the map's resolution and the network's depth, does not depend on the class count.
CLASSES = (1, 5, 8, 15, 19)
EXAMPLE_IMAGES = 4  # validation images whose predictions each seed-0 run stores


def label(blocks: int, output_stride: int) -> str:
    return f"block{blocks} OS{output_stride}"


@dataclass(frozen=True)
class Design:
    """One experiment: its settings (label -> overrides of the recipe), seeds, generated data,
    the contrasts planned before the make, the settings whose schedule is checked at twice the
    epochs."""

    name: str
    settings: dict
    seeds: tuple[int, ...]
    data: dict
    planned: tuple[tuple[str, str], ...]
    twice: tuple[str, ...]

    def configs(self, base: RunConfig) -> dict[str, RunConfig]:
        return {name: base.replace(**overrides) for name, overrides in self.settings.items()}


OUTPUT_STRIDE = Design(
    name="going-deeper",
    settings={label(7, s): dict(extra_blocks=3, output_stride=s) for s in OUTPUT_STRIDES},
    seeds=(0, 1, 2),
    data=dict(num_train=1100, num_val=120, size=136, seed=0, classes=CLASSES),
    planned=tuple((label(7, a), label(7, b)) for a, b in itertools.pairwise(OUTPUT_STRIDES)),
    twice=(label(7, 8), label(7, 32)),
)
CASCADED = Design(
    name="cascaded-blocks",
    settings={label(b, 16): dict(extra_blocks=b - 4, output_stride=16) for b in BLOCKS},
    seeds=(0, 1, 2, 3, 4),
    # 512 training images: a training step of 16 images at 272 px takes 0.84 s (block4) to
    # 1.04 s (block7) on one thread of a 2-core Intel Xeon with AMX in bf16, so 768 images
    # made the whole make about 156 minutes there, over its 150-minute budget; 512 make it
    # about 115.
    data=dict(num_train=512, num_val=120, size=272, seed=0, classes=CLASSES),
    planned=tuple((label(a, 16), label(b, 16)) for a, b in ((4, 5), (5, 6), (6, 7), (4, 7))),
    twice=(label(4, 16), label(7, 16)),
)
DESIGNS = {design.name: design for design in (OUTPUT_STRIDE, CASCADED)}
COLUMNS = (
    "setting", "output_stride", "blocks", "seed", "feature map",
    "miou", "pixel_accuracy", "last six epochs gain",
    "epochs", "train seconds", "arithmetic", "finished",
)  # fmt: skip


def run(design: Design, base: RunConfig, out_dir, *, seeds=None, labels=None, **grid) -> list[dict]:
    """Train every setting of `design` (or those named in `labels`) once per seed (the
    design's, unless `seeds`) on `base` (the `going-deeper` recipe at the design's image size);
    one row per (setting, seed). Seed-0 runs also store their predictions of the first
    validation images (predictions.png). `grid`: `run_grid`'s options."""
    settings = design.configs(base)
    if labels is not None:
        settings = {name: settings[name] for name in labels}
    return run_grid(settings, out_dir, seeds=seeds or design.seeds, measure=measure_run, **grid)


def measure_run(name: str, config: RunConfig, run_dir: Path, outcome: Outcome) -> dict:
    """A run's own columns: its geometry and how much it gained in its last six epochs; seed 0
    also stores its predictions."""
    if config.seed == 0 and outcome.finished and not outcome.reused:
        _store_predictions(outcome.model, config, run_dir)
    side = feature_size(config.image_size, config.model.output_stride)
    return {
        "output_stride": config.model.output_stride,
        "blocks": 4 + config.model.extra_blocks,
        "feature map": f"{side}x{side}",
        "last six epochs gain": last_gain(outcome.history, 6),
    }


def _store_predictions(model, config: RunConfig, run_dir: Path) -> None:
    """The first validation images' predicted classes, side by side, as a palette PNG."""
    transforms = transforms_for(config.val_transforms, config.image_size)
    val_set = VOCDataset(config.data_root, split=config.val_split, transforms=transforms)
    images = torch.stack([val_set[i][0] for i in range(min(EXAMPLE_IMAGES, len(val_set)))])
    images = model_input(images, torch.device("cpu"), torch.contiguous_format)
    model = model.cpu().float().eval()
    with torch.no_grad():
        predicted = model(images)["out"].argmax(1)  # (n, H, W)
    save_mask(np.concatenate(list(predicted.numpy()), axis=1), run_dir / "predictions.png")


def split_predictions(path) -> list[np.ndarray]:
    """The predictions a seed-0 run stored (predictions.png: square masks side by side), one
    (H, W) label array per validation image."""
    with Image.open(path) as image:
        strip = np.asarray(image)  # palette indices = class labels
    side = strip.shape[0]
    return [strip[:, k * side : (k + 1) * side] for k in range(strip.shape[1] // side)]


def tests(table: pd.DataFrame, pairs: Sequence[tuple[str, str]], level: float = 0.95):
    """Paired t-tests seed by seed with Holm's correction over `pairs` (the planned ones, or any
    other family: say which)."""
    return paired_tests(table, list(pairs), level=level)


def cell_majority(mask: np.ndarray, side: int) -> np.ndarray:
    """The block-majority oracle's prediction of one mask for a feature map `side` cells wide:
    the image cut into side x side blocks as upsampling spreads a map over it (cell j of n
    covers pixels j * n_pixels / side up to the next cell's), each block labelled everywhere
    with its most frequent labelled class (void left out; a block of void alone: background).
    (H, W) labels."""
    mask = np.asarray(mask)
    out = np.zeros_like(mask)
    rows, cols = (np.linspace(0, n, side + 1).round().astype(int) for n in mask.shape)
    for top, bottom in zip(rows[:-1], rows[1:], strict=True):
        for left, right in zip(cols[:-1], cols[1:], strict=True):
            block = mask[top:bottom, left:right]
            labels = block[block != IGNORE_INDEX]
            out[top:bottom, left:right] = np.bincount(labels).argmax() if labels.size else 0
    return out


def map_oracle(masks, side: int, num_classes: int = 21) -> float:
    """A rough ceiling on what a model whose feature map is `side` cells wide can score: the mIoU
    (0..1) of the block-majority oracle (`cell_majority`) over `masks`. Rough, because bilinear
    upsampling of logits can draw edges finer than a cell, so a model may pass it."""
    confusion = ConfusionMatrix(num_classes)
    for mask in masks:
        mask = np.asarray(mask)
        confusion.update(torch.from_numpy(cell_majority(mask, side)), torch.from_numpy(mask))
    return confusion.compute()["miou"]


def validation_masks(config: RunConfig) -> list[np.ndarray]:
    """The validation split's masks at their own size (the generated sets' are the images')."""
    dataset = VOCDataset(config.data_root, split=config.val_split)
    return [dataset.read_raw(i)[1] for i in range(len(dataset))]


def geometry(design: Design, base: RunConfig, masks=None) -> pd.DataFrame:
    """What each setting is before any training: its feature map, the block-majority oracle on
    it (from `masks`, the validation masks, when given), the theoretical field of one output,
    and for each cascaded block (layer5..layer7) its rate and the share of its 3x3 taps that
    land on the map (the paper's 513-pixel crops give a 33 x 33 map: 85%, 70% and 46%)."""
    rows = []
    for name, config in design.configs(base).items():
        side = feature_size(config.image_size, config.model.output_stride)
        row = {"setting": name, "feature map": f"{side}x{side}"}
        if masks is not None:
            row["oracle mIoU (%)"] = round(100 * map_oracle(masks, side), 1)
        row["receptive field (px)"] = receptive_field_from_config(config.model).backbone
        for stage, units in stage_plan(config.model)[4:]:
            rate = units[-1][1]
            row[f"{stage} rate"] = rate
            row[f"{stage} taps on the map"] = round(valid_share(side, rate), 2)
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting")


def design_geometry(design: Design, root) -> pd.DataFrame:
    """`geometry` of a design as its make will store it, before any training: its validation
    images generated into `root` (the training split, which the oracle does not read, cut to one
    image; each split is drawn from its own seeds, so the validation masks are the make's)."""
    make_synthetic_voc(root, **{**design.data, "num_train": 1})
    base = RunConfig.from_recipe(
        "going-deeper", data_root=str(root), image_size=design.data["size"]
    )
    return geometry(design, base, validation_masks(base))


def by_map_side(table: pd.DataFrame, geometry: Sequence[dict], quoted: dict, crop: int = 513):
    """The output-stride experiment keyed by the feature map's side in cells: ({side: each seed's
    mIoU in %}, {side of the paper's map on `crop`-pixel crops: its quoted mIoU}, {side: the
    block-majority oracle in %}), for `atrous_figures.plot_map_size`."""
    side = {row["setting"]: int(row["feature map"].split("x")[0]) for row in geometry}
    measured = {side[name]: list(100 * group["miou"]) for name, group in table.groupby("setting")}
    paper = {feature_size(crop, stride): value for stride, value in quoted.items()}
    oracle = {side[row["setting"]]: row["oracle mIoU (%)"] for row in geometry}
    return measured, paper, oracle


def map_size_shares(table: pd.DataFrame, geometry: Sequence[dict], quoted: dict, crop: int = 513):
    """What `atrous_figures.plot_map_size` draws, as a table: one row per map side (cells), the
    kit's mean over seeds, the paper's quoted value and the oracle, each as a share (%) of its
    own curve's best; empty where a curve has no map of that side."""
    measured, paper, oracle = by_map_side(table, geometry, quoted, crop)
    curves = {
        "measured": {side: float(np.mean(values)) for side, values in measured.items()},
        "paper, quoted": paper,
        "oracle": oracle,
    }
    shares = {
        f"{name} (% of best)": {side: 100 * v / max(curve.values()) for side, v in curve.items()}
        for name, curve in curves.items()
    }
    return pd.DataFrame(shares).sort_index().rename_axis("map side (cells)")


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
