"""Evaluation: run a model over a loader, fill a ConfusionMatrix, optionally at several scales.

Single scale is one forward pass per batch. Multi-scale (the paper's 0.5..1.75) resizes the
batch, runs the model, resizes its scores back to the input size and averages the softmax
probabilities over scales (and over the horizontally flipped input when `flip=True`).
Padding added by a loader's collate (image 0, mask 255) is ignored through the mask.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import IterableDataset, RandomSampler

from deeplab_kit.device import amp_dtype, autocast, resolve_device
from deeplab_kit.metrics import ConfusionMatrix
from deeplab_kit.transforms import model_input
from deeplab_kit.voc import IGNORE_INDEX, VOC_PALETTE


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    loss: float | None  # criterion averaged over valid pixels; None without a criterion

    @property
    def scores(self) -> dict:
        return self.confusion.compute()


def evaluate(
    model: torch.nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str,
    num_classes: int = 21,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    amp: str = "auto",
    channels_last: bool = True,
    criterion: Callable | None = None,
    export_dir: str | Path | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
) -> EvalResult:
    """Score `model` on the (images, masks) batches of `loader`: images float32 normalised, or
    uint8 0..255 (normalised here, on the device, with ImageNet's statistics).

    Args:
        model: returns {"out": (N, C, H, W)} at the input size. Moved to `device` (and to
            channels_last when asked), put in eval mode, and returned to its previous mode after.
        device: where to compute ("auto", "cpu", "cuda", a torch.device).
        scales: input scales; probabilities are averaged at the input resolution.
        flip: also average over the horizontally flipped input.
        amp: "auto", "bf16", "fp16" or "off" (see deeplab_kit.device.amp_dtype).
        criterion: e.g. nn.CrossEntropyLoss(ignore_index=255), mean-reduced. With one scale and no
            flip it sees the logits; otherwise the log of the averaged probabilities (so
            cross-entropy becomes the log-loss of the averaged prediction). Batch values are
            weighted by their valid pixels, giving the mean over all valid pixels.
        export_dir: write each prediction as a VOC palette PNG named by image id (the format of
            VOC's evaluation server), cropped to the image where padding shows. Ids come from
            `loader.dataset.ids` when it exists, else the sample index.

    Under torch.distributed each rank evaluates its loader's share and the counts and the loss
    are summed over ranks before returning: every rank gets the scores of the whole set (so do
    not all-reduce `result.confusion` again).
    """
    device = resolve_device(device)
    dtype = amp_dtype(device, amp)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
    sample_ids = _sample_ids(loader) if export_dir is not None else None
    if export_dir is not None:
        export_dir = Path(export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    valid_sum = torch.zeros((), dtype=torch.int64, device=device)

    batches = loader
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(loader, desc="evaluate", leave=False)

    was_training = model.training
    model.to(device, memory_format=memory_format).eval()
    try:
        with torch.inference_mode():
            for images, masks in batches:
                images = model_input(images, device, memory_format)  # (N, 3, H, W)
                masks = masks.to(device, non_blocking=True)  # (N, H, W)
                scores = _predict(model, images, scales, flip, dtype)  # (N, C, H, W) float32
                pred = scores.argmax(1)  # (N, H, W)
                confusion.update(pred, masks)
                if criterion is not None:
                    valid = (masks != ignore_index).sum()
                    batch_loss = criterion(scores, masks.long()).double()
                    loss_sum += torch.where(valid > 0, batch_loss * valid, 0.0)  # skip 0/0
                    valid_sum += valid
                if sample_ids is not None:
                    _export(pred, images, masks, sample_ids, export_dir, ignore_index)
    finally:
        model.train(was_training)

    confusion.all_reduce()  # under torch.distributed: every rank gets the whole set's counts
    loss = None
    if criterion is not None:
        if dist.is_available() and dist.is_initialized():
            totals = torch.stack([loss_sum, valid_sum.double()])
            dist.all_reduce(totals)
            loss_sum, valid_sum = totals
        loss = float(loss_sum / valid_sum) if valid_sum > 0 else float("nan")
    return EvalResult(confusion=confusion, loss=loss)


def _predict(model, images, scales, flip, dtype) -> torch.Tensor:
    """Logits for one scale without flip; else log of the probabilities averaged over views."""
    size = images.shape[-2:]
    if tuple(scales) == (1.0,) and not flip:
        with autocast(images.device, dtype):
            logits = model(images)["out"].float()
        if logits.shape[-2:] != size:  # a model that leaves its output at a lower resolution
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return logits
    probs = None
    for scale in scales:
        x = images
        if scale != 1.0:
            x = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
        if flip:
            x = torch.cat([x, x.flip(-1)])  # both views in one forward pass
        with autocast(images.device, dtype):
            logits = model(x)["out"]
        logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
        p = logits.softmax(1)
        if flip:
            p_plain, p_flipped = p.chunk(2)
            p = p_plain + p_flipped.flip(-1)
        probs = p if probs is None else probs + p
    views = len(scales) * (2 if flip else 1)
    return (probs / views).clamp_min(torch.finfo(torch.float32).tiny).log()


def _sample_ids(loader) -> Iterator[str]:
    """The id of each sample, in the order the loader yields them (checked before any work)."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    sampler = getattr(batch_sampler, "sampler", None) or getattr(loader, "sampler", None)
    if isinstance(sampler, RandomSampler):  # a second pass would not see the same order
        raise ValueError("exporting predictions needs a loader that does not shuffle")
    dataset = getattr(loader, "dataset", None)
    ids = getattr(dataset, "ids", None)
    if isinstance(dataset, IterableDataset) or (batch_sampler is None and sampler is None):
        indices = itertools.count()  # a running index
    elif batch_sampler is not None:  # the dataset indices the loader will fetch, in order
        indices = itertools.chain.from_iterable(batch_sampler)
    else:
        indices = iter(sampler)
    return (str(ids[i]) if ids is not None else f"{i:06d}" for i in indices)


def _export(pred, images, masks, sample_ids, export_dir: Path, ignore_index: int) -> None:
    """One palette PNG per image, cropped to where the image is (padding: image 0, mask void)."""
    for p, image, mask in zip(pred.cpu(), images.cpu(), masks.cpu(), strict=True):
        # Padding sits at the bottom and right: rows/columns that are void and all-zero image.
        content = (mask != ignore_index) | (image != 0).any(0)  # (H, W)
        rows = content.any(1).nonzero()
        cols = content.any(0).nonzero()
        height = int(rows[-1]) + 1 if len(rows) else 0
        width = int(cols[-1]) + 1 if len(cols) else 0
        labels = p[:height, :width].to(torch.uint8).numpy()
        png = Image.fromarray(np.ascontiguousarray(labels))  # "L"; the palette makes it "P"
        png.putpalette(VOC_PALETTE.flatten().tolist())
        png.save(export_dir / f"{next(sample_ids)}.png")
