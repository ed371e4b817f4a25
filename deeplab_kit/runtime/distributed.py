"""Data-parallel training under `torchrun`: process-group set-up and the few collectives the
training loop needs. Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from deeplab_kit.runtime.device import resolve_device


@dataclass
class Context:
    """Where this process runs: its rank among `world_size` processes and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # True when `setup` created the process group (and must end it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str | torch.device = "auto") -> Context:
    """Join torchrun's process group if launched by torchrun (gloo on CPU, nccl on GPU); each
    process takes the GPU of its LOCAL_RANK."""
    device = resolve_device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 and not dist.is_initialized():
        return Context(rank=0, world_size=1, device=device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(dist.get_rank(), dist.get_world_size(), device, owns_group=owns)


def teardown(context: Context) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def is_active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without DDP)."""
    return dist.get_rank() if is_active() else 0


def mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over all processes (the tensor itself without DDP)."""
    if not is_active():
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision, the same in every process (e.g. "the session time is up")."""
    if not is_active():
        return flag
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, 0)
    return bool(tensor.item())


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every process rank 0's batch-norm statistics (each process updated its own)."""
    if not is_active():
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, 0)


def barrier() -> None:
    if is_active():
        dist.barrier()
