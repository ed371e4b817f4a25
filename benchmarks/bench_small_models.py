"""Where an epoch of the stored ablation's runs goes, on this machine: the data path, the train
step in each candidate arithmetic (against plain fp32, the peer, timed in the same run), and the
validation pass; beside the epoch seconds the stored runs recorded.

    python benchmarks/bench_small_models.py [--threads 1] [--repeats 8] [--setting "dilated / paper"]

The model, data and batch are the stored ablation's (`results.experiment_config("ablation")`,
its generated 128-pixel set, batch 16), one setting of it; `--threads` is torch's threads (the
make trains each run on 1, two runs at a time on a 2-core CPU). Ratios are plain fp32 time /
candidate time (> 1: the candidate is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from benchmarks.common import interleaved_medians, print_header  # noqa: E402
from deeplab_kit.course import ablation, results  # noqa: E402
from deeplab_kit.data.synthetic import make_synthetic_voc  # noqa: E402
from deeplab_kit.evaluate import evaluate  # noqa: E402
from deeplab_kit.model import build_model  # noqa: E402
from deeplab_kit.runtime.arithmetic import Arithmetic, choose  # noqa: E402
from deeplab_kit.runtime.distributed import Context  # noqa: E402
from deeplab_kit.training.build import run_loaders  # noqa: E402
from deeplab_kit.training.schedule import make_optimizer  # noqa: E402
from deeplab_kit.training.step import TrainStep  # noqa: E402

CANDIDATES = (
    Arithmetic("off", False),
    Arithmetic("off", True),
    Arithmetic("bf16", False),
    Arithmetic("bf16", True),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--setting", default="dilated / paper")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_header("ablation epoch breakdown", f"torch threads: {args.threads}")

    rule = choose("cpu")
    base = results.experiment_config("ablation", rule, lr=results.stored_ablation_lr() or 1e-3)
    config = ablation.configs(base)[args.setting]
    os.chdir(results.checkout(required=True))  # the experiment's data root is relative to it
    make_synthetic_voc(config.data_root, **ablation.DATA)
    train_loader, val_loader = run_loaders(
        config, Context(rank=0, world_size=1, device=torch.device("cpu"))
    )
    started = time.perf_counter()
    batches = list(train_loader)  # the data path alone: read, augment, collate
    data_seconds = time.perf_counter() - started
    steps = len(batches)
    images, masks = batches[0]

    def step_in(arithmetic: Arithmetic):
        torch.manual_seed(0)
        model = build_model(config.model).train()
        step = TrainStep(model, make_optimizer(model, config), device="cpu", arithmetic=arithmetic)
        return lambda: step(images, masks)

    named = {str(a): step_in(a) for a in CANDIDATES}
    step_seconds = interleaved_medians(named, args.repeats)
    model = build_model(config.model).eval()
    started = time.perf_counter()
    evaluate(model, val_loader, device="cpu", num_classes=config.model.num_classes, arithmetic=rule)
    val_seconds = time.perf_counter() - started

    plain = step_seconds[str(CANDIDATES[0])]
    rows = [
        {"arithmetic": name, "ms per step": 1000 * s, "vs plain fp32": plain / s}
        for name, s in step_seconds.items()
    ]
    print(f"\n{args.setting}: batch {config.batch_size}, {steps} steps per epoch")
    print(pd.DataFrame(rows).round(2).to_string(index=False))
    per_epoch = {
        f"train steps ({rule})": steps * step_seconds[str(rule)],
        "data path (one epoch of batches)": data_seconds,
        "validation pass": val_seconds,
    }
    history = results.stored(f"ablation/{ablation.setting_folder(args.setting)}/seed-0/history.csv")
    per_epoch["stored runs' epoch (median, 1 thread, 2 at a time)"] = float(
        pd.read_csv(history)["seconds"].median()
    )
    print("\nseconds per epoch:")
    for what, seconds in per_epoch.items():
        print(f"  {what}: {seconds:.1f}")


if __name__ == "__main__":
    main()
