"""What the stored experiments share: one model trained per setting and seed, all else equal, in
its own run folder; and the statistics over seeds that say which differences the seeds resolve.

    rows = run_grid({"block7 OS8": config8, ...}, seeds=(0, 1, 2), out_dir="runs/gd",
                    measure=lambda label, config, run, outcome: {...})
    summarize(table)                                  # mean, sd, min, max per setting
    tests = paired_tests(table, [("a", "b"), ("b", "c")])   # Holm-corrected paired t-tests
    print(describe_tests(tests))                      # one sentence per pair

Each (setting, seed) trains in out_dir/<setting>/seed-<k>/, resumable like any run. With
`keep_checkpoints=False` a finished run's checkpoints are deleted (its history.csv,
metrics.json and config.json stay) and a later call reuses its row untrained, after checking
that its configuration is the one asked for.

The statistics: for each pair of settings, the differences seed by seed (the same seed gives
the same data order, so the pair shares its noise), a two-sided paired t-test, and Holm's
step-down correction over all the pairs of the table. A difference is "resolved" when its
Holm-adjusted p is below 1 - level; otherwise the table says the smallest mean difference these
seeds could have resolved (`resolvable`).
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats
from torch.utils.flop_counter import FlopCounterMode

from deeplab_kit.config import ModelConfig, RunConfig
from deeplab_kit.files import write_json
from deeplab_kit.model import build_model
from deeplab_kit.runtime.arithmetic import choose
from deeplab_kit.runtime.checkpoint import check_config, find_checkpoints
from deeplab_kit.runtime.device import resolve_device
from deeplab_kit.runtime.run_files import read_metrics
from deeplab_kit.training.build import build_run_model
from deeplab_kit.training.loop import train
from deeplab_kit.training.schedule import make_optimizer
from deeplab_kit.training.step import TrainStep

RUN_FILES = ("history.csv", "metrics.json", "config.json")


def setting_folder(label: str) -> str:
    """A folder name for a setting label: "report variant" -> "report-variant"."""
    slug = re.sub(r"[^\w.]+", "-", label.strip().lower()).strip("-")
    if not slug:
        raise ValueError(f"setting label {label!r} gives an empty folder name")
    return slug


def run_folder(out_dir, label: str, seed: int) -> Path:
    return Path(out_dir) / setting_folder(label) / f"seed-{seed}"


@dataclass
class Outcome:
    """One trained (or reused) run: its model (the architecture, with trained weights unless
    reused), history rows, last scores, whether all its epochs are done, whether it was reused."""

    model: object
    history: list[dict]
    metrics: dict | None
    finished: bool
    reused: bool


def train_or_reuse(
    config: RunConfig,
    run: Path,
    *,
    progress: bool = False,
    train_set=None,
    val_set=None,
    keep_checkpoints: bool = True,
) -> Outcome:
    """Train the run folder `run` to the end of `config` (resuming), or reuse a finished one
    whose checkpoints were deleted (its configuration checked first)."""
    if _finished_without_checkpoints(run, config):
        check_config(json.loads((run / "config.json").read_text()), config, run)
        history = pd.read_csv(run / "history.csv").to_dict("records")
        model = build_run_model(config, pretrained=False)
        return Outcome(model, history, read_metrics(run), True, True)
    result = train(config, run, progress=progress, train_set=train_set, val_set=val_set)
    if result.finished:  # the config is kept to check a later reuse
        write_json(run / "config.json", config.to_dict())
    outcome = Outcome(result.model, result.history, result.metrics, result.finished, False)
    if result.finished and not keep_checkpoints:
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return outcome


def _finished_without_checkpoints(run: Path, config: RunConfig) -> bool:
    if find_checkpoints(run / "checkpoints") or not (run / "metrics.json").is_file():
        return False
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{run}: a finished run without checkpoints or config.json; its configuration "
            "cannot be checked, so use a new output folder"
        )
    history = run / "history.csv"
    return history.is_file() and len(pd.read_csv(history)) >= config.epochs


def run_grid(
    settings: Mapping[str, RunConfig],
    out_dir,
    *,
    seeds: Sequence[int] | Mapping[str, Sequence[int]],
    measure: Callable[[str, RunConfig, Path, Outcome], dict] | None = None,
    same_as: Mapping[str, str] | None = None,
    twice: Sequence[str] = (),
    progress: bool = False,
    keep_checkpoints: bool = True,
    train_set=None,
    val_set=None,
    workers: int = 1,
) -> list[dict]:
    """Train each setting's config once per seed (its `seed` replaced; `seeds` the same for
    every setting, or {label: seeds}) and return one row per (setting, seed), in settings order:
    the run's label (as "run" and "setting"; `measure` may give "setting" another value), the
    seed, what `measure` adds, the scores, epochs, training seconds, the arithmetic it trained in
    and whether it finished. `same_as` ({label: earlier label}) marks settings that build the
    same network as an earlier one: not trained again, their rows carry the twin's scores.
    `twice` names settings whose convergence check (`twice_the_epochs`) trains in the same pool.

    `workers` > 1 trains that many runs at once, longest first (no worker idles at the end),
    each in its own process with an equal share of the cores as torch threads: on a 2-core CPU
    two one-thread runs of these small models do about 1.25 times the work of one two-thread
    run. A run's numbers depend on its thread count, never on what ran beside it; `measure`
    must then be picklable, and the datasets come from the configs.
    """
    same_as = dict(same_as or {})
    seeds = _seeds_of(settings, seeds)
    jobs = _jobs(settings, out_dir, seeds, same_as)
    if twice:  # the convergence check's runs: seed 0, twice the epochs
        longer = _longer(settings, twice)
        jobs += _jobs(longer, Path(out_dir) / TWICE, dict.fromkeys(twice, (0,)), {})
    options = dict(measure=measure, keep_checkpoints=keep_checkpoints)
    if workers <= 1:
        extra = dict(progress=progress, train_set=train_set, val_set=val_set)
        done = {run: _train_one(label, c, run, **options, **extra) for label, c, run in jobs}
    elif train_set is not None or val_set is not None:
        raise ValueError("workers > 1 read the data from the configs: give no datasets")
    else:
        shown = Path(out_dir) if progress else None
        done = _train_in_workers(longest_first(jobs), workers, shown, options)
    return _rows(settings, seeds, same_as, done, out_dir)


def _rows(settings, seeds: Mapping, same_as: Mapping, done: Mapping, out_dir) -> list[dict]:
    """Each (setting, seed)'s row in table order: its run's (`done`, by run folder), or its
    twin's."""
    rows = {}
    for label in settings:
        for seed in seeds[label]:
            if label in same_as:
                twin = {**rows[same_as[label], seed], "same network as": same_as[label]}
                rows[label, seed] = {**twin, "run": label, "setting": label}
            else:
                rows[label, seed] = done[run_folder(out_dir, label, seed)]
    return [rows[label, seed] for label in settings for seed in seeds[label]]


def _seeds_of(settings: Mapping[str, RunConfig], seeds) -> dict[str, list[int]]:
    """{label: its seeds}, checked: distinct, at least one each."""
    if not isinstance(seeds, Mapping):
        seeds = dict.fromkeys(settings, seeds)
    for label in settings:
        chosen = list(seeds.get(label, ()))
        if not chosen or len(set(chosen)) != len(chosen):
            raise ValueError(f"seeds must be distinct and at least one, got {chosen} for {label}")
    return {label: [int(seed) for seed in seeds[label]] for label in settings}


def _jobs(settings: Mapping[str, RunConfig], out_dir, seeds: Mapping, same_as) -> list[tuple]:
    """(label, config with its seed, run folder) of every run to train, seed by seed."""
    if not settings:
        raise ValueError("no settings to run")
    folders = [setting_folder(label) for label in settings]
    if len(set(folders)) != len(folders):
        raise ValueError(f"setting labels must give distinct folder names, got {folders}")
    jobs = [
        (k, label, settings[label].replace(seed=seed), run_folder(out_dir, label, seed))
        for label in settings
        if label not in same_as
        for k, seed in enumerate(seeds[label])
    ]
    return [job for _, *job in sorted(jobs, key=lambda job: job[0])]  # seed by seed


def _longer(settings: Mapping[str, RunConfig], labels: Sequence[str]) -> dict[str, RunConfig]:
    """The convergence check's settings: those named, each for twice its epochs."""
    return {label: settings[label].replace(epochs=2 * settings[label].epochs) for label in labels}


def longest_first(jobs: list[tuple]) -> list[tuple]:
    """The jobs by their estimated cost, largest first: epochs times a training step's counted
    floating-point operations per image (the ties keep their order)."""
    return sorted(jobs, key=lambda job: -job[1].epochs * step_flops(job[1], job[1].image_size))


def step_flops(config: RunConfig, size: int) -> float:
    """Floating-point operations per image of a training step (forward and backward) of
    `config`'s network on `size` x `size` images, counted on the meta device (no memory, no
    compute) over a batch of two (batch norm trains on more than one)."""
    return _model_flops(config.model.replace(pretrained_backbone=False), size)


@functools.cache
def _model_flops(model_config: ModelConfig, size: int) -> float:  # counted once per network
    with torch.device("meta"):
        model = build_model(model_config).train()
        images = torch.empty(2, 3, size, size)
        with FlopCounterMode(display=False) as counter:
            model(images)["out"].sum().backward()
    return float(counter.get_total_flops()) / 2


def _train_in_workers(jobs, workers: int, shown: Path | None, options: dict) -> dict:
    """Each job in a worker process of its own torch (spawned), `workers` at a time, in the
    jobs' order; {run folder: row}; each finished run said in a line, its folder relative to
    `shown` (None: silent). Ctrl-C or a failed run stops the workers at once (leaving
    each run to resume from its last checkpoint), not after the runs still queued."""
    context = multiprocessing.get_context("spawn")
    threads = threads_per_worker(workers)
    done = {}
    with context.Pool(workers, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        tasks = [(label, config, run, options) for label, config, run in jobs]
        for run, row in pool.imap_unordered(_train_task, tasks, chunksize=1):
            done[run] = row
            if shown is not None:
                seconds, miou = row["train seconds"], row["miou"]
                print(f"{Path(run).relative_to(shown)}: mIoU {miou:.4f} ({seconds:.0f} s)")
    return done


def _arithmetic(history: list[dict]) -> str | None:
    """The arithmetic a run's last epoch ran in ("path" in histories older than the name)."""
    last = history[-1] if history else {}
    value = last.get("arithmetic", last.get("path"))
    return None if value is None else str(value)


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def _train_task(task) -> tuple[Path, dict]:
    label, config, run, options = task
    return run, _train_one(label, config, run, **options)


def _train_one(label, config, run, *, measure, **options) -> dict:
    return _row(label, config, run, train_or_reuse(config, run, **options), measure)


def _row(label, config, run, outcome: Outcome, measure) -> dict:
    metrics = outcome.metrics or {}
    history = outcome.history
    return {
        "run": label,
        "setting": label,
        "seed": config.seed,
        **(measure(label, config, run, outcome) if measure else {}),
        "same network as": None,
        "miou": metrics.get("miou"),
        "pixel_accuracy": metrics.get("pixel_accuracy"),
        "epochs": len(history),
        "train seconds": round(sum(float(row["seconds"]) for row in history), 1),
        "arithmetic": _arithmetic(history),
        "finished": outcome.finished,
    }


def seconds_per_step(config: RunConfig, steps: int = 2) -> float:
    """A training step's median seconds here, on the run's device, on a random batch of the
    run's shape in the arithmetic the run would take, after one step to warm up (for estimates
    before a long run)."""
    model = build_run_model(config, pretrained=False)
    device = resolve_device(config.device)
    arithmetic = choose(device, config.amp, config.channels_last)
    step = TrainStep(model, make_optimizer(model, config), device=device, arithmetic=arithmetic)
    generator = torch.Generator().manual_seed(0)
    shape = (config.batch_size, 3, config.image_size, config.image_size)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    classes = config.model.num_classes
    targets = torch.randint(0, classes, (shape[0], *shape[2:]), generator=generator)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        step(images, targets).item()  # .item() waits for a GPU to finish the step
        times.append(time.perf_counter() - started)
    return float(np.median(times[1:]))


def estimate_minutes(
    settings: Mapping[str, RunConfig], runs: Mapping[str, int], train_images: int
) -> pd.DataFrame:
    """Before a long run: each setting's seconds per training step here (`seconds_per_step`)
    and the minutes its `runs[label]` runs of its epochs over `train_images` images would take,
    validation aside."""
    rows = []
    for label, config in settings.items():
        seconds = seconds_per_step(config)
        steps = config.epochs * max(1, train_images // config.batch_size)
        minutes = seconds * steps * runs[label] / 60
        row = {"setting": label, "runs": runs[label], "seconds per step": round(seconds, 3)}
        rows.append({**row, "minutes": round(minutes, 1)})
    return pd.DataFrame(rows).set_index("setting")


# --- convergence ----------------------------------------------------------------------------


def last_gain(history: pd.DataFrame | list[dict], epochs: int = 2, column: str = "miou") -> float:
    """What the run gained over its last `epochs` epochs (under a cosine schedule the last
    epochs learn slowly by construction: `twice_the_epochs` is the convergence check)."""
    values = pd.DataFrame(history)[column].tolist()
    if len(values) <= epochs:
        return float("nan")
    return float(values[-1] - values[-1 - epochs])


TWICE = "twice the epochs"  # the folder of the convergence check's runs, under an experiment's


# A run counts as converged when twice the epochs (seed 0) change its mIoU by less than this.
CONVERGED_WITHIN = 1.5  # points


def twice_the_epochs(
    settings: Mapping[str, RunConfig], rows: Sequence[Mapping], out_dir, **grid
) -> pd.DataFrame:
    """The convergence check: each setting's config trained again, seed 0, for twice its epochs
    (its whole schedule stretched), beside the seed-0 row of the experiment (`rows`). A run
    has finished learning when the longer run moves its mIoU by little. One row per setting:
    the epochs, both mIoUs and the change in points. `grid`: `run_grid`'s options."""
    longer = _longer(settings, list(settings))
    again = run_grid(longer, Path(out_dir) / TWICE, seeds=(0,), **grid)
    first = {(row["run"], row["seed"]): row["miou"] for row in rows}
    return pd.DataFrame(
        [
            {
                "setting": label,
                "epochs": settings[label].epochs,
                "miou": first[label, 0],
                "twice the epochs": row["miou"],
                "change (points)": 100 * (row["miou"] - first[label, 0]),
            }
            for label, row in zip(settings, again, strict=True)
        ]
    )


# --- statistics over seeds ------------------------------------------------------------------


def summarize(table: pd.DataFrame, column: str = "miou", by: str = "setting") -> pd.DataFrame:
    """One row per setting (in table order): seeds, mean, standard deviation (n - 1), min, max."""
    scores = table.groupby(by, sort=False)[column]
    return scores.agg(seeds="size", mean="mean", sd="std", min="min", max="max")  # sd: n - 1


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (1979): sort ascending, multiply the k-th smallest by
    (m - k + 1), carry the running maximum, cap at 1. NaN stays NaN and is not counted."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    running = 0.0
    for k, index in enumerate(valid[np.argsort(p[valid], kind="stable")]):
        running = max(running, min(1.0, (m - k) * p[index]))
        adjusted[index] = running
    return adjusted


def resolvable(sd: float, seeds: int, family: int, level: float = 0.95) -> float:
    """The smallest mean difference `seeds` paired seeds resolve after Holm over `family`
    contrasts, at the paired spread `sd`: t(1 - alpha / 2m, n - 1) * sd / sqrt(n) (Holm's
    first, strictest step: a conservative figure)."""
    quantile = stats.t.ppf(1 - (1 - level) / (2 * family), df=seeds - 1)
    return float(quantile * sd / np.sqrt(seeds))


def paired_tests(
    table: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    column: str = "miou",
    level: float = 0.95,
    by: str = "setting",
) -> pd.DataFrame:
    """One row per pair (a, b): a minus b seed by seed; on how many seeds a is higher, the mean
    and sd of the differences, the paired t, its p, Holm's adjusted p over all `pairs`, the
    verdict ("resolved", "not resolved", or "same" when every difference is exactly 0: the same
    network), and the smallest mean difference these seeds could have resolved."""
    wide = table.pivot_table(index="seed", columns=by, values=column, aggfunc="first")
    alpha, m = 1.0 - level, len(pairs)
    rows = []
    for a, b in pairs:
        diff = (wide[a] - wide[b]).dropna()
        n, mean = len(diff), float(diff.mean())
        sd = float(diff.std(ddof=1)) if n > 1 else float("nan")
        if n < 2 or (diff == 0).all():
            t, p = float("nan"), float("nan")
        elif sd == 0:
            t, p = float("inf") * np.sign(mean), 0.0
        else:
            t = mean / (sd / np.sqrt(n))
            p = float(2 * stats.t.sf(abs(t), df=n - 1))
        smallest = resolvable(sd, n, m, level) if n > 1 else sd
        rows.append(
            {
                "a": a,
                "b": b,
                "seeds": n,
                "a higher on": int((diff > 0).sum()),
                "mean difference": mean,
                "sd": sd,
                "t": t,
                "p": p,
                "smallest resolvable": smallest,
            }
        )
    result = pd.DataFrame(rows)
    result["p (Holm)"] = holm(result["p"].to_numpy())

    def verdict(row) -> str:
        if row["sd"] == 0 and row["mean difference"] == 0:
            return "same"
        return "resolved" if row["p (Holm)"] < alpha else "not resolved"

    result["verdict"] = result.apply(verdict, axis=1)
    return result.set_index(["a", "b"])


def describe_tests(tests: pd.DataFrame, unit: float = 100.0, what: str = "points of mIoU") -> str:
    """`paired_tests` in sentences, one per pair, claiming nothing beyond the numbers."""
    lines = []
    family = len(tests)
    for (a, b), row in tests.iterrows():
        if row["verdict"] == "same":
            lines.append(f"{a} vs {b}: the same network; no difference to resolve.")
            continue
        spread = (
            f"higher on {row['a higher on']} of {row['seeds']} seeds, sd {unit * row['sd']:.1f}, "
            f"p = {row['p']:.3g}, Holm over {family} pairs {row['p (Holm)']:.3g}"
        )
        change = f"{unit * row['mean difference']:+.1f} {what}"
        if row["verdict"] == "resolved":
            lines.append(f"{a} vs {b}: {change} ({spread}): resolved.")
        else:
            lines.append(
                f"{a} vs {b}: {change} ({spread}): not resolved; these seeds resolve "
                f"differences of {unit * row['smallest resolvable']:.1f} or more."
            )
    return "\n".join(lines)
