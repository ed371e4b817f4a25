"""ConfusionMatrix.update against torchmetrics' MulticlassJaccardIndex.update, side by side.

    python benchmarks/bench_metrics.py [--batch 16] [--size 512] [--repeats 15] [--devices cpu,cuda]

Both get the same int64 (N, H, W) predictions and targets (21 classes, 10% void = 255), one update
after the other in each round, so a busy machine slows both alike; medians are reported. The
ratio is torchmetrics' time over ours (> 1: ours is faster). torchmetrics is timed as it comes
(validate_args=True, which checks the label values on every update) and with validate_args=False.
Afterwards both have counted the same batches: their matrices and mIoU are compared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torchmetrics
from torchmetrics.classification import MulticlassJaccardIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import print_header  # noqa: E402
from deeplab_kit.metrics import ConfusionMatrix  # noqa: E402

NUM_CLASSES, IGNORE = 21, 255


def make_inputs(batch: int, size: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    shape = (batch, size, size)
    target = torch.randint(0, NUM_CLASSES, shape, generator=g)
    pred = torch.where(
        torch.rand(shape, generator=g) < 0.7,
        target,
        torch.randint(0, NUM_CLASSES, shape, generator=g),
    )
    target[torch.rand(shape, generator=g) < 0.1] = IGNORE
    return pred.to(device), target.to(device)


def bench_device(device: torch.device, args) -> None:
    pred, target = make_inputs(args.batch, args.size, device)
    ours = ConfusionMatrix(NUM_CLASSES, IGNORE, device=device)
    peer = MulticlassJaccardIndex(NUM_CLASSES, ignore_index=IGNORE).to(device)
    peer_unchecked = MulticlassJaccardIndex(NUM_CLASSES, ignore_index=IGNORE, validate_args=False)
    contenders = {
        "deeplab_kit ConfusionMatrix": ours.update,
        "torchmetrics (validate_args=True)": peer.update,
        "torchmetrics (validate_args=False)": peer_unchecked.to(device).update,
    }
    # On CUDA, several updates run back to back before one synchronisation: a host sync inside
    # update then shows as lost throughput, as it would in an evaluation loop.
    inner = 10 if device.type == "cuda" else 1
    times = {name: [] for name in contenders}
    for round_ in range(args.repeats + 2):  # two warm-up rounds
        for name, update in contenders.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(inner):
                update(pred, target)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_ >= 2:
                times[name].append((time.perf_counter() - start) / inner)

    ours_time = statistics.median(times["deeplab_kit ConfusionMatrix"])
    pixels = pred.numel()
    print(f"\n## {device.type}: median of {args.repeats} rounds")
    print(f"{'update':38s} {'ms':>9s} {'Mpixel/s':>10s} {'torchmetrics/ours':>18s}")
    for name, samples in times.items():
        t = statistics.median(samples)
        ratio = f"{t / ours_time:.2f}x" if name != "deeplab_kit ConfusionMatrix" else ""
        print(f"{name:38s} {1e3 * t:9.2f} {pixels / t / 1e6:10.1f} {ratio:>18s}")

    same = torch.equal(ours.matrix, peer.confmat)
    ours_miou, peer_miou = ours.compute()["miou"], float(peer.compute())
    print(
        f"compute(): matrices equal: {same}; mIoU ours {ours_miou:.8f}, torchmetrics "
        f"{peer_miou:.8f}, |difference| {abs(ours_miou - peer_miou):.1e} (torchmetrics in float32)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    default_devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--devices", default=default_devices)
    args = parser.parse_args()
    print_header(
        "bench_metrics: ConfusionMatrix.update vs torchmetrics MulticlassJaccardIndex.update",
        f"inputs: int64 ({args.batch}, {args.size}, {args.size}), {NUM_CLASSES} classes, 10% void",
        versions={"torchmetrics": torchmetrics.__version__},
    )
    for name in args.devices.split(","):
        bench_device(torch.device(name), args)


if __name__ == "__main__":
    main()
