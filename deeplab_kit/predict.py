"""Segment your own photos: a trained run (or torchvision's pretrained model) on image files.

    python -m deeplab_kit predict --checkpoint runs/report --out predicted photo.jpg folder/
    report = predict_files(load_predictor("runs/report"), ["photo.jpg", "folder/"], "predicted")

For each image, `DIR/<name>.png` holds the predicted classes at the image's own size as a
palette PNG with VOC's colours (what VOC's masks and its evaluation server use), and
`DIR/<name>-overlay.png` the photo | the prediction over it | a legend of the classes found. An
image is preprocessed as the model's validation was (resized to the run's input size for the
report's recipe, whole for the paper's) and its scores are resized back to the image's size.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights
from torchvision.transforms.v2 import functional as F_v2

from deeplab_kit.config import RunConfig
from deeplab_kit.data.classes import VOC, Classes, classes_for, save_mask
from deeplab_kit.data.transforms import normalize
from deeplab_kit.evaluate import resolve_checkpoint
from deeplab_kit.model import from_preset, load_torchvision_weights, model_from_checkpoint
from deeplab_kit.runtime.checkpoint import load_checkpoint
from deeplab_kit.runtime.device import resolve_device

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TORCHVISION = "torchvision"  # --weights torchvision: deeplabv3_resnet50, COCO with VOC labels
MAX_INPUT_SIDE = 1024  # a model of whole images sees a big photo scaled to this longer side
VIEW_SIDE = 2000  # the overlay is for looking at: its longer side at most this
LEGEND = 160  # the overlay's legend column (px)


@dataclass
class PredictReport:
    """What `predict_files` wrote, and the files it could not read (path, reason)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


class Predictor(NamedTuple):
    """A model ready to predict: in eval mode, the side its validation resized images to (None:
    whole images), and its classes' names and colours (from the checkpoint: no data needed)."""

    model: torch.nn.Module
    input_size: int | None
    classes: Classes


def load_predictor(
    checkpoint: str | Path | None = None, *, weights: str | None = None
) -> Predictor:
    """A `Predictor` from a run folder or a checkpoint file, or torchvision's pretrained
    VOC-label model with `weights="torchvision"` (downloaded and hash-checked by torchvision;
    a state-dict path works offline)."""
    if weights is not None:
        model = from_preset("torchvision", aux_loss=True)
        if weights == TORCHVISION:
            weights = DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
        load_torchvision_weights(model, weights)
        return Predictor(model.eval(), 520, VOC)  # torchvision's own evaluation resizes to 520
    if checkpoint is None:
        raise ValueError("predict needs --checkpoint RUN_OR_FILE or --weights torchvision")
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    model = model_from_checkpoint(state, path).eval()
    saved = state.get("classes")
    classes = Classes.from_dict(saved) if saved else classes_for(model.config.num_classes)
    config = RunConfig.from_dict(state["config"])  # its validation resized, or took whole images
    size = config.image_size if config.val_transforms == "report" else None
    return Predictor(model, size, classes)


def image_files(inputs: Iterable[str | Path]) -> list[Path]:
    """The files to predict: each file as given, each folder's images (sorted)."""
    found = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(item)
    return found


def predict_image(model, image, input_size: int | None, device="cpu") -> np.ndarray:
    """The predicted classes of one image (a PIL image or an (H, W, 3) uint8 array) at its own
    size: (H, W) uint8. `input_size` resizes it first, as the run's validation did; a model of
    whole images sees it at most `MAX_INPUT_SIDE` on its longer side. Memory stays bounded for
    any photo: the scores are resized back to the photo's size a strip of rows at a time."""
    rgb = torch.from_numpy(np.array(_rgb(image))).permute(2, 0, 1)  # (3, H, W) uint8
    size = (input_size, input_size) if input_size else _within(rgb.shape[-2:], MAX_INPUT_SIDE)
    same = tuple(size) == tuple(rgb.shape[-2:])
    x = rgb if same else F_v2.resize(rgb, list(size), antialias=True)
    device = resolve_device(device)
    model = model.to(device).eval()
    with torch.inference_mode():
        scores = model(normalize(x[None].to(device)))["out"][0].float().cpu()  # (C, h, w)
    return upsampled_argmax(scores, tuple(rgb.shape[-2:]))


def _within(size, longest: int) -> tuple[int, int]:
    """`size` scaled down (never up) so that its longer side is at most `longest`."""
    scale = min(1.0, longest / max(size))
    return tuple(max(1, round(side * scale)) for side in size)


def upsampled_argmax(scores: torch.Tensor, size: tuple[int, int], rows: int = 256) -> np.ndarray:
    """The argmax over classes of (C, h, w) scores bilinearly resized to `size` (H, W), as
    `F.interpolate(..., align_corners=False)` would give, computed `rows` output rows at a time
    (bilinear is separable: columns first, then each strip's rows), so a 9000 x 9000 photo
    never holds its 21 full-size score maps at once: (H, W) uint8."""
    height, width = size
    wide = F.interpolate(scores[None], size=(scores.shape[1], width), mode="bilinear")[0]
    source = ((torch.arange(height) + 0.5) * scores.shape[1] / height - 0.5).clamp(min=0)
    top = source.floor().long().clamp(max=scores.shape[1] - 1)
    below, weight = (top + 1).clamp(max=scores.shape[1] - 1), (source - top)[None, :, None]
    labels = np.empty((height, width), dtype=np.uint8)
    for start in range(0, height, rows):
        part = slice(start, start + rows)
        strip = wide[:, top[part]] * (1 - weight[:, part]) + wide[:, below[part]] * weight[:, part]
        labels[part] = strip.argmax(0).to(torch.uint8).numpy()
    return labels


def predict_files(
    predictor: Predictor,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
) -> PredictReport:
    """Predict every image of `inputs` (files or folders) into `out_dir`: <name>.png (palette in
    the classes' colours, the image's size) and <name>-overlay.png. Files that are not images
    are reported, not raised."""
    device = resolve_device(device)
    model, size, classes = predictor
    model = model.to(device).eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = PredictReport()
    for path in image_files(inputs):
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            reason = "not an image" if isinstance(error, UnidentifiedImageError) else str(error)
            report.failed.append((path, reason))
            continue
        labels = predict_image(model, image, size, device)
        target = out_dir / f"{path.stem}.png"
        save_mask(labels, target, classes.palette)
        overlay(image, labels, classes).save(out_dir / f"{path.stem}-overlay.png")
        report.written.append(target)
    return report


def _rgb(image) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image)


def overlay(
    image, labels: np.ndarray, classes: Classes = VOC, alpha: float = 0.5, longest: int = VIEW_SIDE
) -> Image.Image:
    """A viewing image, at most `longest` pixels on its longer side: the photo | the prediction
    blended over it | the classes present, with their colours (the class PNG keeps the photo's
    own size; this is for looking at)."""
    image = _rgb(image)
    height, width = labels.shape
    scale = min(1.0, (longest - LEGEND) / (2 * width), longest / height)  # legend unscaled
    view = (max(1, round(width * scale)), max(1, round(height * scale)))
    photo = image.resize(view, Image.Resampling.BILINEAR)
    shown = np.asarray(Image.fromarray(labels).resize(view, Image.Resampling.NEAREST))
    colours = classes.palette[shown].astype(np.float32)
    blended = ((1 - alpha) * np.asarray(photo, dtype=np.float32) + alpha * colours).astype(np.uint8)
    canvas = Image.new("RGB", (2 * view[0] + LEGEND, view[1]), "white")
    canvas.paste(photo, (0, 0))
    canvas.paste(Image.fromarray(blended), (view[0], 0))
    _draw_legend(ImageDraw.Draw(canvas), np.unique(labels), classes, left=2 * view[0])
    return canvas


def _draw_legend(draw: ImageDraw.ImageDraw, present, classes: Classes, left: int) -> None:
    for row, label in enumerate(present):
        top = 8 + 18 * row
        box = [left + 8, top, left + 22, top + 12]
        draw.rectangle(box, fill=tuple(int(c) for c in classes.palette[label]))
        name = classes.names[label] if label < len(classes.names) else str(label)
        draw.text((left + 28, top), name, fill="black")
