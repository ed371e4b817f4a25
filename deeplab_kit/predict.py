"""Segment your own photos: a trained run (or torchvision's pretrained model) on image files.

    python -m deeplab_kit predict --checkpoint runs/report --out predicted photo.jpg folder/
    report = predict_files(model, input_size, ["photo.jpg", "folder/"], "predicted")

For each image, `DIR/<name>.png` holds the predicted classes at the image's own size as a
palette PNG with VOC's colours (what VOC's masks and its evaluation server use), and
`DIR/<name>-overlay.png` the photo | the prediction over it | a legend of the classes found. An
image is preprocessed as the model's validation was (resized to the run's input size for the
report's recipe, whole for the paper's) and its scores are resized back to the image's size.
A file that is not an image is named in one line and the others are still written.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

from deeplab_kit.config import RunConfig
from deeplab_kit.data.classes import VOC_CLASSES, VOC_PALETTE, save_mask
from deeplab_kit.data.transforms import normalize
from deeplab_kit.evaluate import resolve_checkpoint
from deeplab_kit.model import from_preset, load_torchvision_weights, model_from_checkpoint
from deeplab_kit.runtime.checkpoint import load_checkpoint
from deeplab_kit.runtime.device import resolve_device

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
TORCHVISION = "torchvision"  # --weights torchvision: deeplabv3_resnet50, COCO with VOC labels


@dataclass
class PredictReport:
    """What `predict_files` wrote, and the files it could not read (path, reason)."""

    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def load_predictor(checkpoint: str | Path | None = None, *, weights: str | None = None):
    """(model in eval mode, input size or None for the image's own) from a run folder or a
    checkpoint file, or torchvision's pretrained VOC-label model with `weights="torchvision"`
    (downloaded and hash-checked by torchvision; a state-dict path works offline)."""
    if weights is not None:
        model = from_preset("torchvision", aux_loss=True)
        if weights == TORCHVISION:
            weights = DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1
        load_torchvision_weights(model, weights)
        return model.eval(), 520  # torchvision's own evaluation resizes to 520
    if checkpoint is None:
        raise ValueError("predict needs --checkpoint RUN_OR_FILE or --weights torchvision")
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    return model_from_checkpoint(state, path).eval(), input_size(
        RunConfig.from_dict(state["config"])
    )


def input_size(config: RunConfig) -> int | None:
    """The side a run's validation resized its images to (None: whole images, as the paper's)."""
    return config.image_size if config.val_transforms == "report" else None


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
    size: (H, W) uint8. `input_size` resizes it first, as the run's validation did."""
    rgb = torch.from_numpy(np.array(_rgb(image))).permute(2, 0, 1)  # (3, H, W)
    device = resolve_device(device)
    model = model.to(device).eval()
    x = rgb[None]
    if input_size is not None:
        x = F.interpolate(x.float(), size=(input_size, input_size), mode="bilinear")
        x = x.round().clamp(0, 255).to(torch.uint8)  # as the report preset resizes: uint8
    x = normalize(x.to(device))
    with torch.inference_mode():
        scores = model(x)["out"].float()  # (1, C, h, w)
        scores = F.interpolate(scores, size=rgb.shape[-2:], mode="bilinear", align_corners=False)
    return scores.argmax(1)[0].to(torch.uint8).cpu().numpy()


def predict_files(
    model,
    input_size: int | None,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    device: str | torch.device = "auto",
) -> PredictReport:
    """Predict every image of `inputs` (files or folders) into `out_dir`: <name>.png (palette,
    the image's size) and <name>-overlay.png. Files that are not images are reported, not
    raised."""
    device = resolve_device(device)
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
        labels = predict_image(model, image, input_size, device)
        target = out_dir / f"{path.stem}.png"
        save_mask(labels, target)
        overlay(image, labels).save(out_dir / f"{path.stem}-overlay.png")
        report.written.append(target)
    return report


def _rgb(image) -> Image.Image:
    return image.convert("RGB") if isinstance(image, Image.Image) else Image.fromarray(image)


def overlay(image, labels: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The photo | the prediction blended over it | the classes present, with their colours."""
    image = _rgb(image)
    rgb = np.asarray(image, dtype=np.float32)
    colours = VOC_PALETTE[labels].astype(np.float32)
    blended = ((1 - alpha) * rgb + alpha * colours).astype(np.uint8)
    height, width = labels.shape
    legend = Image.new("RGB", (160, height), "white")
    draw = ImageDraw.Draw(legend)
    for row, label in enumerate(np.unique(labels)):
        top = 8 + 18 * row
        draw.rectangle([8, top, 22, top + 12], fill=tuple(int(c) for c in VOC_PALETTE[label]))
        name = VOC_CLASSES[label] if label < len(VOC_CLASSES) else str(label)
        draw.text((28, top), name, fill="black")
    canvas = Image.new("RGB", (2 * width + 160, height), "white")
    canvas.paste(image, (0, 0))
    canvas.paste(Image.fromarray(blended), (width, 0))
    canvas.paste(legend, (2 * width, 0))
    return canvas
