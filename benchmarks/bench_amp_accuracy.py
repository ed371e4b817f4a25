"""Accuracy guard for the fast path: the demo trained with bf16 autocast and in full fp32.

    python benchmarks/bench_amp_accuracy.py [--out runs/amp-guard] [--epochs N]

Both runs use the demo recipe on the same generated dataset, the same seed and the same data
order; only `amp` differs ("bf16" vs "off"). Prints each run's val mIoU, its training seconds
and the difference in mIoU points (target: within 1 point).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import print_header  # noqa: E402
from deeplab_kit.course.demo import run_demo  # noqa: E402
from deeplab_kit.training.config import RunConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/amp-guard", help="parent folder of the two runs")
    parser.add_argument("--data", default="data/synthetic", help="the demo's generated dataset")
    parser.add_argument("--epochs", type=int, help="default: the demo recipe's")
    args = parser.parse_args()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    print_header("bench_amp_accuracy: demo recipe, bf16 autocast vs fp32", f"overrides {overrides}")

    scores = {}
    for amp in ("bf16", "off"):
        config = RunConfig.from_recipe("demo", amp=amp, **overrides)
        start = time.perf_counter()
        result = run_demo(Path(args.out) / amp, args.data, config=config, progress=False)
        scores[amp] = result.metrics["miou"]
        print(f"amp={amp:>4}: val mIoU {scores[amp]:.4f}  ({time.perf_counter() - start:.0f} s)")
    gap = 100 * (scores["bf16"] - scores["off"])
    print(f"bf16 - fp32: {gap:+.2f} mIoU points (target: within 1 point)")


if __name__ == "__main__":
    main()
