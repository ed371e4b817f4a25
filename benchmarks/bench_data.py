"""Images/s of an epoch: read from the memory-mapped cache vs decode JPEG/PNG and resize each time.

Both sides are the same `VOCDataset` over the same files, with the same preset and the same
loader; only `cache_dir` differs. The preset is the one the kit's training loader uses ("report"
at --size, plus the keyed horizontal flip, yielding uint8 images that the train step normalises
on the device, see `transforms.uint8_where_exact`); --floats measures the preset that yields float32
images normalised in the loader instead. Masks are int64 either way. The files
are generated here: a VOC-format tree of --images JPEG images and palette PNG masks at VOC-like
sizes (500 x 375 and friends) with smooth content and a few objects, so they compress like photos.

    python benchmarks/bench_data.py [--images 200] [--size 256] [--repeats 5] [--floats]

The machine may be shared and noisy: both sides are timed alternately in one run, several times;
the ratio of the best epochs and the ratio of the medians are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere in the repo

from benchmarks.common import print_header  # noqa: E402
from deeplab_kit.data import VOCDataset  # noqa: E402
from deeplab_kit.loader import make_loader  # noqa: E402
from deeplab_kit.transforms import (
    make_transforms,  # noqa: E402
    uint8_where_exact,  # noqa: E402
)
from deeplab_kit.voc import VOC_PALETTE  # noqa: E402

VOC_LIKE_SIZES = ((500, 375), (375, 500), (500, 333), (500, 400), (486, 500))  # width, height


def make_tree(root: Path, count: int, seed: int = 0) -> Path:
    """A VOC 2012-format tree with `count` samples in split "train"."""
    rng = np.random.default_rng(seed)
    voc = root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    ids = [f"2012_{i:06d}" for i in range(count)]
    for i, sample_id in enumerate(ids):
        width, height = VOC_LIKE_SIZES[i % len(VOC_LIKE_SIZES)]
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        # A smooth background (gradients and waves), objects as ellipses with a void border.
        phase = rng.uniform(0, 6.28, size=3)
        image = np.stack(
            [
                127 + 80 * np.sin(x / rng.uniform(20, 90) + y / rng.uniform(20, 90) + p)
                for p in phase
            ],
            axis=-1,
        )
        labels = np.zeros((height, width), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
            ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
            inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
            labels[inside <= 1.1] = 255
            labels[inside <= 1.0] = rng.integers(1, 21)
            image[inside <= 1.0] = (
                rng.uniform(0, 255, size=3) + 20 * np.sin(x / 7)[inside <= 1.0, None]
            )
        image += rng.normal(0, 16, size=image.shape)  # photo-like texture: JPEGs near VOC's ~100 KB
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(
            voc / "JPEGImages" / f"{sample_id}.jpg", quality=90
        )
        mask = Image.fromarray(labels)
        mask.putpalette(VOC_PALETTE.tobytes())
        mask.save(voc / "SegmentationClass" / f"{sample_id}.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def epoch_rate(dataset: VOCDataset, epoch: int, batch_size: int, workers: int) -> float:
    """Images per second of one full epoch through the loader (batches materialised)."""
    loader = make_loader(dataset, batch_size, shuffle=True, num_workers=workers)
    loader.set_epoch(epoch)
    start = time.perf_counter()
    count = 0
    for images, _masks in loader:
        count += len(images)
    seconds = time.perf_counter() - start
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=256, help="the cached training resolution")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1, as in a DataLoader worker)"
    )
    parser.add_argument(
        "--floats", action="store_true", help="float32 images normalised in the loader"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print_header(
        "bench_data: an epoch from the cache vs decoding JPEG/PNG and resizing",
        versions={"numpy": np.__version__, "pillow": Image.__version__},
    )
    preset = make_transforms("report", size=args.size, hflip=True)
    if not args.floats:
        preset = uint8_where_exact(preset)
    output = "uint8 images" if not preset.normalize else "float32 images"
    with tempfile.TemporaryDirectory() as temp:
        start = time.perf_counter()
        root = make_tree(Path(temp) / "voc", args.images)
        jpeg_kb = np.mean([p.stat().st_size for p in root.rglob("*.jpg")]) / 1024
        print(
            f"# data: {args.images} JPEG+PNG pairs at VOC-like sizes (mean JPEG {jpeg_kb:.0f} KB), "
            f"generated in {time.perf_counter() - start:.1f} s"
        )
        from_files = VOCDataset(root, "train", preset)
        start = time.perf_counter()
        cached = VOCDataset(root, "train", preset, cache_dir=Path(temp) / "cache")
        build = time.perf_counter() - start
        start = time.perf_counter()
        VOCDataset(root, "train", preset, cache_dir=Path(temp) / "cache")  # manifest check only
        reopen = time.perf_counter() - start
        print(
            f"# cache: built in {build:.2f} s, reopened (manifest matched) in {reopen * 1000:.0f} ms"
        )

        rates = {"decode+resize": [], "cache": []}
        for repeat in range(args.repeats):  # alternate the two sides so noise hits both
            rates["decode+resize"].append(
                epoch_rate(from_files, repeat, args.batch_size, args.workers)
            )
            rates["cache"].append(epoch_rate(cached, repeat, args.batch_size, args.workers))
    print(
        f"# {args.repeats} epochs each, batch {args.batch_size}, {args.workers} workers, "
        f"preset report size={args.size} hflip=True, {output}; images/s per epoch:"
    )
    for name, values in rates.items():
        print(
            f"{name:>14}: best {max(values):6.0f}   median {statistics.median(values):6.0f}   "
            f"all {[round(v) for v in values]}"
        )
    # Other processes only ever slow an epoch down, so the best epoch is the least disturbed
    # estimate of each side (as timeit advises); the ratio of medians is printed as well.
    best = max(rates["cache"]) / max(rates["decode+resize"])
    median = statistics.median(rates["cache"]) / statistics.median(rates["decode+resize"])
    print(f"ratio cache / decode+resize: {best:.1f}x best, {median:.1f}x median (target >= 20x)")


if __name__ == "__main__":
    main()
