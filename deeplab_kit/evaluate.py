"""Evaluation: run a model over a loader, fill a ConfusionMatrix; score a saved checkpoint.

Protocols (what a score is compared against, recorded in every metrics.json):
- "original" (the default of `evaluate_checkpoint`, and the paper's, the VOC server's and
  mmsegmentation's): the scores are resized to each image's original size and compared with its
  original mask. The model may still see a resized image (the report's 256 x 256).
- "resized": compared with the mask resized by the validation preset (nearest neighbour), as the
  report most likely scored; cheaper, and not the number the paper's tables mean.

A prediction never depends on the other images of its batch: images of different sizes run one
by one at their own size (padding would reach ASPP's image pooling). Multi-scale (the paper's
0.5..1.75) averages the softmax probabilities over resized (and flipped) inputs.

    metrics = evaluate_checkpoint("runs/paper", "data", output_stride=8,
                                  scales=(0.5, 0.75, 1, 1.25, 1.5, 1.75), flip=True)
    inference_table("runs/paper", "data")      # the paper's Table 5: OS16, OS8, + MS, + flip
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset, RandomSampler
from tqdm.auto import tqdm

from deeplab_kit.config import RunConfig, output_strides
from deeplab_kit.data.classes import IGNORE_INDEX, save_mask
from deeplab_kit.data.loader import make_loader
from deeplab_kit.data.transforms import eval_collate, model_input, transforms_for, uint8_where_exact
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.files import ensure_writable, write_json
from deeplab_kit.metrics import ConfusionMatrix
from deeplab_kit.model import build_model, model_from_checkpoint
from deeplab_kit.runtime.arithmetic import Arithmetic, allowed, choose
from deeplab_kit.runtime.checkpoint import BEST, find_checkpoints, load_checkpoint, saved_arithmetic
from deeplab_kit.runtime.device import autocast, resolve_device
from deeplab_kit.runtime.lock import RunLock
from deeplab_kit.runtime.run_files import metrics_dict, read_confusion, write_tables

PROTOCOLS = ("original", "resized")


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    loss: float | None  # criterion averaged over valid pixels; None without a criterion
    arithmetic: Arithmetic  # what it ran in

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
    arithmetic: Arithmetic | None = None,
    criterion: Callable | None = None,
    export_dir: str | Path | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
) -> EvalResult:
    """Score `model` ({"out": (N, C, H, W)} at the input size; moved to `device` and put in
    eval mode, its mode restored after) on the (images, masks) batches of `loader`: images
    float32 normalised, or uint8 0..255 (normalised on the device with ImageNet's statistics);
    stacked (N, 3, H, W) with (N, H, W) masks, or lists from `transforms.eval_collate`, each
    listed image run alone at its own size. A mask of another size than its image (the
    "original" protocol) is compared with the scores resized bilinearly to the mask's size.

    `scales` and `flip` average the probabilities over resized and flipped views; `arithmetic`
    defaults to the device's rule (`runtime.arithmetic.choose`); `criterion` (mean-reduced,
    e.g. cross-entropy ignoring 255) sees the logits, or the log of the averaged probabilities,
    and its batch values are weighted by their valid pixels. `export_dir` writes each
    prediction at the size it is scored at as a VOC palette PNG named by image id (the VOC
    server's format; ids from `loader.dataset.ids`, else the index; padding is cropped off).
    Under torch.distributed each rank scores its shard and every rank gets the whole set's
    counts and loss (do not all-reduce `result.confusion` again).
    """
    device = resolve_device(device)
    arithmetic = arithmetic or choose(device)
    tally = _Tally(num_classes, ignore_index, device, criterion)
    export = _Export(loader, Path(export_dir), ignore_index) if export_dir is not None else None
    was_training = model.training
    model.to(device, memory_format=arithmetic.memory_format).eval()  # outside inference mode:
    try:  # the weights stay ordinary tensors
        with torch.inference_mode():
            for x, targets in _groups(tqdm(loader, desc="evaluate", disable=not progress)):
                x = model_input(x, device, arithmetic.memory_format)  # (n, 3, H, W)
                scores = _scores(model, x, scales, flip, arithmetic.dtype)  # (n, C, H, W)
                for logits, target, seen in _at_target_size(scores, targets, x, device):
                    tally.add(logits, target)
                    if export is not None:
                        export.write(logits.argmax(1), seen, target)
    finally:
        model.train(was_training)
    return tally.result(arithmetic)


class _Tally:
    """The confusion matrix and the criterion's sum over valid pixels, pooled over ranks."""

    def __init__(self, num_classes: int, ignore_index: int, device, criterion) -> None:
        self.confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
        self.ignore_index, self.criterion = ignore_index, criterion
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.valid_sum = torch.zeros((), dtype=torch.int64, device=device)

    def add(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.confusion.update(logits.argmax(1), target)
        if self.criterion is not None:
            valid = (target != self.ignore_index).sum()
            batch_loss = self.criterion(logits, target.long()).double()
            self.loss_sum += torch.where(valid > 0, batch_loss * valid, 0.0)  # no 0/0
            self.valid_sum += valid

    def result(self, arithmetic: Arithmetic) -> EvalResult:
        self.confusion.all_reduce()  # under torch.distributed: every rank gets all the counts
        if self.criterion is None:
            return EvalResult(self.confusion, None, arithmetic)
        totals = torch.stack([self.loss_sum, self.valid_sum.double()])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        loss = float(totals[0] / totals[1]) if totals[1] > 0 else float("nan")
        return EvalResult(self.confusion, loss, arithmetic)


def _groups(batches) -> Iterator[tuple[torch.Tensor, torch.Tensor | list]]:
    """What runs through the model at once: a stacked batch whole, a listed one image by image."""
    for images, masks in batches:
        if isinstance(images, torch.Tensor):
            yield images, masks
            continue
        for image, mask in zip(images, masks, strict=True):
            yield image[None], [mask] if isinstance(masks, list) else mask[None]


def _at_target_size(scores: torch.Tensor, targets, images, device) -> Iterator[tuple]:
    """(scores, targets, images) of one size: the batch as it is when the targets match it,
    otherwise each image's scores resized to its own mask."""
    if isinstance(targets, torch.Tensor) and targets.shape[-2:] == scores.shape[-2:]:
        yield scores, targets.to(device, non_blocking=True), images
        return
    for k, target in enumerate(targets):
        target = target.to(device, non_blocking=True)[None]  # (1, h, w)
        logits = scores[k : k + 1]
        if target.shape[-2:] != logits.shape[-2:]:
            logits = F.interpolate(
                logits, size=target.shape[-2:], mode="bilinear", align_corners=False
            )
        yield logits, target, images[k : k + 1]


def _scores(model, images, scales, flip, dtype) -> torch.Tensor:
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


class _Export:
    """Each prediction as a palette PNG named by its image id, at the size it was scored at."""

    def __init__(self, loader, folder: Path, ignore_index: int) -> None:
        self.ids, self.folder, self.ignore_index = _sample_ids(loader), folder, ignore_index
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, pred, images, masks) -> None:
        """Padding a loader added (image 0, mask void, at the bottom and right) is cropped off."""
        padded = images.shape[-2:] == pred.shape[-2:]  # else scored at the mask's original size
        for p, image, mask in zip(pred.cpu(), images.cpu(), masks.cpu(), strict=True):
            height, width = p.shape
            if padded:
                content = (mask != self.ignore_index) | (image != 0).any(0)  # (H, W)
                rows, cols = content.any(1).nonzero(), content.any(0).nonzero()
                height = int(rows[-1]) + 1 if len(rows) else 0
                width = int(cols[-1]) + 1 if len(cols) else 0
            labels = p[:height, :width].to(torch.uint8).numpy()
            save_mask(labels, self.folder / f"{next(self.ids)}.png")


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


def predicted_classes(
    model: torch.nn.Module, image: torch.Tensor, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """One prepared image's predicted classes: (3, H, W) -> (H, W) int64 on the CPU, in fp32;
    the model's own train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(image[None].to(device))
            logits = out["out"] if isinstance(out, Mapping) else out  # (1, C, H, W)
    finally:
        model.train(was_training)
    return logits.argmax(dim=1)[0].cpu()


def scored_as(config: RunConfig, scales=(1.0,), flip: bool = False) -> dict:
    """How a run's validation scores were made, for its metrics.json: the protocol ("resized":
    masks resized with the images by the val preset; "original": each image's own size), the
    output stride, the scales, the flip and the batch size."""
    resized = transforms_for(config.val_transforms, config.image_size).size is not None
    return {
        "protocol": "resized" if resized else "original",
        "output_stride": config.model.output_stride,
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        "batch_size": config.eval_batch_size or config.batch_size,
    }


def at_output_stride(model, output_stride: int):
    """The same weights at another output stride, as the paper evaluates its OS16 models at 8:
    the strides of the later stages become dilations (or back), and the ASPP rates scale by
    old / new output stride ((6, 12, 18) at 16 become (12, 24, 36) at 8); multi-grid is kept.
    Returns a new model in the old one's mode; the parameters are copied, not shared."""
    config = model.config
    factor = config.output_stride / output_stride
    rates = tuple(rate * factor for rate in config.atrous_rates)
    reachable = output_strides(config.extra_blocks, config.backbone_stages)
    if output_stride not in reachable or any(r != int(r) or r < 1 for r in rates):
        raise ValueError(
            f"cannot move a model at output stride {config.output_stride} with rates "
            f"{config.atrous_rates} to output stride {output_stride}: the rates would be {rates}"
        )
    rates = tuple(int(r) for r in rates)
    moved = build_model(config, output_stride=output_stride, atrous_rates=rates)
    moved.load_state_dict(model.state_dict())
    return moved.train(model.training)


# --- a saved model ----------------------------------------------------------------------------


class OriginalMasks(Dataset):
    """A dataset's samples with each mask replaced by the original, unresized one (for the
    "original" protocol): (preprocessed image, int64 (H0, W0) mask). Keeps the dataset's `ids`."""

    def __init__(self, dataset) -> None:
        self.dataset, self.ids = dataset, dataset.ids

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index):
        image, _ = self.dataset[index]
        _, mask = self.dataset.read_raw(index)
        return image, torch.from_numpy(mask).long()


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file as given, or for a run folder its newest checkpoint (best.pt if none)."""
    path = Path(path)
    if path.is_file():
        return path
    for folder in (path / "checkpoints", path):
        found = find_checkpoints(folder)
        if found:
            return found[0]
        if (folder / BEST).is_file():
            return folder / BEST
    raise FileNotFoundError(f"{path}: no checkpoint there (give a .pt file or a run folder)")


@dataclass(frozen=True)
class Scoring:
    """How `evaluate_checkpoint` scores a saved model.

    protocol: "original" or "resized" (the module's docstring says what each compares with).
    output_stride: another output stride than the model trained at (the paper trains at 16 and
        evaluates at 8; dilations and ASPP rates scale with it, `at_output_stride`); None: its own.
    amp, channels_last: None (both): the arithmetic the run trained in, so that a checkpoint
        scores as its run did; "auto": this machine's rule; or explicit.
    batch_size: None: the run's evaluation batch size.
    """

    split: str = "val"
    protocol: str = "original"
    output_stride: int | None = None
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    batch_size: int | None = None
    device: str | torch.device = "auto"
    amp: str | None = None
    channels_last: bool | str | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    out_dir: str | Path | None = None,
    export_dir: str | Path | None = None,
    progress: bool = True,
    **scoring,
) -> dict:
    """Scores of a saved model (a .pt file, or a run folder's newest checkpoint) on a split, its
    images preprocessed as its run's validation was; `scoring` is `Scoring`'s fields.

    Returns the metrics.json dict: the scores ("miou" in 0..1), "confusion_matrix" (C x C
    counts, rows = truth) and how they were made (protocol, output_stride, scales, flip,
    batch_size, checkpoint, split, arithmetic). With `out_dir`, writes metrics.json and the
    tables (metrics.md, metrics.csv, per_class.csv) there, holding the folder's lock; with
    `export_dir`, one VOC palette PNG per image id at its original size (the evaluation
    server's format; needs the original protocol).
    """
    how = Scoring(**scoring)
    if export_dir is not None and how.protocol != "original":
        raise ValueError(
            "exporting for the VOC server needs --protocol original (its PNGs are "
            "at each image's original size)"
        )
    for folder in (out_dir, export_dir):  # a folder that cannot be written fails before the work
        if folder is not None:
            ensure_writable(folder)
    # one writer per folder: another evaluation (or a training run) writing there is refused
    with RunLock(out_dir) if out_dir is not None else contextlib.nullcontext():
        metrics = _score_checkpoint(
            resolve_checkpoint(checkpoint), data_root, how, export_dir, progress
        )
        if out_dir is not None:
            write_json(Path(out_dir) / "metrics.json", metrics)
            write_tables(Path(out_dir), metrics)
    return metrics


def _score_checkpoint(path: Path, data_root, how: Scoring, export_dir, progress: bool) -> dict:
    state = load_checkpoint(path)
    config, model = RunConfig.from_dict(state["config"]), model_from_checkpoint(state, path)
    if how.output_stride not in (None, model.config.output_stride):
        model = at_output_stride(model, how.output_stride)
    loader = _scoring_loader(config, data_root, how)
    result = evaluate(
        model,
        loader,
        device=how.device,
        num_classes=config.model.num_classes,
        scales=how.scales,
        flip=how.flip,
        arithmetic=_scoring_arithmetic(state, how),
        progress=progress,
        export_dir=export_dir,
    )
    return metrics_dict(
        result.confusion,
        protocol=how.protocol,
        output_stride=model.config.output_stride,
        scales=list(how.scales),
        flip=how.flip,
        batch_size=loader.batch_size,
        checkpoint=str(path),
        split=how.split,
        arithmetic=str(result.arithmetic),
        **({"class names": state["classes"]["names"]} if state.get("classes") else {}),
    )


def _scoring_loader(config: RunConfig, data_root, how: Scoring):
    """The split preprocessed as the run's validation was, each image at its own size; with the
    original protocol, each with its original mask."""
    preset = transforms_for(config.val_transforms, config.image_size)
    dataset = VOCDataset(data_root, split=how.split, transforms=uint8_where_exact(preset))
    if how.protocol == "original" and preset.size is not None:  # the preset resizes the masks
        dataset = OriginalMasks(dataset)
    return make_loader(
        dataset,
        batch_size=how.batch_size or config.eval_batch_size or config.batch_size,
        num_workers=how.num_workers,
        collate_fn=eval_collate,
    )


def _scoring_arithmetic(state: dict, how: Scoring) -> Arithmetic:
    """The arithmetic the run trained in (when neither amp nor channels_last is given and this
    device has it: fp16 trained on a GPU, scored on a CPU, takes the rule), else the choice."""
    device = resolve_device(how.device)
    saved = saved_arithmetic(state) if how.amp is None and how.channels_last is None else None
    if saved and allowed(Arithmetic(**saved), device, "auto", "auto"):
        return Arithmetic(**saved)
    return choose(
        device, how.amp or "auto", "auto" if how.channels_last is None else how.channels_last
    )


# The paper's Table 5 (ResNet-101 on VOC val): inference at OS16, then OS8, then multi-scale
# inputs (0.5 .. 1.75), then left-right flips too. (name, output stride, scales, flip).
INFERENCE_SETTINGS = (
    ("OS16", 16, (1.0,), False),
    ("OS8", 8, (1.0,), False),
    ("OS8 + MS", 8, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), False),
    ("OS8 + MS + flip", 8, (0.5, 0.75, 1.0, 1.25, 1.5, 1.75), True),
)


def inference_table(checkpoint, data_root, *, settings=INFERENCE_SETTINGS, **options):
    """One checkpoint evaluated under each inference setting (the paper's Table 5): a row each
    with its output stride, scales, flip and the scores (mIoU in %), under one protocol."""
    rows = []
    for name, output_stride, scales, flip in settings:
        metrics = evaluate_checkpoint(
            checkpoint, data_root, output_stride=output_stride, scales=scales, flip=flip, **options
        )
        rows.append(
            {
                "inference": name,
                "output stride": output_stride,
                "scales": ", ".join(f"{s:g}" for s in scales),
                "flip": flip,
                "protocol": metrics["protocol"],
                "mIoU (%)": 100 * metrics["miou"],
                "pixel accuracy (%)": 100 * metrics["pixel_accuracy"],
            }
        )
    return pd.DataFrame(rows).set_index("inference")


def evaluate_runs(
    runs: Mapping[str, str | Path], data_root, *, device: str = "cpu", protocol: str = "original"
) -> dict:
    """{name: ConfusionMatrix on the val split} for each run folder that holds a trained model,
    scored under `protocol` (`evaluate_checkpoint`); a run without one is left out with a
    message."""
    scores = {}
    for name, run in runs.items():
        if not find_checkpoints(Path(run) / "checkpoints"):
            print(f"{name}: no trained model in {Path(run).name}; left out")
            continue
        metrics = evaluate_checkpoint(
            run, data_root, device=device, protocol=protocol, progress=False
        )
        scores[name] = read_confusion(metrics)
    return scores


def protocol_table(checkpoint, data_root, **options):
    """One saved model scored under each protocol: mIoU, pixel accuracy and the pixels scored
    (the original masks' labelled pixels, or the resized masks')."""
    rows = []
    for protocol in PROTOCOLS:
        metrics = evaluate_checkpoint(checkpoint, data_root, protocol=protocol, **options)
        rows.append(
            {
                "protocol": protocol,
                "mIoU (%)": 100 * metrics["miou"],
                "pixel accuracy (%)": 100 * metrics["pixel_accuracy"],
                "pixels scored": sum(map(sum, metrics["confusion_matrix"])),
            }
        )
    return pd.DataFrame(rows).set_index("protocol")
