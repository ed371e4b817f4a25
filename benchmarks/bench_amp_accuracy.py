"""Accuracy guard for the fast path over seeds: the demo trained with bf16 autocast and in full
fp32, seed by seed.

    python benchmarks/bench_amp_accuracy.py [--seeds 0,1,2] [--out runs/amp-guard] [--epochs N]

Each pair of runs uses the demo recipe on the same generated dataset, with the same seed (the
same initial weights and data order); only `amp` differs ("bf16" vs "off"), and the memory
format is fixed (channels_last) so that precision alone changes. Prints each run's val mIoU and
training seconds, each seed's bf16 - fp32 difference, their mean and standard deviation, and a
paired t-test: whether bf16 costs accuracy beyond what a different seed moves anyway (target:
the mean within 1 point). The demo's time per precision is the machine's own to state.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import print_header  # noqa: E402
from deeplab_kit.config import RunConfig  # noqa: E402
from deeplab_kit.course.demo import run_demo  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/amp-guard", help="parent folder of the runs")
    parser.add_argument("--data", default="data/synthetic", help="the demo's generated dataset")
    parser.add_argument("--seeds", default="0,1,2", help="seeds, each trained in both precisions")
    parser.add_argument("--epochs", type=int, help="default: the demo recipe's")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = {"epochs": args.epochs} if args.epochs else {}
    print_header(
        "bench_amp_accuracy: demo recipe, bf16 autocast vs fp32, seed by seed",
        f"seeds {seeds}, overrides {overrides}, channels_last in both",
    )
    gaps = []
    for seed in seeds:
        scores = {}
        for amp in ("bf16", "off"):
            settings = dict(amp=amp, channels_last=True, seed=seed, **overrides)
            config = RunConfig.from_recipe("demo", **settings)
            start = time.perf_counter()
            run = Path(args.out) / f"seed-{seed}" / amp
            result = run_demo(run, args.data, config=config, progress=False)
            scores[amp] = result.metrics["miou"]
            seconds = time.perf_counter() - start
            print(f"seed {seed} amp={amp:>4}: val mIoU {scores[amp]:.4f}  ({seconds:.0f} s)")
        gaps.append(100 * (scores["bf16"] - scores["off"]))
        print(f"seed {seed}: bf16 - fp32 {gaps[-1]:+.2f} mIoU points")
    mean = statistics.mean(gaps)
    spread = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
    p = stats.ttest_1samp(gaps, 0.0).pvalue if len(gaps) > 1 else float("nan")
    print(
        f"bf16 - fp32 over {len(gaps)} seeds: mean {mean:+.2f} points, sd {spread:.2f}, "
        f"paired t-test p = {p:.2f} (target: mean within 1 point)"
    )


if __name__ == "__main__":
    main()
