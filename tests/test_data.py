"""Tests of deeplab_kit.data: VOC-format trees are generated here; nothing touches the network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deeplab_kit.data import VOC_PALETTE, VOCDataset, make_loader, make_transforms

# --- a VOC-format tree, written by the tests -------------------------------------------------


def _draw_sample(rng: np.random.Generator, width: int, height: int):
    """A noisy RGB image and its labels: background plus a few rectangles, each with a 1-pixel
    void (255) border as VOC draws around objects."""
    labels = np.zeros((height, width), dtype=np.uint8)
    for _ in range(3):
        cls = int(rng.integers(1, 21))
        h, w = int(rng.integers(height // 4, height // 2)), int(rng.integers(width // 4, width // 2))
        top, left = int(rng.integers(1, height - h - 1)), int(rng.integers(1, width - w - 1))
        labels[top - 1 : top + h + 1, left - 1 : left + w + 1] = 255
        labels[top : top + h, left : left + w] = cls
    colours = rng.integers(0, 256, size=(256, 3), dtype=np.uint8)
    image = colours[labels] + rng.integers(0, 30, size=(height, width, 3), dtype=np.uint8)
    return image, labels


def save_mask(labels: np.ndarray, path: Path) -> None:
    mask = Image.fromarray(labels)
    mask.putpalette(VOC_PALETTE.tobytes())
    mask.save(path)


def make_voc_tree(root: Path, splits: dict[str, int], *, seed: int = 0, sizes=((48, 36), (40, 52))) -> Path:
    """root/VOCdevkit/VOC2012 with JPEG images, palette PNG masks and one list file per split."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for split, count in splits.items():
        ids = [f"2012_{split}_{i:04d}" for i in range(count)]
        for i, sample_id in enumerate(ids):
            image, labels = _draw_sample(rng, *sizes[i % len(sizes)])
            Image.fromarray(image).save(voc / "JPEGImages" / f"{sample_id}.jpg", quality=90)
            save_mask(labels, voc / "SegmentationClass" / f"{sample_id}.png")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


@pytest.fixture(scope="module")
def voc_root(tmp_path_factory) -> Path:
    return make_voc_tree(tmp_path_factory.mktemp("voc"), {"train": 12, "val": 5})
