"""Batch-independent evaluation (each image at its own size) against padded batches, side by side.

    python benchmarks/bench_eval_batching.py [--repeats 3] [--batch 4]

Images of VOC's usual sizes (500 x 375, 375 x 500, 500 x 333, ...) through the paper's
DeepLabv3-ResNet50 (output stride 16, image pooling; random weights: speed does not depend on
them). "per image" is what `evaluate` does with `transforms.eval_collate`: a batch of different
sizes runs image by image, unpadded. "padded" is the old way: `pad_collate` pads a batch to its
largest image, so ASPP's image pooling averages over the padding too. Medians per pass over the
set; the ratio is padded / per image (> 1: per image is faster). It also reports whether each
way's confusion matrix changes with the batch size (per image: never; padded: it does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import interleaved_medians, print_header  # noqa: E402
from deeplab_kit.data.transforms import eval_collate, pad_collate  # noqa: E402
from deeplab_kit.evaluate import evaluate  # noqa: E402
from deeplab_kit.model import build_model  # noqa: E402

SIZES = [
    (375, 500),
    (500, 375),
    (333, 500),
    (500, 333),
    (375, 500),
    (480, 360),
    (400, 500),
    (281, 500),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    print_header(
        "bench_eval_batching: per-image evaluation vs padded batches",
        f"{len(SIZES)} images of VOC's sizes, DeepLabv3-ResNet50 OS16, batch {args.batch}",
    )
    generator = torch.Generator().manual_seed(0)
    samples = [
        (
            torch.randn(3, h, w, generator=generator),
            torch.randint(0, 21, (h, w), generator=generator),
        )
        for h, w in SIZES
    ]
    torch.manual_seed(0)
    model = build_model(num_classes=21).eval()

    def run(collate, batch):
        loader = DataLoader(samples, batch_size=batch, collate_fn=collate)
        return evaluate(model, loader, device="cpu", num_classes=21).confusion.matrix

    medians = interleaved_medians(
        {
            "per image": lambda: run(eval_collate, args.batch),
            "padded": lambda: run(pad_collate, args.batch),
        },
        repeats=args.repeats,
    )
    print("| way | median seconds per pass | padded / this |")
    print("|---|---|---|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds:.2f} | {medians['padded'] / seconds:.2f}x |")
    for name, collate in (("per image", eval_collate), ("padded", pad_collate)):
        same = torch.equal(run(collate, 1), run(collate, args.batch))
        print(f"# {name}: batch 1 and batch {args.batch} give the same confusion matrix: {same}")


if __name__ == "__main__":
    main()
