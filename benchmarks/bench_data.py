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
from deeplab_kit.data.loader import make_loader  # noqa: E402
from deeplab_kit.data.synthetic import make_voc_like_tree  # noqa: E402
from deeplab_kit.data.transforms import (
    make_transforms,  # noqa: E402
    uint8_where_exact,  # noqa: E402
)
from deeplab_kit.data.voc import VOCDataset  # noqa: E402


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
        root = make_voc_like_tree(Path(temp) / "voc", {"train": args.images})
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
