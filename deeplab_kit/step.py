"""The training step: one optimisation step on the fast path, its randomness keyed.

    step = make_train_step(model, optimizer, device="cuda", accumulation=2)
    loss = step(images, targets)             # forward, backward, (every 2 calls) an update

Fast path: channels_last, autocast (bf16 where the device has it, fp16 with a GradScaler on older
GPUs), cudnn.benchmark on CUDA; uint8 batches normalised on the device. `keyed_randomness` gives
the step's dropout a generator seeded by (seed, epoch, batch), so a resumed run draws the same
masks.
"""

from __future__ import annotations

import contextlib
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deeplab_kit import distributed
from deeplab_kit.device import amp_dtype, autocast, resolve_device
from deeplab_kit.transforms import model_input
from deeplab_kit.voc import IGNORE_INDEX


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


@contextmanager
def keyed_randomness(device: torch.device, *key: int):
    """Draws inside (dropout) come from a generator seeded by `key`; the caller's RNG state is
    untouched. So the same step of a run sees the same dropout masks, resumed or not."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, np.uint64)[0] >> 1)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(seed)
        yield
