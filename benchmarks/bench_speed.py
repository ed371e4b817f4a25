"""Training-step and evaluation speed, and a training step's peak memory: the kit's default path
and each of its candidate paths against torchvision's DeepLabv3-ResNet50 run the plain way,
side by side in one run.

    python benchmarks/bench_speed.py [--batch 4] [--size 256] [--repeats 5] [--device auto]
    python benchmarks/bench_speed.py --default-only   # plain against the rule's arithmetic only

Both sides are the same network (torchvision's `deeplabv3_resnet50`: output stride 8, ASPP rates
(12, 24, 36), no aux head; the kit builds it with `from_preset("torchvision", aux_loss=False)`),
with the same batch, input size, Adam (lr 1e-4) and cross-entropy ignoring 255.
- train, plain: fp32, contiguous tensors, forward, loss, backward, optimizer step.
- train, kit <arithmetic>: `step.TrainStep` in each candidate arithmetic (fp32 or bf16
  autocast, contiguous or channels_last), with the kit's optimizer (`schedule.make_optimizer`).
- train, kit default: `step.TrainStep` in the arithmetic the kit's rule takes on this machine
  (`deeplab_kit.runtime.arithmetic.choose`, printed).
- eval, plain: `torch.no_grad`, fp32, forward, argmax, a bincount confusion matrix.
- eval, kit: `evaluate.evaluate(model, batches, device=...)` with its defaults (inference mode,
  the rule's arithmetic, the kit's ConfusionMatrix).
- memory: each path in a fresh process; the growth of peak RSS during one step after a warm-up
  step (CPU), or the peak of allocated CUDA memory over what was allocated before the step (GPU).
Steps alternate between the two sides in every round, so a busy machine slows both alike.
Ratios are plain time / kit time (> 1: the kit is faster) and plain memory / kit memory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn
from torchvision.models.segmentation import deeplabv3_resnet50

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import interleaved_medians, print_header  # noqa: E402
from deeplab_kit.config import RunConfig  # noqa: E402
from deeplab_kit.evaluate import evaluate  # noqa: E402
from deeplab_kit.model import from_preset  # noqa: E402
from deeplab_kit.runtime.arithmetic import Arithmetic, choose  # noqa: E402
from deeplab_kit.runtime.device import resolve_device  # noqa: E402
from deeplab_kit.training.schedule import make_optimizer  # noqa: E402
from deeplab_kit.training.step import TrainStep  # noqa: E402

NUM_CLASSES, IGNORE = 21, 255


def make_batch(batch: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)  # (N, 3, H, W)
    masks = torch.randint(0, NUM_CLASSES, (batch, size, size), generator=g)  # (N, H, W)
    masks[:, :, : size // 10] = IGNORE  # some void, as VOC has
    return images, masks


def plain_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).to(
        device
    )


def kit_model(device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return from_preset("torchvision", aux_loss=False).to(device)


def plain_train_step(model: nn.Module, optimizer, device: torch.device):
    criterion = nn.CrossEntropyLoss(ignore_index=IGNORE)

    def step(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        images, masks = images.to(device), masks.to(device)
        loss = criterion(model(images)["out"], masks)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def plain_evaluate(model: nn.Module, batches, device: torch.device) -> torch.Tensor:
    matrix = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.int64, device=device)
    model.eval()
    with torch.no_grad():
        for images, masks in batches:
            pred = model(images.to(device))["out"].argmax(1)
            masks = masks.to(device)
            valid = masks != IGNORE
            matrix += torch.bincount(
                NUM_CLASSES * masks[valid] + pred[valid], minlength=NUM_CLASSES**2
            )
    return matrix.view(NUM_CLASSES, NUM_CLASSES)


def kit_step(device: torch.device, arithmetic: Arithmetic) -> TrainStep:
    """The kit's train step on its own copy of the model, in `arithmetic`."""
    model = kit_model(device).train()
    optimizer = make_optimizer(model, RunConfig(optimizer="adam", lr=1e-4))
    return TrainStep(model, optimizer, device=device, arithmetic=arithmetic)


def train_steps(device: torch.device, batch, candidates=()) -> dict:
    """{name: a function running one step}: plain, the kit in each of `candidates`, the kit in
    the rule's arithmetic ("kit default")."""
    plain = plain_model(device).train()
    plain_step = plain_train_step(plain, torch.optim.Adam(plain.parameters(), lr=1e-4), device)
    steps = {"plain": lambda: plain_step(*batch)}
    for arithmetic in candidates:
        step = kit_step(device, arithmetic)
        steps[f"kit {arithmetic}"] = lambda step=step: step(*batch)
    default = kit_step(device, choose(device))
    steps["kit default"] = lambda: default(*batch)
    return steps


def eval_passes(device: torch.device, batches):
    plain, kit = plain_model(device), kit_model(device)
    return {
        "plain": lambda: plain_evaluate(plain, batches, device),
        "kit": lambda: evaluate(kit, batches, device=device, num_classes=NUM_CLASSES),
    }


def peak_step_memory(side: str, device: torch.device, batch_size: int, size: int) -> int:
    """Bytes a training step needs beyond what is held before it (run in a fresh process)."""
    batch = make_batch(batch_size, size)
    step = train_steps(device, batch)[side if side == "plain" else "kit default"]
    step()  # warm-up: optimizer state, allocator caches
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _proc_status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    step()
    return _proc_status_bytes("VmHWM") - before


def _proc_status_bytes(key: str) -> int:
    """A memory figure of this process from /proc/self/status (Linux), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {key}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per measurement")
    parser.add_argument("--eval-batches", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--default-only",
        action="store_true",
        help="time only the rule's arithmetic against plain (bf16 without native kernels is slow)",
    )
    parser.add_argument("--memory-child", choices=["plain", "kit"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = resolve_device(args.device)

    if args.memory_child:
        print(json.dumps(peak_step_memory(args.memory_child, device, args.batch, args.size)))
        return

    print_header(
        "bench_speed: the kit's training step (each path, and its default) and evaluation vs "
        "torchvision's plain way",
        f"device {device}; plain: fp32, contiguous",
        f"deeplabv3_resnet50 (OS8, rates 12/24/36), batch {args.batch}, {args.size}x{args.size}, "
        f"Adam, median of {args.repeats} rounds",
    )
    batch = make_batch(args.batch, args.size)
    candidates = [Arithmetic(amp, layout) for amp in ("off", "bf16") for layout in (False, True)]
    if device.type == "cuda" or args.default_only:
        candidates = []
    steps = train_steps(device, batch, candidates)
    print(f"kit default: the rule's arithmetic here, {choose(device)}")
    seconds = interleaved_medians(steps, args.repeats)
    for name in steps:
        if name != "plain":
            report(f"train, {name}", {"plain": seconds["plain"], "kit": seconds[name]}, args.batch)
    if candidates:
        fastest = min(seconds[name] for name in steps if name.startswith("kit "))
        print(
            f"kit default: {seconds['kit default'] / fastest - 1:+.1%} against the fastest kit "
            f"arithmetic; {seconds['plain'] / seconds['kit default']:.2f}x the plain step"
        )

    batches = [make_batch(args.batch, args.size, seed=i) for i in range(args.eval_batches)]
    seconds = interleaved_medians(eval_passes(device, batches), args.repeats)
    report("evaluation", seconds, args.batch * args.eval_batches)

    if not args.skip_memory:
        peaks = {}
        for side in ("plain", "kit"):
            command = [
                sys.executable,
                __file__,
                "--memory-child",
                side,
                "--batch",
                str(args.batch),
                "--size",
                str(args.size),
                "--device",
                str(device),
            ]
            peaks[side] = json.loads(
                subprocess.run(command, capture_output=True, text=True, check=True).stdout
            )
        print(
            f"train step peak memory: plain {peaks['plain'] / 2**20:8.0f} MiB   kit {peaks['kit'] / 2**20:8.0f} MiB"
            f"   ratio plain/kit {peaks['plain'] / peaks['kit']:.2f}x"
        )


def report(what: str, seconds: dict[str, float], images: int) -> None:
    plain, kit = seconds["plain"], seconds["kit"]
    print(
        f"{what:>48}: {kit:7.3f} s ({images / kit:6.2f} img/s)   plain {plain:7.3f} s   "
        f"ratio plain/kit {plain / kit:.2f}x"
    )


if __name__ == "__main__":
    main()
