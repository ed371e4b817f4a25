"""The training step: one optimisation step on the fastest path, its randomness keyed.

    criterion = Criterion(aux_weight=0.5)          # deeplab_kit.training.loss
    step = TrainStep(model, optimizer, device="cpu", criterion=criterion, accumulation=2)
    loss = step(images, targets)    # forward, backward, (every 2 calls) an optimiser update
    step.choice.line()              # the path it took and why (see deeplab_kit.training.fastpath)

The path (precision and memory format) is given, or with "auto" chosen at the first call by
timing a few steps of a copy of the model at that batch's shape in each candidate path
(`deeplab_kit.training.fastpath`). uint8 batches are normalised on the device. `keyed_randomness` gives
the step's dropout a generator seeded by (seed, epoch, batch, rank), so a resumed run draws the
same masks.
"""

from __future__ import annotations

import contextlib
import copy
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeplab_kit.data.transforms import model_input
from deeplab_kit.training import distributed, fastpath
from deeplab_kit.training.device import autocast, resolve_device
from deeplab_kit.training.fastpath import Choice, Path
from deeplab_kit.training.loss import Criterion

PROBE_STEPS = 3  # the losses compared by the accuracy guard: the first steps of each path


class TrainStep:
    """`step(images, targets) -> loss`: forward, backward and, every `accumulation` calls, an
    optimiser update. The returned loss is detached and, under DDP, the mean over processes; a
    NaN or infinite loss raises FloatingPointError before anything is updated.

    Args:
        amp, channels_last: "auto" (timed at the first call, see `deeplab_kit.training.fastpath`) or an
            explicit setting; `path` instead fixes both (a resumed run passes its own).
        criterion: a `Criterion` unless given.
        scaler: a GradScaler, made here for fp16 (CUDA only) unless given.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: str | torch.device,
        amp: str = "auto",
        channels_last: bool | str = "auto",
        path: Path | None = None,
        criterion: nn.Module | None = None,
        scaler: torch.amp.GradScaler | None = None,
        accumulation: int = 1,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.device = resolve_device(device)
        self.criterion = criterion if criterion is not None else Criterion()
        self.accumulation = accumulation
        self.calls = 0
        self.choice: Choice | None = None
        self.scaler = scaler
        if path:
            self.paths = [path]
        elif self.device.type == "cuda":
            self.paths = [fastpath.cuda_rule(self.device, amp, channels_last)]
        else:
            self.paths = fastpath.candidates(self.device, amp, channels_last)
        if len(self.paths) == 1:
            how = "rule" if self.device.type == "cuda" and not path and amp == "auto" else "given"
            self._take(Choice(self.paths[0], how))
        if self.device.type == "cuda" and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True

    @property
    def path(self) -> Path | None:
        return self.choice.path if self.choice else None

    def resolve(self, images: torch.Tensor, targets: torch.Tensor) -> Choice:
        """Choose the path now, timing the candidates on this batch when needed (the first call
        does it with its own batch)."""
        if self.choice is None:
            self._take(self._probe(images, targets))
        return self.choice

    def _take(self, choice: Choice) -> None:
        self.choice = choice
        if self.scaler is None:  # loss scaling for fp16 only (bf16 has fp32's range)
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=choice.path.amp == "fp16")
        if not isinstance(self.model, DistributedDataParallel):  # DDP's module is placed first
            # in place: the optimizer's tensors stay the same objects
            self.model.to(self.device, memory_format=choice.path.memory_format)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.choice is None:
            self.resolve(images, targets)
        path = self.choice.path
        images = model_input(images, self.device, path.memory_format)  # (N, 3, H, W)
        targets = targets.to(self.device, non_blocking=True)  # (N, H, W)
        last = (self.calls + 1) % self.accumulation == 0
        # Under DDP, gradients are averaged across processes only on the last accumulated batch.
        accumulating = isinstance(self.model, DistributedDataParallel) and not last
        with self.model.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(self.device, path.dtype):
                outputs = self.model(images)
            loss = self.criterion(outputs, targets)
            observed = loss.detach()
            if isinstance(self.model, DistributedDataParallel):
                observed = distributed.mean(observed)  # every process sees the same value
            if not torch.isfinite(observed):
                raise FloatingPointError(f"the loss is {observed.item()}")
            self.scaler.scale(loss / self.accumulation).backward()
        self.calls += 1
        if last:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return observed

    # --- choosing the path ---------------------------------------------------------------

    def _probe(self, images: torch.Tensor, targets: torch.Tensor) -> Choice:
        """Time a few steps of a copy of the model on this batch in each candidate path (rank 0
        under DDP, which then tells the others)."""
        net = self.model.module if isinstance(self.model, DistributedDataParallel) else self.model
        shape = list(images.shape)
        model = getattr(net, "config", type(net).__name__)
        key = fastpath.cache_key(
            self.device,
            mode="train",
            shape=shape,
            model=model,
            optimizer=type(self.optimizer).__name__,
        )
        choice = None
        if distributed.rank() == 0:
            with torch.random.fork_rng(devices=[]):
                run = _train_probe(
                    net, self.optimizer, self.criterion, self.device, images, targets
                )
                choice = fastpath.choose(
                    key, self.paths, run, about={"mode": "train", "shape": shape, "model": model}
                )
        return distributed.from_main(choice)


def probe_batch(batch_size: int, size: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of a run's shape, to choose its path before the first real batch: uint8
    images (N, 3, size, size) and labels (N, size, size) below `num_classes`."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(
        0, 256, (batch_size, 3, size, size), dtype=torch.uint8, generator=generator
    )
    return images, torch.randint(0, num_classes, (batch_size, size, size), generator=generator)


def _train_probe(net, optimizer, criterion, device, images, targets):
    """`run(path) -> (seconds per step, the first steps' losses)` for `fastpath.choose`: a copy
    of the model and of the optimizer (same groups and settings) trains on `images, targets`,
    every path from the same weights with the same dropout masks."""

    def run(path: Path) -> tuple[float, torch.Tensor]:
        copied = copy.deepcopy(net).train()
        step = TrainStep(
            copied,
            _same_optimizer(optimizer, net, copied),
            device=device,
            path=path,
            criterion=criterion,
        )
        losses: list[torch.Tensor] = []

        def one_step() -> None:
            torch.manual_seed(len(losses))  # the same dropout masks in every path
            losses.append(step(images, targets))

        seconds = fastpath.median_seconds(one_step, device)
        return seconds, torch.stack(losses[:PROBE_STEPS]).float().cpu()

    return run


def _same_optimizer(optimizer, original: nn.Module, copied: nn.Module):
    """A fresh optimizer of `optimizer`'s class over `copied`'s parameters, group by group."""
    position = {id(p): k for k, p in enumerate(original.parameters())}
    params = list(copied.parameters())
    groups = [
        {
            **{k: v for k, v in group.items() if k != "params"},
            "params": [params[position[id(p)]] for p in group["params"]],
        }
        for group in optimizer.param_groups
    ]
    return type(optimizer)(groups)  # every group carries all its settings


# --- randomness --------------------------------------------------------------------------


@contextmanager
def keyed_randomness(device: torch.device, *key: int):
    """Draws inside (dropout) come from a generator seeded by `key`; the caller's RNG state is
    untouched. So the same step of a run sees the same dropout masks, resumed or not."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
