"""Training a run folder, one session at a time, with exact resume and DDP.

    result = train(config, out_dir)   # resumes from the newest checkpoint that loads

    out_dir/checkpoints/epoch-0004.pt ...   the last `keep_last` checkpoints, and best.pt
    out_dir/history.csv                     one row per epoch (see deeplab_kit.training.run_files)
    out_dir/metrics.json                    the last evaluation ("miou" in 0..1 and the rest)

A session reads as named steps (`_train`): resume or start; for each epoch, train it, then
validate, record and checkpoint; until the run or the session is over; then end the session or
finish the run (its final multi-scale evaluation). The train step and its path are
`deeplab_kit.training.step`'s, the loss `.loss`'s, the optimiser and schedule `.schedule`'s.

Run it again with the same config and folder and it resumes from the newest checkpoint that
loads, in a new session, until `config.epochs`. Resuming is exact: the weights after N epochs
are bit-identical however many sessions (or kills) it took on the same machine. That holds
because nothing random is ambient: the data order and augmentation are keyed by (seed, epoch,
index) in deeplab_kit.data, and dropout draws from a generator keyed by (seed, epoch, batch,
rank) (`step.keyed_randomness`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from deeplab_kit.data.loader import make_loaders
from deeplab_kit.data.transforms import model_input
from deeplab_kit.evaluate import predict, scored_as, validate
from deeplab_kit.files import ensure_writable, write_json
from deeplab_kit.model import build_model, load_torchvision_weights
from deeplab_kit.training import distributed, fastpath
from deeplab_kit.training.checkpoint import (
    BEST,
    CheckpointError,
    check_config,
    checkpoint_name,
    find_checkpoints,
    load_latest,
    prune_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from deeplab_kit.training.config import RunConfig
from deeplab_kit.training.device import determinism
from deeplab_kit.training.lock import RunLock
from deeplab_kit.training.loss import Criterion
from deeplab_kit.training.run_files import metrics_dict, read_metrics, write_history
from deeplab_kit.training.schedule import (
    check_resumed_epochs,
    epoch_lr,
    make_optimizer,
    make_scheduler,
    warn_about_schedule,
)
from deeplab_kit.training.step import TrainStep, keyed_randomness, probe_batch
from deeplab_kit.training.tensorboard import Board


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


def build_run_model(config: RunConfig, *, pretrained: bool = True) -> nn.Module:
    """The config's model with weights seeded by config.seed (and pretrained ones if asked)."""
    kwargs = config.model_kwargs()
    if not pretrained:
        kwargs["pretrained_backbone"] = False
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG untouched
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
    config: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    train_set=None,
    val_set=None,
    extend: bool = False,
) -> RunResult:
    """Train (or resume) the run in `out_dir` until config.epochs or the end of the session.

    `train_set` / `val_set` replace the datasets config.data_root would give (any datasets
    returning (image, mask) pairs). Under torchrun every process calls this; rank 0 writes.
    A resumed run may change `epochs` when its schedule does not depend on them; a poly or
    cosine run needs `extend=True` to stretch its schedule (see `check_resumed_epochs`).
    Raises an OSError before any work when `out_dir` cannot be written, TrainingDiverged on a
    NaN/inf loss or weight (the last good checkpoint stays), and a CheckpointError when the
    folder's checkpoints cannot be resumed or belong to another run, and a RunFolderBusy when
    another process is training into `out_dir` (`deeplab_kit.training.lock`).
    """
    out_dir = ensure_writable(out_dir)  # a bad --out fails now, not after an epoch of work
    # one writer per run folder: rank 0 holds the lock (RANK is torchrun's, before the group)
    lock = RunLock(out_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    with lock or contextlib.nullcontext():
        context = distributed.setup(config.device)
        try:
            with determinism(config.deterministic, context.device):
                return _train(config, out_dir, context, progress, train_set, val_set, extend, lock)
        finally:
            distributed.teardown(context)


def _train(config, out_dir, context, progress, train_set, val_set, extend, lock) -> RunResult:
    """A session, in named steps: resume or start; epoch by epoch train, validate, record and
    checkpoint, until the run or the session is over; then end the session or finish the run."""
    session = _Session.resume_or_start(
        config, out_dir, context, progress, train_set, val_set, extend
    )
    session.lock = lock
    if session.state.epoch >= config.epochs:
        return session.already_done()
    while session.state.epoch < config.epochs:
        if not session.train_epoch():  # the session's time ran out mid-epoch (checkpointed)
            break
        session.validate_record_checkpoint()
        if session.over():
            break
    return session.end()


@dataclass
class _Parts:
    """What a session trains with."""

    model: nn.Module  # what runs forward (DDP-wrapped under torchrun)
    net: nn.Module  # the plain module: its state dict is what checkpoints hold
    train_loader: object
    val_loader: object
    optimizer: torch.optim.Optimizer
    scheduler: object
    step: TrainStep
    criterion: Criterion
    per_epoch: int  # optimiser steps per epoch


class _Session:
    """One call of `train`: the run's parts (model, loaders, optimiser, schedule, step) and
    where it stands (`state`, saved in every checkpoint)."""

    def __init__(self, config, out_dir, context, progress, parts: _Parts, state) -> None:
        self.config, self.out_dir, self.context, self.progress = config, out_dir, context, progress
        self.checkpoints = out_dir / "checkpoints"
        self.model, self.net = parts.model, parts.net
        self.train_loader, self.val_loader = parts.train_loader, parts.val_loader
        self.optimizer, self.scheduler = parts.optimizer, parts.scheduler
        self.step, self.criterion, self.per_epoch = parts.step, parts.criterion, parts.per_epoch
        self.state = state
        self.result = RunResult(model=self.net, out_dir=out_dir, history=state.history)
        self.started = time.monotonic()  # of the session
        self.session_epochs = 0
        self.lock: RunLock | None = None  # set by `train` (rank 0)
        self.board = None  # TensorBoard's writer, opened with the session's first epoch
        self.first_epoch = state.epoch
        # batches used per epoch (those of an incomplete accumulation at the end are dropped)
        self.used = self.per_epoch * config.accumulation

    # --- resume or start -----------------------------------------------------------------

    @classmethod
    def resume_or_start(cls, config, out_dir, context, progress, train_set, val_set, extend):
        """The run's parts, and its state from the newest checkpoint that loads (none: a start).
        A checkpoint of another configuration, or an epochs change the schedule does not
        allow, is refused before anything is trained."""
        warn_about_schedule(config)
        resumed = _latest_checkpoint(out_dir, config)
        net = _placed_model(config, context, pretrained=resumed is None)
        train_loader, val_loader = make_loaders(config, context, train_set, val_set)
        per_epoch = _steps_per_epoch(config, context, train_loader)
        change = None
        if resumed is not None:
            change = check_resumed_epochs(
                resumed.state["config"],
                config,
                resumed.path,
                resumed.state["iteration"],
                per_epoch,
                extend,
            )
        optimizer = make_optimizer(net, config)
        scheduler = make_scheduler(optimizer, config, per_epoch)
        criterion = Criterion(config.aux_weight)
        step = TrainStep(
            net,
            optimizer,
            device=context.device,
            amp=config.amp,
            channels_last=config.channels_last,
            path=_resumed_path(resumed, config, context),
            criterion=criterion,
            accumulation=config.accumulation,
        )
        finished = resumed is not None and resumed.state["epoch"] >= config.epochs
        if not finished:  # a finished run trains nothing: no path to choose, no session
            batch = probe_batch(config.batch_size, config.image_size, config.num_classes)
            _say(context, progress, step.resolve(*batch).line())
        model = net
        if context.distributed:  # wrapped once the memory format is set: DDP keeps its strides
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            model = step.model = DistributedDataParallel(net, device_ids=device_ids)
        state = _Progress()
        if resumed is not None:
            state = _restore(resumed.state, net, optimizer, scheduler, step.scaler)
            if not finished:
                _say(
                    context,
                    progress,
                    f"resuming {resumed.path.name}: epoch {state.epoch}, batch "
                    f"{state.batch}; session {state.session}",
                )
            if change:
                warnings.warn(f"{out_dir}: {change}", stacklevel=4)
        parts = _Parts(
            model, net, train_loader, val_loader, optimizer, scheduler, step, criterion, per_epoch
        )
        return cls(config, out_dir, context, progress, parts, state)

    def already_done(self) -> RunResult:
        """A finished run, run again: nothing to train; say so (and how to train on)."""
        _say(
            self.context,
            self.progress,
            f"{self.out_dir}: the run is finished (all {self.config.epochs} epochs are done); "
            "nothing to train. To train on, give more --epochs.",
        )
        self.result.finished, self.result.metrics = True, read_metrics(self.out_dir)
        return self.result

    # --- one epoch -----------------------------------------------------------------------

    def train_epoch(self) -> bool:
        """Train one epoch (or the rest of one, when resuming mid-epoch), with step checkpoints.
        False when the session's time ran out first (a checkpoint was saved)."""
        config, state, context = self.config, self.state, self.context
        self.model.train()
        self.train_loader.set_epoch(state.epoch, skip_batches=state.batch)
        self.epoch_started = time.monotonic() - state.seconds
        bar = tqdm(
            total=self.used,
            initial=state.batch,
            desc=f"epoch {state.epoch + 1}/{config.epochs}",
            disable=not (self.progress and context.is_main),
            leave=False,
            dynamic_ncols=True,
        )
        images_seen, bar_start = 0, time.monotonic()
        try:
            for images, targets in self.train_loader:
                if state.batch >= self.used:
                    break
                self._one_batch(images, targets)
                images_seen += images.shape[0] * context.world_size
                bar.update()
                bar.set_postfix(
                    loss=f"{state.loss_sum / state.batch:.4f}",
                    lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                    img_s=f"{images_seen / max(time.monotonic() - bar_start, 1e-9):.1f}",
                    refresh=False,
                )
                if state.batch % config.accumulation:
                    continue
                self.scheduler.step()
                state.iteration += 1
                if state.batch < self.used and not self._mid_epoch_checkpoint():
                    return False
        finally:
            bar.close()
        return True

    def _one_batch(self, images, targets) -> None:
        state, config = self.state, self.config
        try:
            with keyed_randomness(
                self.context.device, config.seed, state.epoch, state.batch, self.context.rank
            ):
                loss = self.step(images, targets)
        except FloatingPointError as error:
            raise _diverged(error, state, self.checkpoints) from None
        state.loss_sum += loss.item()
        state.batch += 1
        if self.lock is not None:
            self.lock.refresh()

    def _mid_epoch_checkpoint(self) -> bool:
        """After an optimiser step inside an epoch: end the session when its time is up (saving
        first; returns False), or save a step checkpoint every `checkpoint_every` steps."""
        self.state.seconds = time.monotonic() - self.epoch_started
        if self._time_is_up():
            self.save("session time")
            return False
        every = self.config.checkpoint_every
        if every and self.state.iteration % every == 0:
            self.save("step")
        return True

    # --- validate, record, checkpoint -----------------------------------------------------

    def validate_record_checkpoint(self) -> None:
        """Score the epoch, append its history row, checkpoint (and best.pt when it improved),
        and write history.csv and metrics.json."""
        config, state = self.config, self.state
        evaluation = validate(
            self.net,
            self.val_loader,
            device=self.context.device,
            config=config,
            path=self.step.path,
            criterion=self.criterion.cross_entropy,
        )
        val_loss, miou = evaluation.loss, evaluation.scores["miou"]
        if not math.isfinite(val_loss):
            error = FloatingPointError(f"the validation loss is {val_loss}")
            raise _diverged(error, state, self.checkpoints)
        row = {
            "epoch": state.epoch + 1,
            "session": state.session,
            "train_loss": state.loss_sum / self.used,
            "val_loss": val_loss,
            "miou": miou,
            "lr": epoch_lr(self.scheduler, state.epoch, self.per_epoch),
            "seconds": time.monotonic() - self.epoch_started,
            "epochs": config.epochs,
            "path": str(self.step.path),
        }
        state.history.append(row)
        if config.tensorboard and self.context.is_main:  # before the checkpoint: never lost
            if self.board is None:
                self.board = Board(self.out_dir, resume_epoch=self.first_epoch)
            self.board.epoch(row, evaluation.scores, *self._example(evaluation))
        state.epoch, state.batch, state.loss_sum, state.seconds = state.epoch + 1, 0, 0.0, 0.0
        self.session_epochs += 1
        improved = miou > state.best_miou
        state.best_miou = max(miou, state.best_miou)
        self.save("epoch")
        self.result.metrics = metrics_dict(
            evaluation.confusion,
            epoch=state.epoch,
            split=config.val_split,
            **scored_as(config),
            path=str(self.step.path),
        )
        if self.context.is_main:
            self._write_epoch_files(improved, miou)
        _say(
            self.context,
            self.progress,
            f"epoch {row['epoch']}/{config.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  mIoU {row['miou']:.4f}  {row['seconds']:.1f} s",
        )

    def _example(self, evaluation) -> tuple:
        """The first validation image, its truth and the model's prediction, for TensorBoard."""
        image, truth = self.val_loader.dataset[0]
        image = image if isinstance(image, torch.Tensor) else torch.as_tensor(image)
        ready = model_input(image[None], self.context.device, torch.contiguous_format)[0]
        prediction = predict(self.net, ready, self.context.device)
        return image, truth, prediction

    def _write_epoch_files(self, improved: bool, miou: float) -> None:
        with _keeping_checkpoints(self.checkpoints):
            if improved:
                best = {
                    "model": self.net.state_dict(),
                    "config": self.config.to_dict(),
                    "path": dataclasses.asdict(self.step.path),
                    "epoch": self.state.epoch,
                    "miou": miou,
                }
                save_checkpoint(best, self.checkpoints / BEST)
            write_history(self.out_dir / "history.csv", self.state.history)
            write_json(self.out_dir / "metrics.json", self.result.metrics)

    def save(self, reason: str) -> Path:
        """Checkpoint the current state (rank 0 writes, the others wait); never non-finite
        weights, and a failed write says which checkpoint is still good."""
        state, net = self.state, self.net
        path = self.checkpoints / checkpoint_name(state.epoch, state.batch)
        bad = [name for name, p in net.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            error = FloatingPointError(f"weight {bad[0]} is NaN or infinite")
            raise _diverged(error, state, self.checkpoints)
        if self.context.is_main:
            with _keeping_checkpoints(self.checkpoints):
                save_checkpoint(
                    {
                        "model": net.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "scaler": self.step.scaler.state_dict(),
                        "epoch": state.epoch,
                        "batch": state.batch,
                        "iteration": state.iteration,
                        "session": state.session,
                        "best_miou": state.best_miou,
                        "partial": {"loss_sum": state.loss_sum, "seconds": state.seconds},
                        "rng": rng_state(),
                        "config": self.config.to_dict(),
                        "path": dataclasses.asdict(self.step.path),
                        "history": state.history,
                        "reason": reason,
                    },
                    path,
                )
                prune_checkpoints(self.checkpoints, self.config.keep_last)
        distributed.barrier()
        return path

    # --- the session's end ---------------------------------------------------------------

    def _time_is_up(self) -> bool:
        if self.config.session_minutes is None:
            return False
        elapsed = time.monotonic() - self.started
        return distributed.agree(elapsed >= 60 * self.config.session_minutes, self.context.device)

    def over(self) -> bool:
        """Whether this session ends after the epoch just recorded (the run goes on)."""
        limit = self.config.session_epochs
        return self.state.epoch < self.config.epochs and (
            (limit is not None and self.session_epochs >= limit) or self._time_is_up()
        )

    def end(self) -> RunResult:
        """End the session; when the run is finished, its final multi-scale evaluation."""
        config, state, result = self.config, self.state, self.result
        if self.board is not None:
            self.board.close()
        result.finished = state.epoch >= config.epochs
        if not result.finished:
            _say(
                self.context,
                self.progress,
                f"session {state.session} ended at epoch "
                f"{state.epoch}, batch {state.batch}; run the same command again to resume",
            )
        elif tuple(config.eval_scales) != (1.0,) or config.eval_flip:
            evaluation = validate(
                self.net,
                self.val_loader,
                device=self.context.device,
                config=config,
                path=self.step.path,
                scales=config.eval_scales,
                flip=config.eval_flip,
            )
            result.metrics = metrics_dict(
                evaluation.confusion,
                epoch=state.epoch,
                split=config.val_split,
                **scored_as(config, config.eval_scales, config.eval_flip),
                path=str(self.step.path),
            )
            if self.context.is_main:
                write_json(self.out_dir / "metrics.json", result.metrics)
        return result


def _latest_checkpoint(out_dir: Path, config: RunConfig):
    """(state, path) of the newest checkpoint that loads, checked against `config`; None for a
    fresh run folder."""
    resumed = load_latest(out_dir / "checkpoints")
    if resumed is None and (out_dir / "history.csv").exists():
        raise CheckpointError(
            f"{out_dir} holds a history.csv but no checkpoint to resume from; use a new output folder"
        )
    if resumed is not None:
        check_config(resumed.state["config"], config.to_dict(), resumed.path)
    return resumed


def _placed_model(config: RunConfig, context, *, pretrained: bool) -> nn.Module:
    """The model on its device (SyncBN under torchrun if asked); the train step chooses its
    memory format, and DDP wraps it after that."""
    model = build_run_model(config, pretrained=pretrained)
    if context.distributed and config.sync_bn:
        if context.device.type != "cuda":
            raise ValueError("sync_bn needs GPUs: torch's SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(context.device)


def _resumed_path(resumed, config: RunConfig, context) -> fastpath.Path | None:
    """The path a resumed run started with (so its sessions compute alike), unless the config
    now asks for another; None for a new run (the train step chooses)."""
    saved = resumed.state.get("path") if resumed is not None else None
    if not saved:
        return None
    path = fastpath.Path(**saved)
    return (
        path if fastpath.allowed(path, context.device, config.amp, config.channels_last) else None
    )


def _steps_per_epoch(config: RunConfig, context, train_loader) -> int:
    per_epoch = len(train_loader) // config.accumulation  # optimiser steps per epoch
    if per_epoch == 0:
        raise ValueError(
            f"the training split {config.train_split!r} has {len(train_loader.dataset)} images: "
            f"at batch_size={config.batch_size} over {context.world_size} process(es) that is "
            f"{len(train_loader)} full batch(es) per process, fewer than one optimiser step of "
            f"accumulation={config.accumulation}; lower batch_size or accumulation"
        )
    return per_epoch


def _restore(saved: dict, net, optimizer, scheduler, scaler) -> _Progress:
    """Load a checkpoint's states into the run's parts; its progress, in a new session."""
    net.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(saved["scaler"])
    set_rng_state(saved["rng"])
    partial = saved.get("partial", {})
    return _Progress(
        epoch=saved["epoch"],
        batch=saved["batch"],
        iteration=saved["iteration"],
        session=saved.get("session", 0) + 1,
        loss_sum=partial.get("loss_sum", 0.0),
        seconds=partial.get("seconds", 0.0),
        best_miou=saved.get("best_miou", -1.0),
        history=list(saved["history"]),
    )


def _kept(checkpoints: Path) -> str:
    found = find_checkpoints(checkpoints)
    return (
        f"the last good checkpoint, {found[0]}, is kept"
        if found
        else "no checkpoint was written yet"
    )


@contextmanager
def _keeping_checkpoints(checkpoints: Path):
    """A failed write (a full disk, a folder gone read-only) ends the run with one line: the
    file that could not be written and the newest good checkpoint, which stays."""
    try:
        yield
    except OSError as error:
        raise OSError(f"{error}; {_kept(checkpoints)}") from None


def _diverged(error: Exception, state: _Progress, checkpoints: Path) -> TrainingDiverged:
    kept = _kept(checkpoints)
    return TrainingDiverged(
        f"{error} at epoch {state.epoch + 1}, batch {state.batch + 1}: training stopped and {kept}. "
        "Lower the learning rate (--lr) or turn mixed precision off (--amp off), then run again "
        "to resume from it."
    )


def _say(context, progress: bool, message: str) -> None:
    if progress and context.is_main:
        tqdm.write(message)
