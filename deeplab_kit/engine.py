"""Training: the fast train step, and the epoch loop with sessions, exact resume and DDP.

`make_train_step` is one optimisation step on the fast path (channels_last, autocast, a
GradScaler only where fp16 needs one). `train(config, out_dir)` runs a whole run folder:

    out_dir/checkpoints/epoch-0004.pt ...   the last `keep_last` checkpoints, and best.pt
    out_dir/history.csv                     epoch, session, train_loss, val_loss, miou, lr, seconds
    out_dir/metrics.json                    the last evaluation ("miou" in 0..1 and the rest)

Run it again with the same config and folder and it resumes from the newest checkpoint that
loads, in a new session, until `config.epochs`. Resuming is exact: the weights after N epochs
are bit-identical however many sessions (or kills) it took on the same machine. That holds
because nothing random is ambient: the data order and augmentation are keyed by (seed, epoch,
index) in deeplab_kit.data, and dropout draws from a generator keyed by (seed, epoch, batch).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from deeplab_kit import distributed
from deeplab_kit.checkpoint import (
    BEST,
    CheckpointError,
    check_config,
    checkpoint_name,
    find_checkpoints,
    load_checkpoint,
    load_latest,
    model_from_state,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deeplab_kit.config import RunConfig
from deeplab_kit.data import VOCDataset, make_loader, make_transforms
from deeplab_kit.device import amp_dtype, autocast, resolve_device
from deeplab_kit.evaluate import evaluate
from deeplab_kit.model import build_model, load_torchvision_weights
from deeplab_kit.runs import metrics_dict, read_metrics, write_history, write_json, write_tables
from deeplab_kit.transforms import SegmentationTransform, model_input
from deeplab_kit.voc import IGNORE_INDEX


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# --- the train step ------------------------------------------------------------------------


def make_train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: str | torch.device,
    amp: str = "auto",
    channels_last: bool = True,
    criterion: nn.Module | None = None,
    scaler: torch.amp.GradScaler | None = None,
    accumulation: int = 1,
    aux_weight: float = 0.5,
):
    """`step(images, targets) -> loss`: forward, backward and (every `accumulation` calls) an
    optimiser step, on the fast path.

    - channels_last: the model and the inputs in NHWC, which convolutions run faster in.
    - amp: "auto" autocasts to bf16 where the device has it, to fp16 on older GPUs (with a
      GradScaler, made here unless `scaler` is given), and not at all elsewhere.
    - criterion: cross-entropy ignoring VOC's void label (255) unless given; with an aux head
      the loss is out + aux_weight * aux (config.aux_weight: 0.5 in torchvision's reference).
    - On CUDA it turns on cudnn.benchmark (fastest kernels for fixed input sizes).
    - uint8 images (0..255, as `make_loaders` gives for fixed-size presets) are normalised on the
      device with ImageNet's statistics; float images are taken as already normalised.

    The returned loss is detached and, under DDP, the mean over processes. A NaN or infinite
    loss raises FloatingPointError before anything is updated.
    """
    device = resolve_device(device)
    dtype = amp_dtype(device, amp)
    if scaler is None:
        scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    if criterion is None:
        criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if not isinstance(model, DistributedDataParallel):  # a DDP model is placed before wrapping
        model.to(device, memory_format=memory_format)  # in place: the optimizer's tensors stay
    if device.type == "cuda" and not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
    calls = 0

    def step(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        images = model_input(images, device, memory_format)  # (N, 3, H, W)
        targets = targets.to(device, non_blocking=True)  # (N, H, W)
        last = (calls + 1) % accumulation == 0
        # Under DDP, gradients are averaged across processes only on the last accumulated batch.
        ddp_accumulating = isinstance(model, DistributedDataParallel) and not last
        with model.no_sync() if ddp_accumulating else contextlib.nullcontext():
            with autocast(device, dtype):
                outputs = model(images)
            loss = criterion(outputs["out"].float(), targets)  # the loss in fp32
            if "aux" in outputs:
                loss = loss + aux_weight * criterion(outputs["aux"].float(), targets)
            observed = distributed.mean(loss.detach())  # every process sees the same value
            if not torch.isfinite(observed):
                raise FloatingPointError(f"the loss is {observed.item()}")
            scaler.scale(loss / accumulation).backward()
        calls += 1
        if last:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        return observed

    step.scaler = scaler
    return step


# --- building the pieces of a run ----------------------------------------------------------


def build_run_model(config: RunConfig, *, pretrained: bool = True) -> nn.Module:
    """The config's model with weights seeded by config.seed (and pretrained ones if asked)."""
    kwargs = config.model_kwargs()
    if not pretrained:
        kwargs["pretrained_backbone"] = False
    with torch.random.fork_rng(
        devices=[]
    ):  # seed the initial weights without touching the caller's RNG
        torch.manual_seed(config.seed)
        model = build_model(**kwargs)
    if pretrained and config.pretrained_weights:
        load_torchvision_weights(
            model, _torchvision_weights(config.pretrained_weights), skip_classifier=True
        )
    return model


def _torchvision_weights(name: str):
    """A DeepLabV3_ResNet50_Weights member by name, or a path to a saved state dict."""
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    if name in DeepLabV3_ResNet50_Weights.__members__:
        return DeepLabV3_ResNet50_Weights[name]
    if Path(name).suffix or os.sep in name:
        return Path(name)
    raise ValueError(
        f"pretrained_weights={name!r} is neither a file path nor one of "
        f"{list(DeepLabV3_ResNet50_Weights.__members__)}"
    )


def make_optimizer(model: nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    """The config's optimiser over the trainable parameters (a frozen backbone is left out);
    the aux head, if any, in a second group at lr x aux_lr_factor."""
    net = model.module if isinstance(model, DistributedDataParallel) else model
    aux = {id(p) for p in net.aux_classifier.parameters()} if net.aux_classifier else set()
    main = [p for p in net.parameters() if p.requires_grad and id(p) not in aux]
    groups = [{"params": main, "lr": config.lr}]
    if aux:
        aux_params = [p for p in net.aux_classifier.parameters() if p.requires_grad]
        groups.append({"params": aux_params, "lr": config.lr * config.aux_lr_factor})
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer(groups, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config: RunConfig, iterations_per_epoch: int):
    """The learning-rate schedule as a factor of config.lr, stepped once per optimiser step.

    warmup_epochs > 0 first ramps the factor up linearly; then
    constant: 1. step: lr_gamma once for every epoch in lr_steps that has started (the report's
    "divide by 10"). poly: (1 - t) ** poly_power (the paper) and cosine: (1 + cos(pi t)) / 2,
    where t runs from 0 after the warm-up to 1 at the end of the run.
    """
    total = config.epochs * iterations_per_epoch
    warmup = min(round(config.warmup_epochs * iterations_per_epoch), total - 1)

    def factor(iteration: int) -> float:
        t = min(max(iteration - warmup, 0) / (total - warmup), 1.0)
        if config.schedule == "poly":
            value = (1 - t) ** config.poly_power
        elif config.schedule == "cosine":
            value = 0.5 * (1 + math.cos(math.pi * t))
        elif config.schedule == "step":
            passed = sum(iteration >= epoch * iterations_per_epoch for epoch in config.lr_steps)
            value = config.lr_gamma**passed
        else:
            value = 1.0
        return value * min(1.0, (iteration + 1) / warmup) if warmup else value

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def make_loaders(config: RunConfig, context, train_set=None, val_set=None):
    """Training and validation loaders for this process (its shard under DDP)."""
    if train_set is None or val_set is None:
        if config.data_root is None:
            raise ValueError(
                "no data: set data_root (--data ROOT), the folder holding VOCdevkit/VOC2012"
            )

        def dataset(split: str, preset: str, hflip: bool | None = None):
            transforms = uint8_where_exact(transforms_for(preset, config.image_size, hflip))
            return VOCDataset(
                config.data_root,
                split=split,
                transforms=transforms,
                seed=config.seed,
                cache_dir=config.cache_dir,
            )

        if train_set is None:
            train_set = dataset(config.train_split, config.train_transforms, config.hflip)
        if val_set is None:
            val_set = dataset(config.val_split, config.val_transforms)
    common = dict(
        seed=config.seed,
        num_workers=config.num_workers,
        rank=context.rank,
        world_size=context.world_size,
    )
    train_loader = make_loader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=True, **common
    )
    val_loader = make_loader(
        val_set,
        batch_size=config.eval_batch_size or config.batch_size,
        shuffle=False,
        drop_last=False,
        **common,
    )
    return train_loader, val_loader


def uint8_where_exact(transforms: SegmentationTransform) -> SegmentationTransform:
    """The preset returning uint8 images, normalised later on the device, where that gives the
    same floats: fixed-size presets without crops, whose images are never padded (a padded
    float image is exactly 0 there). A quarter of the bytes through the loader: an epoch read
    from the cache runs about twice as fast (benchmarks/bench_data.py)."""
    if transforms.size is not None and transforms.crop_size is None:
        return replace(transforms, normalize=False)
    return transforms


def transforms_for(preset: str, size: int, hflip: bool | None = None):
    """A transforms preset at config.image_size: the resize of "report", the crop of
    "paper-train"; "paper-eval" keeps full images. `hflip` None keeps the preset's flips."""
    params = {} if hflip is None else {"hflip": hflip}
    if preset == "paper-train":
        return make_transforms(preset, crop_size=size, **params)
    if preset == "paper-eval":
        return make_transforms(preset, **params)
    return make_transforms(preset, size=size, **params)


# --- random states -------------------------------------------------------------------------


@contextmanager
def keyed_randomness(device: torch.device, *key: int):
    """Draws inside (dropout) come from a generator seeded by `key`; the caller's RNG state is
    untouched. So the same step of a run sees the same dropout masks, resumed or not."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield


# --- the run -------------------------------------------------------------------------------


@dataclass
class RunResult:
    """What `train` leaves: the model (last weights), the history, the last scores."""

    model: nn.Module
    out_dir: Path
    history: list[dict] = field(default_factory=list)
    metrics: dict | None = None
    finished: bool = False  # all config.epochs done (False: the session ended first)


@dataclass
class _Progress:
    """Where the run stands; saved in every checkpoint."""

    epoch: int = 0  # finished epochs
    batch: int = 0  # batches done in the current epoch
    iteration: int = 0  # optimiser steps done in the whole run
    session: int = 1
    loss_sum: float = 0.0  # of the current epoch's batches so far
    seconds: float = 0.0  # spent in the current epoch so far (in earlier sessions too)
    best_miou: float = -1.0
    history: list[dict] = field(default_factory=list)


def train(
    config: RunConfig, out_dir: str | Path, *, progress: bool = True, train_set=None, val_set=None
) -> RunResult:
    """Train (or resume) the run in `out_dir` until config.epochs or the end of the session.

    `train_set` / `val_set` replace the datasets config.data_root would give (any datasets
    returning (image, mask) pairs). Under torchrun every process calls this; rank 0 writes.
    Raises TrainingDiverged on a NaN/inf loss (the last good checkpoint stays), and a
    CheckpointError when the folder's checkpoints cannot be resumed or belong to another run.
    """
    out_dir = Path(out_dir)
    context = distributed.setup(config.device)
    try:
        with _determinism(config.deterministic, context.device):
            return _train(config, out_dir, context, progress, train_set, val_set)
    finally:
        distributed.teardown(context)


def _train(config, out_dir, context, progress, train_set, val_set) -> RunResult:
    device = context.device
    checkpoints = out_dir / "checkpoints"
    resumed = load_latest(checkpoints)
    if resumed is None and (out_dir / "history.csv").exists():
        raise CheckpointError(
            f"{out_dir} holds a history.csv but no checkpoint to resume from; use a new output folder"
        )
    if resumed is not None:
        check_config(resumed[0]["config"], config.to_dict(), resumed[1])

    model = build_run_model(config, pretrained=resumed is None)
    if context.distributed and config.sync_bn:
        if device.type != "cuda":
            raise ValueError("sync_bn needs GPUs: torch's SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    net = model  # the plain module (DDP wraps it below)
    if context.distributed:
        model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    train_loader, val_loader = make_loaders(config, context, train_set, val_set)
    per_epoch = len(train_loader) // config.accumulation  # optimiser steps per epoch
    if per_epoch == 0:
        raise ValueError(
            f"the training split gives {len(train_loader)} batches per process, fewer than one "
            f"optimiser step of accumulation={config.accumulation}; lower batch_size or accumulation"
        )
    optimizer = make_optimizer(net, config)
    scheduler = make_scheduler(optimizer, config, per_epoch)
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
    step = make_train_step(
        model, optimizer, device=device, amp=config.amp, channels_last=config.channels_last,
        criterion=criterion, accumulation=config.accumulation, aux_weight=config.aux_weight,
    )  # fmt: skip
    scaler = step.scaler

    state = _Progress()
    if resumed is not None:
        saved, path = resumed
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler") and scaler.is_enabled():
            scaler.load_state_dict(saved["scaler"])
        set_rng_state(saved["rng"])
        partial = saved.get("partial", {})
        state = _Progress(
            epoch=saved["epoch"], batch=saved["batch"], iteration=saved["iteration"],
            session=saved.get("session", 0) + 1, loss_sum=partial.get("loss_sum", 0.0),
            seconds=partial.get("seconds", 0.0), best_miou=saved.get("best_miou", -1.0),
            history=list(saved["history"]),
        )  # fmt: skip
        _say(
            context,
            progress,
            f"resuming {path.name}: epoch {state.epoch}, batch {state.batch}; session {state.session}",
        )

    result = RunResult(model=net, out_dir=out_dir, history=state.history)
    if state.epoch >= config.epochs:
        _say(context, progress, f"{out_dir}: all {config.epochs} epochs are done")
        result.finished, result.metrics = True, read_metrics(out_dir)
        return result

    def save(reason: str) -> Path:
        """Checkpoint the current state (rank 0 writes, the others wait)."""
        path = checkpoints / checkpoint_name(state.epoch, state.batch)
        if context.is_main:
            save_checkpoint(
                {
                    "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "epoch": state.epoch, "batch": state.batch, "iteration": state.iteration,
                    "session": state.session, "best_miou": state.best_miou,
                    "partial": {"loss_sum": state.loss_sum, "seconds": state.seconds},
                    "rng": rng_state(), "config": config.to_dict(), "history": state.history,
                    "reason": reason,
                },
                path,
            )  # fmt: skip
            prune_checkpoints(checkpoints, config.keep_last)
        distributed.barrier()
        return path

    session_start = time.monotonic()
    session_epochs = 0

    def time_is_up() -> bool:
        if config.session_minutes is None:
            return False
        return distributed.agree(
            time.monotonic() - session_start >= 60 * config.session_minutes, device
        )

    # batches used per epoch (the batches of an incomplete accumulation at the end are dropped)
    used = per_epoch * config.accumulation
    while state.epoch < config.epochs:
        # --- one epoch (or the rest of one, when resuming mid-epoch) ---
        model.train()
        train_loader.set_epoch(state.epoch, skip_batches=state.batch)
        started = time.monotonic() - state.seconds
        bar = tqdm(
            total=used, initial=state.batch, desc=f"epoch {state.epoch + 1}/{config.epochs}",
            disable=not (progress and context.is_main), leave=False, dynamic_ncols=True,
        )  # fmt: skip
        images_seen, bar_start, ended_early = 0, time.monotonic(), False
        for images, targets in train_loader:
            if state.batch >= used:
                break
            try:
                with keyed_randomness(device, config.seed, state.epoch, state.batch, context.rank):
                    loss = step(images, targets)
            except FloatingPointError as error:
                bar.close()
                raise _diverged(error, state, checkpoints) from None
            state.loss_sum += loss.item()
            state.batch += 1
            images_seen += images.shape[0] * context.world_size
            bar.update()
            bar.set_postfix(
                loss=f"{state.loss_sum / state.batch:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{images_seen / max(time.monotonic() - bar_start, 1e-9):.1f}", refresh=False,
            )  # fmt: skip
            if state.batch % config.accumulation:
                continue
            scheduler.step()
            state.iteration += 1
            if state.batch < used:
                state.seconds = time.monotonic() - started
                if time_is_up():
                    save("session time")
                    ended_early = True
                    break
                if config.checkpoint_every and state.iteration % config.checkpoint_every == 0:
                    save("step")
        bar.close()
        if ended_early:
            break

        # --- validation, history, checkpoint ---
        evaluation = validate(net, val_loader, device=device, config=config, criterion=criterion)
        val_loss, miou = evaluation.loss, evaluation.scores["miou"]
        if not math.isfinite(val_loss):
            error = FloatingPointError(f"the validation loss is {val_loss}")
            raise _diverged(error, state, checkpoints)
        row = {
            "epoch": state.epoch + 1, "session": state.session, "train_loss": state.loss_sum / used,
            "val_loss": val_loss, "miou": miou, "lr": epoch_lr(scheduler, state.epoch, per_epoch),
            "seconds": time.monotonic() - started,
        }  # fmt: skip
        state.history.append(row)
        state.epoch, state.batch, state.loss_sum, state.seconds = state.epoch + 1, 0, 0.0, 0.0
        session_epochs += 1
        improved = miou > state.best_miou
        state.best_miou = max(miou, state.best_miou)
        save("epoch")
        result.metrics = metrics_dict(
            evaluation.confusion, epoch=state.epoch, split=config.val_split, **scored_as(config)
        )
        if context.is_main:
            if improved:
                best = {
                    "model": net.state_dict(),
                    "config": config.to_dict(),
                    "epoch": state.epoch,
                    "miou": miou,
                }
                save_checkpoint(best, checkpoints / BEST)
            write_history(out_dir / "history.csv", state.history)
            write_json(out_dir / "metrics.json", result.metrics)
        _say(
            context, progress,
            f"epoch {row['epoch']}/{config.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  mIoU {row['miou']:.4f}  {row['seconds']:.1f} s",
        )  # fmt: skip
        if state.epoch < config.epochs and (
            (config.session_epochs is not None and session_epochs >= config.session_epochs)
            or time_is_up()
        ):
            break

    result.finished = state.epoch >= config.epochs
    if not result.finished:
        _say(
            context,
            progress,
            f"session {state.session} ended at epoch {state.epoch}, batch {state.batch}; run the same command again to resume",
        )
    elif tuple(config.eval_scales) != (1.0,) or config.eval_flip:
        evaluation = validate(
            net,
            val_loader,
            device=device,
            config=config,
            scales=config.eval_scales,
            flip=config.eval_flip,
        )
        result.metrics = metrics_dict(
            evaluation.confusion, epoch=state.epoch, split=config.val_split,
            **scored_as(config, config.eval_scales, config.eval_flip),
        )  # fmt: skip
        if context.is_main:
            write_json(out_dir / "metrics.json", result.metrics)
    return result


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


def epoch_lr(scheduler, epoch: int, per_epoch: int) -> float:
    """The mean learning rate of an epoch's optimiser steps (for the history)."""
    first = epoch * per_epoch
    factors = [scheduler.lr_lambdas[0](i) for i in range(first, first + per_epoch)]
    return scheduler.base_lrs[0] * sum(factors) / per_epoch


def validate(net, loader, *, device, config: RunConfig, criterion=None, scales=(1.0,), flip=False):
    """Evaluate on the validation loader; under DDP each process scores its shard and
    `evaluate` pools the counts and the loss over all of them."""
    distributed.broadcast_buffers(net)  # every shard scored with rank 0's BN statistics
    return evaluate(
        net, loader, device=device, num_classes=config.num_classes, scales=tuple(scales), flip=flip,
        amp=config.amp, channels_last=config.channels_last, criterion=criterion,
    )  # fmt: skip


# --- evaluating a checkpoint ---------------------------------------------------------------


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
    scales=(1.0,),
    flip: bool = False,
    batch_size: int | None = None,
    device: str | torch.device = "auto",
    amp: str = "auto",
    num_workers: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Scores of a saved model on a split, preprocessed as its run's validation was.

    Returns the metrics.json dict: the scores of ConfusionMatrix.compute() ("miou" in 0..1),
    "confusion_matrix" (C x C counts, rows = truth) and what was evaluated. With `out_dir`,
    writes metrics.json and the tables (metrics.md, metrics.csv, per_class.csv) there.
    """
    path = resolve_checkpoint(checkpoint)
    state = load_checkpoint(path)
    config = RunConfig.from_dict(state["config"])
    device = resolve_device(device)
    model = model_from_state(state, path).to(device)
    dataset = VOCDataset(
        data_root,
        split=split,
        transforms=uint8_where_exact(transforms_for(config.val_transforms, config.image_size)),
    )
    loader = make_loader(
        dataset, batch_size=batch_size or config.eval_batch_size or config.batch_size,
        shuffle=False, drop_last=False, num_workers=num_workers,
    )  # fmt: skip
    result = evaluate(
        model, loader, device=device, num_classes=config.num_classes, scales=tuple(scales),
        flip=flip, amp=amp, channels_last=config.channels_last, progress=progress,
    )  # fmt: skip
    metrics = metrics_dict(
        result.confusion, checkpoint=str(path), split=split, scales=list(scales), flip=flip
    )
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "metrics.json", metrics)
        write_tables(out_dir, result.confusion)
    return metrics


def _diverged(error: Exception, state: _Progress, checkpoints: Path) -> TrainingDiverged:
    found = find_checkpoints(checkpoints)
    kept = (
        f"the last good checkpoint, {found[0]}, is kept"
        if found
        else "no checkpoint was written yet"
    )
    return TrainingDiverged(
        f"{error} at epoch {state.epoch + 1}, batch {state.batch + 1}: training stopped and {kept}. "
        "Lower the learning rate (--lr) or turn mixed precision off (--amp off), then run again "
        "to resume from it."
    )


def _say(context, progress: bool, message: str) -> None:
    if progress and context.is_main:
        tqdm.write(message)


@contextmanager
def _determinism(enabled: bool, device: torch.device):
    """With config.deterministic: deterministic cuDNN/cuBLAS kernels for the run, restored after."""
    if not enabled:
        yield
        return
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[1:]
