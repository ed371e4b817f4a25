"""Evaluation: run a model over a loader, fill a ConfusionMatrix; score a saved checkpoint.

Protocols (what a score is compared against, recorded in every metrics.json):
- "original" (the default of `evaluate_checkpoint`, and the paper's, the VOC server's and
  mmsegmentation's): the scores are resized to each image's original size and compared with its
  original mask. The model may still see a resized image (the report's 256 x 256).
- "resized": compared with the mask resized by the validation preset (nearest neighbour), as the
  report most likely scored; cheaper, and not the number the paper's tables mean.

A prediction never depends on the other images of its batch: a batch of one size runs at once;
images of different sizes come from `transforms.eval_collate` as lists and run one by one at
their own size (padding would reach ASPP's image pooling). Multi-scale (the paper's 0.5..1.75)
resizes the input, runs the model, resizes its scores back and averages the softmax
probabilities over scales (and over the horizontally flipped input when `flip=True`).

    metrics = evaluate_checkpoint("runs/paper", "data", output_stride=8,
                                  scales=(0.5, 0.75, 1, 1.25, 1.5, 1.75), flip=True)
    inference_table("runs/paper", "data")      # the paper's Table 5: OS16, OS8, + MS, + flip
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import Dataset, IterableDataset, RandomSampler

if TYPE_CHECKING:
    from deeplab_kit.training.config import RunConfig

from tqdm.auto import tqdm

from deeplab_kit.backbone import output_strides
from deeplab_kit.data.classes import IGNORE_INDEX, save_mask
from deeplab_kit.data.loader import make_loader
from deeplab_kit.data.transforms import eval_collate, model_input, transforms_for, uint8_where_exact
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.files import ensure_writable, write_json
from deeplab_kit.metrics import ConfusionMatrix
from deeplab_kit.model import build_model
from deeplab_kit.training import distributed, fastpath
from deeplab_kit.training.checkpoint import (
    BEST,
    find_checkpoints,
    load_checkpoint,
    model_from_state,
)
from deeplab_kit.training.config import RunConfig
from deeplab_kit.training.device import autocast, resolve_device
from deeplab_kit.training.lock import RunLock
from deeplab_kit.training.run_files import metrics_dict, read_confusion, write_tables

PROTOCOLS = ("original", "resized")


@dataclass
class EvalResult:
    confusion: ConfusionMatrix
    loss: float | None  # criterion averaged over valid pixels; None without a criterion
    choice: fastpath.Choice | None = None  # the path it ran in (None: no batch at all)

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
    channels_last: bool | str = "auto",
    path: fastpath.Path | None = None,
    criterion: Callable | None = None,
    export_dir: str | Path | None = None,
    ignore_index: int = IGNORE_INDEX,
    progress: bool = False,
) -> EvalResult:
    """Score `model` on the (images, masks) batches of `loader`: images float32 normalised, or
    uint8 0..255 (normalised here, on the device, with ImageNet's statistics).

    A batch is (N, 3, H, W) images with (N, H, W) masks, or lists of tensors (from
    `transforms.eval_collate`, for images of different sizes): each listed image is run alone
    at its own size. A mask of another size than its image (the "original" protocol) is
    compared with the scores resized (bilinearly) to the mask's size.

    Args:
        model: returns {"out": (N, C, H, W)} at the input size. Moved to `device` (and to
            channels_last when that is the path), put in eval mode, and returned to its
            previous mode after.
        device: where to compute ("auto", "cpu", "cuda", "mps", a torch.device).
        scales: input scales; probabilities are averaged at the input resolution.
        flip: also average over the horizontally flipped input.
        amp, channels_last: "auto" (the fastest path that keeps accuracy, timed at the first
            batch's shape and remembered, see deeplab_kit.training.fastpath) or explicit settings;
            `path` fixes both (training validates in its own path).
        criterion: e.g. nn.CrossEntropyLoss(ignore_index=255), mean-reduced. With one scale and no
            flip it sees the logits; otherwise the log of the averaged probabilities (so
            cross-entropy becomes the log-loss of the averaged prediction). Batch values are
            weighted by their valid pixels, giving the mean over all valid pixels.
        export_dir: write each prediction, at the size it is scored at, as a VOC palette PNG
            named by image id (the format of VOC's evaluation server; padding a loader added is
            cropped off). Ids come from `loader.dataset.ids` when it exists, else the index.

    Under torch.distributed each rank evaluates its loader's share and the counts and the loss
    are summed over ranks before returning: every rank gets the scores of the whole set (so do
    not all-reduce `result.confusion` again).
    """
    device = resolve_device(device)
    confusion = ConfusionMatrix(num_classes, ignore_index, device=device)
    sample_ids = _sample_ids(loader) if export_dir is not None else None
    if export_dir is not None:
        export_dir = Path(export_dir)
        export_dir.mkdir(parents=True, exist_ok=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    valid_sum = torch.zeros((), dtype=torch.int64, device=device)

    batches = tqdm(loader, desc="evaluate", leave=False) if progress else loader
    was_training = model.training
    choice = fastpath.Choice(path, "given") if path else None
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for images, masks in batches:
                for x, targets in _groups(images, masks):
                    if choice is None:  # the first batch's shape decides the path
                        choice = eval_path(model, device, amp, channels_last, tuple(x.shape))
                    x = model_input(x, device, choice.path.memory_format)  # (n, 3, H, W)
                    with torch.inference_mode(False):  # weights stay ordinary tensors (autograd)
                        model.to(memory_format=choice.path.memory_format)
                    scores = _predict(model, x, scales, flip, choice.path.dtype)  # (n, C, H, W)
                    for logits, target, seen in _at_target_size(scores, targets, x, device):
                        pred = logits.argmax(1)  # (m, h, w)
                        confusion.update(pred, target)
                        if criterion is not None:
                            valid = (target != ignore_index).sum()
                            batch_loss = criterion(logits, target.long()).double()
                            loss_sum += torch.where(valid > 0, batch_loss * valid, 0.0)  # no 0/0
                            valid_sum += valid
                        if sample_ids is not None:
                            _export(pred, seen, target, sample_ids, export_dir, ignore_index)
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
    return EvalResult(confusion=confusion, loss=loss, choice=choice)


def eval_path(model, device: torch.device, amp: str, channels_last, shape) -> fastpath.Choice:
    """The evaluation path for `model` at input `shape`: given, CUDA's rule, or timed (a few
    forward passes of a copy in each candidate path, the logits checked against fp32's)."""
    if device.type == "cuda":
        return fastpath.Choice(fastpath.cuda_rule(device, amp, channels_last), "rule")
    paths = fastpath.candidates(device, amp, channels_last)
    if len(paths) == 1:
        return fastpath.Choice(paths[0], "given")
    key = fastpath.cache_key(
        device, mode="eval", shape=list(shape), model=getattr(model, "config", type(model).__name__)
    )
    images = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    def run(path: fastpath.Path) -> tuple[float, torch.Tensor]:
        copied = copy.deepcopy(model).eval().to(device, memory_format=path.memory_format)
        x = images.to(device).contiguous(memory_format=path.memory_format)
        outputs = []

        def forward() -> None:
            with torch.inference_mode(), autocast(device, path.dtype):
                outputs.append(copied(x)["out"].float())

        return fastpath.median_seconds(forward, device), outputs[0].cpu()

    about = {"mode": "eval", "shape": list(shape), "model": getattr(model, "config", {})}
    return fastpath.choose(key, paths, run, tolerance=fastpath.EVAL_AGREEMENT, about=about)


def predict(
    model: torch.nn.Module, image: torch.Tensor, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """One image's predicted classes: (3, H, W) -> (H, W) int64 on the CPU; the model's own
    train/eval mode is restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(image[None].to(device))
            logits = out["out"] if isinstance(out, Mapping) else out  # (1, C, H, W)
    finally:
        model.train(was_training)
    return logits.argmax(dim=1)[0].cpu()


def _groups(images, masks) -> Iterator[tuple[torch.Tensor, torch.Tensor | list]]:
    """What runs through the model at once: a stacked batch whole, a listed one image by image."""
    if isinstance(images, torch.Tensor):
        yield images, masks
        return
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
    """One palette PNG per image at the size it was scored at; padding a loader added (image 0,
    mask void, at the bottom and right) is cropped off."""
    padded = images.shape[-2:] == pred.shape[-2:]  # else scored at the mask's original size
    for p, image, mask in zip(pred.cpu(), images.cpu(), masks.cpu(), strict=True):
        height, width = p.shape
        if padded:
            content = (mask != ignore_index) | (image != 0).any(0)  # (H, W)
            rows, cols = content.any(1).nonzero(), content.any(0).nonzero()
            height = int(rows[-1]) + 1 if len(rows) else 0
            width = int(cols[-1]) + 1 if len(cols) else 0
        save_mask(
            p[:height, :width].to(torch.uint8).numpy(), export_dir / f"{next(sample_ids)}.png"
        )


def scored_as(config: RunConfig, scales=(1.0,), flip: bool = False) -> dict:
    """How a run's validation scores were made, for its metrics.json: the protocol ("resized":
    masks resized with the images by the val preset; "original": each image's own size), the
    output stride, the scales, the flip and the batch size."""
    resized = transforms_for(config.val_transforms, config.image_size).size is not None
    return {
        "protocol": "resized" if resized else "original",
        "output_stride": config.output_stride,
        "scales": [float(s) for s in scales],
        "flip": bool(flip),
        "batch_size": config.eval_batch_size or config.batch_size,
    }


def validate(
    net, loader, *, device, config: RunConfig, path, criterion=None, scales=(1.0,), flip=False
):
    """Evaluate on the validation loader in the training's `path`; under DDP each process
    scores its shard and `evaluate` pools the counts and the loss over all of them."""
    distributed.broadcast_buffers(net)  # every shard scored with rank 0's BN statistics
    return evaluate(
        net,
        loader,
        device=device,
        num_classes=config.num_classes,
        scales=tuple(scales),
        flip=flip,
        path=path,
        criterion=criterion,
    )


def at_output_stride(model, output_stride: int):
    """The same weights at another output stride, as the paper evaluates its OS16 models at 8:
    the strides of the later stages become dilations (or back), and the ASPP rates scale by
    old / new output stride ((6, 12, 18) at 16 become (12, 24, 36) at 8); multi-grid is kept.
    Returns a new model in the old one's mode; the parameters are copied, not shared."""

    config = dict(model.config)
    factor = config["output_stride"] / output_stride
    rates = tuple(rate * factor for rate in config["atrous_rates"])
    reachable = output_strides(config.get("extra_blocks", 0))
    if output_stride not in reachable or any(r != int(r) or r < 1 for r in rates):
        raise ValueError(
            f"cannot move a model at output stride {config['output_stride']} with rates "
            f"{config['atrous_rates']} to output stride {output_stride}: the rates would be {rates}"
        )
    moved = build_model(
        **{**config, "output_stride": output_stride, "atrous_rates": tuple(int(r) for r in rates)}
    )
    moved.load_state_dict(model.state_dict())
    return moved.train(model.training)


# --- a saved model ----------------------------------------------------------------------------


class OriginalMasks(Dataset):
    """A dataset's samples with each mask replaced by the original, unresized one (for the
    "original" protocol): (preprocessed image, int64 (H0, W0) mask). Keeps the dataset's `ids`."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset
        self.ids = dataset.ids

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


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    split: str = "val",
    protocol: str = "original",
    output_stride: int | None = None,
    scales=(1.0,),
    flip: bool = False,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    amp: str | None = None,
    channels_last: bool | str | None = None,
    num_workers: int = 0,
    out_dir: str | Path | None = None,
    export_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Scores of a saved model on a split, its images preprocessed as its run's validation was.

    Args:
        protocol: "original" (scores resized to each image's own size, against its original
            mask) or "resized" (against the mask as the validation preset resizes it).
        output_stride: evaluate at another output stride than the model was trained with (the
            paper trains at 16 and evaluates at 8): stage dilations and ASPP rates are scaled
            to match (`at_output_stride` below); None keeps the model's.
        export_dir: write one VOC palette PNG per image id, at the image's original size (the
            evaluation server's format); needs protocol "original".
        amp, channels_last: None (both): the path the run trained and validated in, so that a
            checkpoint scores as its run did; "auto" times the candidates here; or explicit.

    Returns the metrics.json dict: the scores ("miou" in 0..1), "confusion_matrix" (C x C
    counts, rows = truth) and how they were made (protocol, output_stride, scales, flip,
    batch_size, checkpoint, split). With `out_dir`, writes metrics.json and the tables
    (metrics.md, metrics.csv, per_class.csv) there.
    """

    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if export_dir is not None and protocol != "original":
        raise ValueError(
            "exporting for the VOC server needs --protocol original (its PNGs are "
            "at each image's original size)"
        )
    for folder in (out_dir, export_dir):  # a folder that cannot be written fails before the work
        if folder is not None:
            ensure_writable(folder)
    # one writer per folder: another evaluation (or a training run) writing there is refused
    with RunLock(out_dir) if out_dir is not None else contextlib.nullcontext():
        return _evaluate_checkpoint(
            checkpoint,
            data_root,
            split=split,
            protocol=protocol,
            output_stride=output_stride,
            scales=scales,
            flip=flip,
            batch_size=batch_size,
            device=device,
            amp=amp,
            channels_last=channels_last,
            num_workers=num_workers,
            out_dir=out_dir,
            export_dir=export_dir,
            progress=progress,
        )


def _evaluate_checkpoint(
    checkpoint,
    data_root,
    *,
    split,
    protocol,
    output_stride,
    scales,
    flip,
    batch_size,
    device,
    amp,
    channels_last,
    num_workers,
    out_dir,
    export_dir,
    progress,
) -> dict:
    """`evaluate_checkpoint`'s work, once its output folder is held."""
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    config = RunConfig.from_dict(state["config"])
    model = model_from_state(state, path)
    if output_stride is not None and output_stride != model.config["output_stride"]:
        model = at_output_stride(model, output_stride)
    preset = transforms_for(config.val_transforms, config.image_size)
    dataset = VOCDataset(data_root, split=split, transforms=uint8_where_exact(preset))
    if protocol == "original" and preset.size is not None:  # the preset resizes the masks
        dataset = OriginalMasks(dataset)
    batch_size = batch_size or config.eval_batch_size or config.batch_size
    loader = make_loader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_workers=num_workers,
        collate_fn=eval_collate,
    )
    saved = state.get("path") if amp is None and channels_last is None else None
    if saved and not fastpath.allowed(
        fastpath.Path(**saved), resolve_device(device), "auto", "auto"
    ):
        saved = None  # trained where that path exists (fp16 on a GPU), scored where it does not
    result = evaluate(
        model,
        loader,
        device=device,
        num_classes=config.num_classes,
        scales=tuple(scales),
        flip=flip,
        amp=amp or "auto",
        channels_last="auto" if channels_last is None else channels_last,
        path=fastpath.Path(**saved) if saved else None,
        progress=progress,
        export_dir=export_dir,
    )
    metrics = metrics_dict(
        result.confusion,
        protocol=protocol,
        output_stride=model.config["output_stride"],
        scales=[float(s) for s in scales],
        flip=bool(flip),
        batch_size=batch_size,
        checkpoint=str(path),
        split=split,
        path=str(result.choice.path) if result.choice else None,
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", metrics)
        write_tables(out_dir, metrics)
    return metrics


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
    import pandas as pd

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
    import pandas as pd

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
