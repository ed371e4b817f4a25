"""Training a run folder, one session at a time, with exact resume and DDP.

    result = train(config, out_dir)   # resumes from the newest checkpoint that loads

    out_dir/checkpoints/epoch-0004.pt ...   the last `keep_last` checkpoints, and best.pt
    out_dir/history.csv                     one row per epoch (see deeplab_kit.runtime.run_files)
    out_dir/metrics.json                    the last evaluation ("miou" in 0..1 and the rest)

A session reads as named steps (`_train`). The run's parts (model, loaders, arithmetic) come
from `.build`, the train step from `.step`, the loss from `.loss`, the optimiser and schedule
from `.schedule`.

Resuming is exact: the weights after N epochs are bit-identical however many sessions (or kills)
it took on the same machine, because nothing random is ambient: the data order and augmentation
are keyed by (seed, epoch, index) in deeplab_kit.data, and dropout draws from a generator keyed
by (seed, epoch, batch, rank) (`step.keyed_randomness`).
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

from deeplab_kit.config import RunConfig
from deeplab_kit.data.transforms import model_input
from deeplab_kit.evaluate import evaluate, predicted_classes, scored_as
from deeplab_kit.files import ensure_writable, write_json
from deeplab_kit.runtime import distributed
from deeplab_kit.runtime.checkpoint import (
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
from deeplab_kit.runtime.device import determinism
from deeplab_kit.runtime.lock import RunLock
from deeplab_kit.runtime.run_files import metrics_dict, read_metrics, write_history
from deeplab_kit.training.build import (
    placed_model,
    run_arithmetic,
    run_classes,
    run_loaders,
    steps_per_epoch,
)
from deeplab_kit.training.loss import Criterion
from deeplab_kit.training.schedule import (
    check_resumed_epochs,
    epoch_lr,
    make_optimizer,
    make_scheduler,
    warn_about_schedule,
)
from deeplab_kit.training.step import TrainStep, keyed_randomness
from deeplab_kit.training.tensorboard import Board


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


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
    NaN/inf loss or weight (the last good checkpoint stays), a CheckpointError when the
    folder's checkpoints cannot be resumed or belong to another run, and a RunFolderBusy when
    another process is training into `out_dir` (`deeplab_kit.runtime.lock`).
    """
    out_dir = ensure_writable(out_dir)  # a bad --out fails now, not after an epoch of work
    # one writer per run folder: rank 0 holds the lock (RANK is torchrun's, before the group)
    lock = RunLock(out_dir) if int(os.environ.get("RANK", "0")) == 0 else None
    with lock or contextlib.nullcontext():
        context = distributed.setup(config.device)
        try:
            with determinism(config.deterministic, context.device):
                session = _Session(config, out_dir, context, progress, lock)
                return _train(session, (train_set, val_set), extend)
        finally:
            distributed.teardown(context)


def _train(session: _Session, datasets, extend: bool) -> RunResult:
    """A session, in named steps: resume or start; epoch by epoch train, validate, record and
    checkpoint, until the run or the session is over; then end the session or finish the run
    (its final multi-scale evaluation)."""
    session.resume_or_start(datasets, extend)
    if session.state.epoch >= session.config.epochs:
        return session.already_done()
    while session.state.epoch < session.config.epochs:
        if not session.train_epoch():  # the session's time ran out mid-epoch (checkpointed)
            break
        session.validate_record_checkpoint()
        if session.over():
            break
    return session.end()


class _Session:
    """One call of `train`: the run's parts (model, loaders, optimiser, schedule, step) and
    where it stands (`state`, saved in every checkpoint)."""

    def __init__(self, config: RunConfig, out_dir: Path, context, progress: bool, lock) -> None:
        self.config, self.out_dir, self.context, self.progress = config, out_dir, context, progress
        self.lock = lock  # rank 0's RunLock, refreshed as it trains (None on the other ranks)
        self.checkpoints = out_dir / "checkpoints"
        self.started = time.monotonic()  # of the session
        self.session_epochs = 0
        self.board = None  # TensorBoard's writer, opened with the session's first epoch

    # --- resume or start -----------------------------------------------------------------

    def resume_or_start(self, datasets, extend: bool) -> None:
        """Build the run's parts and take its state from the newest checkpoint that loads
        (none: a start). A checkpoint of another configuration, or an epochs change the
        schedule does not allow, is refused before anything is trained."""
        config, context = self.config, self.context
        warn_about_schedule(config)
        resumed = _latest_checkpoint(self.out_dir, config)
        saved = resumed.state if resumed is not None else None
        self.net = placed_model(config, context, pretrained=resumed is None)
        self.train_loader, self.val_loader = run_loaders(config, context, *datasets)
        self.per_epoch = steps_per_epoch(config, context, self.train_loader)
        self.classes = run_classes(config, self.train_loader.dataset)
        self.used = self.per_epoch * config.accumulation  # batches used per epoch
        change = None
        if resumed is not None:
            change = check_resumed_epochs(
                saved["config"], config, resumed.path, saved["iteration"], self.per_epoch, extend
            )
        self._build_step(run_arithmetic(config, context.device, saved))
        self.state = _Progress() if resumed is None else self._restore(saved)
        self.first_epoch = self.state.epoch
        self.result = RunResult(model=self.net, out_dir=self.out_dir, history=self.state.history)
        if self.state.epoch < config.epochs:  # a finished run trains nothing: no session
            self._say(f"arithmetic: {self.arithmetic}")
            if resumed is not None:
                self._say(
                    f"resuming {resumed.path.name}: epoch {self.state.epoch}, batch "
                    f"{self.state.batch}; session {self.state.session}"
                )
        if change:
            warnings.warn(f"{self.out_dir}: {change}", stacklevel=5)

    def _build_step(self, arithmetic) -> None:
        """The optimiser, schedule, loss and train step; DDP wraps the model once the step has
        set its memory layout (DDP keeps the strides it finds)."""
        config, context = self.config, self.context
        self.arithmetic = arithmetic
        self.optimizer = make_optimizer(self.net, config)
        self.scheduler = make_scheduler(self.optimizer, config, self.per_epoch)
        self.criterion = Criterion(config.aux_weight)
        self.step = TrainStep(
            self.net,
            self.optimizer,
            device=context.device,
            arithmetic=arithmetic,
            criterion=self.criterion,
            accumulation=config.accumulation,
        )
        self.model = self.net
        if context.distributed:
            device_ids = [context.device.index] if context.device.type == "cuda" else None
            self.model = self.step.model = DistributedDataParallel(self.net, device_ids=device_ids)

    def _restore(self, saved: dict) -> _Progress:
        """Load a checkpoint's states into the run's parts; its progress, in a new session."""
        self.net.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        if saved.get("scaler") and self.step.scaler.is_enabled():
            self.step.scaler.load_state_dict(saved["scaler"])
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

    def already_done(self) -> RunResult:
        """A finished run, run again: nothing to train; say so (and how to train on)."""
        self._say(
            f"{self.out_dir}: the run is finished (all {self.config.epochs} epochs are done); "
            "nothing to train. To train on, give more --epochs."
        )
        self.result.finished, self.result.metrics = True, read_metrics(self.out_dir)
        return self.result

    # --- one epoch -----------------------------------------------------------------------

    def train_epoch(self) -> bool:
        """Train one epoch (or the rest of one, when resuming mid-epoch), with step checkpoints.
        False when the session's time ran out first (a checkpoint was saved)."""
        state = self.state
        self.model.train()
        self.train_loader.set_epoch(state.epoch, skip_batches=state.batch)
        self.epoch_started = time.monotonic() - state.seconds
        with self._bar() as advance:
            for images, targets in self.train_loader:
                if state.batch >= self.used:
                    break
                self._one_batch(images, targets)
                advance(images.shape[0] * self.context.world_size)
                if state.batch % self.config.accumulation:
                    continue
                self.scheduler.step()
                state.iteration += 1
                if state.batch < self.used and not self._mid_epoch_checkpoint():
                    return False
        return True

    @contextmanager
    def _bar(self):
        """A progress bar of the epoch's batches, showing the loss, the lr and images a second:
        yields `advance(images)`, called after each batch."""
        state, started, seen = self.state, time.monotonic(), 0
        bar = tqdm(
            total=self.used,
            initial=state.batch,
            desc=f"epoch {state.epoch + 1}/{self.config.epochs}",
            disable=not (self.progress and self.context.is_main),
            leave=False,
            dynamic_ncols=True,
        )

        def update(images: int) -> None:
            nonlocal seen
            seen += images
            bar.update()
            bar.set_postfix(
                loss=f"{state.loss_sum / state.batch:.4f}",
                lr=f"{self.optimizer.param_groups[0]['lr']:.2e}",
                img_s=f"{seen / max(time.monotonic() - started, 1e-9):.1f}",
                refresh=False,
            )

        with bar:  # closed however the epoch ends
            yield update

    def _one_batch(self, images, targets) -> None:
        state, config = self.state, self.config
        key = (config.seed, state.epoch, state.batch, self.context.rank)
        try:
            with keyed_randomness(self.context.device, *key):
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
        evaluation = self._validate(criterion=self.criterion.cross_entropy)
        row = self._history_row(evaluation)
        state = self.state
        state.history.append(row)
        if self.config.tensorboard and self.context.is_main:  # before the checkpoint: never lost
            self.board = self.board or Board(
                self.out_dir, self.classes, resume_epoch=self.first_epoch
            )
            self.board.epoch(row, evaluation.scores, *self._example())
        state.epoch, state.batch, state.loss_sum, state.seconds = state.epoch + 1, 0, 0.0, 0.0
        self.session_epochs += 1
        improved = row["miou"] > state.best_miou
        state.best_miou = max(row["miou"], state.best_miou)
        self.save("epoch")
        self.result.metrics = self._metrics(evaluation)
        if self.context.is_main:
            self._write_epoch_files(improved, row["miou"])
        self._say(
            f"epoch {row['epoch']}/{self.config.epochs}  train_loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  mIoU {row['miou']:.4f}  {row['seconds']:.1f} s"
        )

    def _validate(self, criterion=None, scales=(1.0,), flip=False):
        """Evaluate in the training's arithmetic; under DDP each process scores its shard and
        `evaluate` pools the counts and the loss over all of them."""
        distributed.broadcast_buffers(self.net)  # every shard scored with rank 0's BN statistics
        return evaluate(
            self.net,
            self.val_loader,
            device=self.context.device,
            num_classes=self.config.model.num_classes,
            scales=tuple(scales),
            flip=flip,
            arithmetic=self.arithmetic,
            criterion=criterion,
        )

    def _history_row(self, evaluation) -> dict:
        state = self.state
        if not math.isfinite(evaluation.loss):
            raise _diverged(f"the validation loss is {evaluation.loss}", state, self.checkpoints)
        return {
            "epoch": state.epoch + 1,
            "session": state.session,
            "train_loss": state.loss_sum / self.used,
            "val_loss": evaluation.loss,
            "miou": evaluation.scores["miou"],
            "lr": epoch_lr(self.scheduler, state.epoch, self.per_epoch),
            "seconds": time.monotonic() - self.epoch_started,
            "epochs": self.config.epochs,
            "arithmetic": str(self.arithmetic),
        }

    def _metrics(self, evaluation, scales=(1.0,), flip=False) -> dict:
        return metrics_dict(
            evaluation.confusion,
            epoch=self.state.epoch,
            split=self.config.val_split,
            **scored_as(self.config, scales, flip),
            arithmetic=str(self.arithmetic),
        )

    def _example(self) -> tuple:
        """The first validation image, its truth and the model's prediction, for TensorBoard."""
        image, truth = self.val_loader.dataset[0]
        image = image if isinstance(image, torch.Tensor) else torch.as_tensor(image)
        ready = model_input(image[None], self.context.device, torch.contiguous_format)[0]
        return image, truth, predicted_classes(self.net, ready, self.context.device)

    def _write_epoch_files(self, improved: bool, miou: float) -> None:
        with _keeping_checkpoints(self.checkpoints):
            if improved:
                best = {
                    "model": self.net.state_dict(),
                    "config": self.config.to_dict(),
                    "arithmetic": dataclasses.asdict(self.arithmetic),
                    "classes": self.classes.to_dict(),
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
            raise _diverged(f"weight {bad[0]} is NaN or infinite", state, self.checkpoints)
        if self.context.is_main:
            with _keeping_checkpoints(self.checkpoints):
                save_checkpoint(self._checkpoint(reason), path)
                prune_checkpoints(self.checkpoints, self.config.keep_last)
        distributed.barrier()
        return path

    def _checkpoint(self, reason: str) -> dict:
        state = self.state
        return {
            "model": self.net.state_dict(),
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
            "arithmetic": dataclasses.asdict(self.arithmetic),
            "classes": self.classes.to_dict(),
            "history": state.history,
            "reason": reason,
        }

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
            self._say(
                f"session {state.session} ended at epoch {state.epoch}, batch {state.batch}; "
                "run the same command again to resume"
            )
        elif tuple(config.eval_scales) != (1.0,) or config.eval_flip:
            evaluation = self._validate(scales=config.eval_scales, flip=config.eval_flip)
            result.metrics = self._metrics(evaluation, config.eval_scales, config.eval_flip)
            if self.context.is_main:
                write_json(self.out_dir / "metrics.json", result.metrics)
        return result

    def _say(self, message: str) -> None:
        if self.progress and self.context.is_main:
            tqdm.write(message)


def _latest_checkpoint(out_dir: Path, config: RunConfig):
    """(state, path) of the newest checkpoint that loads, checked against `config`; None for a
    fresh run folder."""
    resumed = load_latest(out_dir / "checkpoints")
    if resumed is None and (out_dir / "history.csv").exists():
        raise CheckpointError(
            f"{out_dir} holds a history.csv but no checkpoint to resume from; use a new output folder"
        )
    if resumed is not None:
        check_config(resumed.state["config"], config, resumed.path)
    return resumed


def _kept(checkpoints: Path) -> str:
    found = find_checkpoints(checkpoints)
    if found:
        return f"the last good checkpoint, {found[0]}, is kept"
    return "no checkpoint was written yet"


@contextmanager
def _keeping_checkpoints(checkpoints: Path):
    """A failed write (a full disk, a folder gone read-only) ends the run with one line: the
    file that could not be written and the newest good checkpoint, which stays."""
    try:
        yield
    except OSError as error:
        raise OSError(f"{error}; {_kept(checkpoints)}") from None


def _diverged(what: Exception | str, state: _Progress, checkpoints: Path) -> TrainingDiverged:
    kept = _kept(checkpoints)
    return TrainingDiverged(
        f"{what} at epoch {state.epoch + 1}, batch {state.batch + 1}: training stopped and {kept}. "
        "Lower the learning rate (--lr) or turn mixed precision off (--amp off), then run again "
        "to resume from it."
    )
