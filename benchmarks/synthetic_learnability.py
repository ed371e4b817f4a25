"""How fast does a DeepLabv3 learn the synthetic VOC on this machine? (a script, not a test)

Generates the synthetic dataset, trains one configuration with a plain loop (channels_last,
bf16 autocast where the CPU has it, keyed shuffling and flips), and prints the val mIoU after
every epoch with the seconds spent training so far, then the IoU of every class. The defaults
are the recipe chosen for `python -m deeplab_kit demo`:

    python benchmarks/synthetic_learnability.py --data data/synthetic96

3000 train / 100 val images of 96x96; build_model(backbone="resnet26", backbone_width=16,
output_stride=16, atrous_rates=(1, 2, 3), aspp_channels=64, decoder=True); AdamW lr 6e-3,
weight decay 1e-4, OneCycleLR per step (10% warm-up), batch 16, 10 epochs. On the 2-core
AVX512-BF16 machine, otherwise idle: ~17 s to generate, ~21 s per epoch, val mIoU ~0.55.
Other configurations: `--width 64 --size 64` (torchvision's width), `--no-decoder`, ...

Timings are noisy when other jobs share the CPU (with 2 torch threads a busy neighbour can slow
a run several times over): repeat a run and compare runs made side by side.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from benchmarks.common import print_header  # noqa: E402
from deeplab_kit.data.classes import (  # noqa: E402
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_CLASSES,
    VOC_CLASSES,
)
from deeplab_kit.data.synthetic import make_synthetic_voc  # noqa: E402
from deeplab_kit.model import build_model  # noqa: E402
from deeplab_kit.runtime.device import amp_dtype, autocast  # noqa: E402


def parse_args() -> argparse.Namespace:
    """The defaults are the recipe found for the demo (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="data/synthetic-learnability",
        help="dataset root (under the checkout's data/)",
    )
    p.add_argument("--train", type=int, default=3000, help="training images")
    p.add_argument("--val", type=int, default=100, help="validation images")
    p.add_argument("--size", type=int, default=96, help="image side (generated at this size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="resnet26")
    p.add_argument("--width", type=int, default=16, help="backbone_width (64: torchvision's)")
    p.add_argument("--output-stride", type=int, default=16)
    p.add_argument("--rates", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--aspp-channels", type=int, default=64)
    p.add_argument("--no-decoder", dest="decoder", action="store_false", help="plain DeepLabv3")
    p.add_argument("--no-image-pooling", action="store_true")
    p.add_argument("--aspp-dropout", type=float, default=0.5)
    p.add_argument("--optimizer", choices=["adamw", "adam", "sgd"], default="adamw")
    p.add_argument("--lr", type=float, default=6e-3, help="peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument(
        "--schedule", choices=["onecycle", "poly", "cosine", "constant"], default="onecycle"
    )
    p.add_argument("--warmup", type=float, default=0.1, help="onecycle: fraction rising")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--budget", type=float, default=0, help="stop after this many training seconds")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "off"])
    p.add_argument("--save", default="", help="write the weights and val confusion here")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    return p.parse_args()


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N, 3, H, W) and int64 masks (N, H, W), read from the files."""
    voc = root / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets" / "Segmentation" / f"{split}.txt").read_text().split()
    images = np.stack([np.asarray(Image.open(voc / "JPEGImages" / f"{i}.jpg")) for i in ids])
    masks = np.stack([np.asarray(Image.open(voc / "SegmentationClass" / f"{i}.png")) for i in ids])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255  # (N, 3, H, W)
    mean, std = (
        torch.tensor(IMAGENET_MEAN)[:, None, None],
        torch.tensor(IMAGENET_STD)[:, None, None],
    )
    return (x - mean) / std, torch.from_numpy(masks).long()


def make_schedule(optimizer, kind: str, total_steps: int, warmup: float):
    if kind == "onecycle":
        lr = optimizer.param_groups[0]["lr"]
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total_steps, pct_start=warmup
        )
    if kind == "poly":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: (1 - step / total_steps) ** 0.9
        )
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def class_iou(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class (NaN where a class is neither present nor predicted)."""
    inter = confusion.diag().double()
    union = (confusion.sum(0) + confusion.sum(1) - confusion.diag()).double()
    return inter / union


def miou(confusion: torch.Tensor) -> float:
    return float(class_iou(confusion).nanmean())


@torch.no_grad()
def evaluate(model, images, masks, dtype, batch: int) -> torch.Tensor:
    """The (classes, classes) confusion matrix of the model's predictions, rows = truth."""
    model.eval()
    confusion = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.int64)
    device = torch.device("cpu")
    for start in range(0, len(images), batch):
        x = images[start : start + batch].contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            pred = model(x)["out"].argmax(1)  # (N, H, W)
        target = masks[start : start + batch]
        keep = target != IGNORE_INDEX
        confusion += torch.bincount(
            target[keep] * NUM_CLASSES + pred[keep], minlength=NUM_CLASSES**2
        ).view(NUM_CLASSES, NUM_CLASSES)
    return confusion


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    dtype = amp_dtype(device, args.amp)
    print_header("synthetic VOC learnability", f"autocast {dtype}, channels_last")

    start = time.perf_counter()
    root = make_synthetic_voc(args.data, args.train, args.val, args.size, args.seed)
    train_x, train_y = load_split(root, "train")
    val_x, val_y = load_split(root, "val")
    print(
        f"data: {len(train_x)} train, {len(val_x)} val at {args.size}px "
        f"in {time.perf_counter() - start:.1f} s"
    )

    torch.manual_seed(args.seed)
    model = build_model(
        backbone=args.backbone,
        backbone_width=args.width,
        output_stride=args.output_stride,
        atrous_rates=args.rates,
        aspp_channels=args.aspp_channels,
        decoder=args.decoder,
        image_pooling=not args.no_image_pooling,
        aspp_dropout=args.aspp_dropout,
    )
    model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), args.lr, momentum=0.9, weight_decay=args.weight_decay
        )
    else:
        kind = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
        optimizer = kind(model.parameters(), args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = len(train_x) // args.batch  # drop_last: every batch the same shape
    schedule = make_schedule(optimizer, args.schedule, steps_per_epoch * args.epochs, args.warmup)
    print(
        f"model: {args.backbone} width {args.width} OS{args.output_stride} rates {args.rates} "
        f"aspp {args.aspp_channels} decoder {args.decoder}, {params / 1e6:.1f}M parameters; "
        f"{args.optimizer} lr {args.lr} {args.schedule}, batch {args.batch}, "
        f"{args.epochs} epochs of {steps_per_epoch} steps, amp {dtype}"
    )

    train_seconds = 0.0
    for epoch in range(args.epochs):
        model.train()
        tic = time.perf_counter()
        order = torch.randperm(
            len(train_x), generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)
        )
        flips = (
            torch.rand(
                len(train_x),
                generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch + 50_000),
            )
            < 0.5
        )
        losses = []
        for step in range(steps_per_epoch):
            index = order[step * args.batch : (step + 1) * args.batch]
            x, y = train_x[index], train_y[index]
            flip = flips[index]
            x[flip], y[flip] = x[flip].flip(-1), y[flip].flip(-1)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, dtype):
                logits = model(x)["out"]
            loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            losses.append(loss.item())
        train_seconds += time.perf_counter() - tic
        tic = time.perf_counter()
        confusion = evaluate(model, val_x, val_y, dtype, args.batch)
        score = miou(confusion)
        fit = miou(evaluate(model, train_x[: len(val_x)], train_y[: len(val_x)], dtype, args.batch))
        print(
            f"epoch {epoch + 1:3d}  loss {np.mean(losses):.3f}  train mIoU {fit:.3f}  "
            f"val mIoU {score:.3f}  "
            f"train {train_seconds:6.1f} s  eval {time.perf_counter() - tic:4.1f} s  "
            f"total {time.perf_counter() - start:6.1f} s",
            flush=True,
        )
        if args.budget and train_seconds > args.budget:
            print(f"budget of {args.budget:.0f} s reached")
            break
    if args.save:
        torch.save({"model": model.state_dict(), "confusion": confusion}, args.save)
    ious = class_iou(confusion)
    print(
        "val IoU per class: "
        + ", ".join(
            f"{name} {iou:.2f}" for name, iou in zip(VOC_CLASSES, ious.tolist(), strict=True)
        )
    )


if __name__ == "__main__":
    main()
