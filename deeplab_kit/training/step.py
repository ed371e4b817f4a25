"""The training step: one optimisation step in a given arithmetic, its randomness keyed.

    criterion = Criterion(aux_weight=0.5)          # deeplab_kit.training.loss
    step = TrainStep(model, optimizer, device="cpu", arithmetic=Arithmetic("bf16", True),
                     criterion=criterion, accumulation=2)
    loss = step(images, targets)    # forward, backward, (every 2 calls) an optimiser update

The arithmetic (precision and memory layout) is decided before the step is built
(`deeplab_kit.runtime.arithmetic.choose`); the step moves the model to its layout once. uint8
batches are normalised on the device. `keyed_randomness` gives the step's dropout a generator
seeded by (seed, epoch, batch, rank), so a resumed run draws the same masks.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeplab_kit.data.transforms import model_input
from deeplab_kit.runtime import distributed
from deeplab_kit.runtime.arithmetic import FP32, Arithmetic
from deeplab_kit.runtime.device import autocast, resolve_device
from deeplab_kit.training.loss import Criterion


class TrainStep:
    """`step(images, targets) -> loss`: forward, backward and, every `accumulation` calls, an
    optimiser update. The returned loss is detached and, under DDP, the mean over processes; a
    NaN or infinite loss raises FloatingPointError before anything is updated.

    Args:
        arithmetic: precision and layout (fp32 contiguous unless given).
        criterion: a `Criterion` unless given.
        scaler: a GradScaler, made here for fp16 (CUDA only) unless given.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        device: str | torch.device,
        arithmetic: Arithmetic = FP32,
        criterion: nn.Module | None = None,
        scaler: torch.amp.GradScaler | None = None,
        accumulation: int = 1,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.device = resolve_device(device)
        self.arithmetic = arithmetic
        self.criterion = criterion if criterion is not None else Criterion()
        self.accumulation = accumulation
        self.calls = 0
        # loss scaling for fp16 only (bf16 has fp32's range)
        self.scaler = scaler or torch.amp.GradScaler(
            self.device.type, enabled=arithmetic.amp == "fp16"
        )
        if not isinstance(model, DistributedDataParallel):  # DDP's module is placed first
            # in place: the optimizer's tensors stay the same objects
            model.to(self.device, memory_format=arithmetic.memory_format)
        if self.device.type == "cuda" and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        images = model_input(images, self.device, self.arithmetic.memory_format)  # (N, 3, H, W)
        targets = targets.to(self.device, non_blocking=True)  # (N, H, W)
        last = (self.calls + 1) % self.accumulation == 0
        # Under DDP, gradients are averaged across processes only on the last accumulated batch.
        accumulating = isinstance(self.model, DistributedDataParallel) and not last
        with self.model.no_sync() if accumulating else contextlib.nullcontext():
            with autocast(self.device, self.arithmetic.dtype):
                outputs = self.model(images)
            loss = self.criterion(outputs, targets)
            observed = distributed.mean(loss.detach())  # every process sees the same value
            if not torch.isfinite(observed):
                raise FloatingPointError(f"the loss is {observed.item()}")
            self.scaler.scale(loss / self.accumulation).backward()
        self.calls += 1
        if last:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
        return observed


@contextmanager
def keyed_randomness(device: torch.device, *key: int):
    """Draws inside (dropout) come from a generator seeded by `key`; the caller's RNG state is
    untouched. So the same step of a run sees the same dropout masks, resumed or not."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
