"""Stored results: what `notebooks/results/` holds, the one command that makes each, and a check.

    python -m deeplab_kit results list              # what is stored, and how it was made
    python -m deeplab_kit results make ablation     # (re)make one; a stopped make resumes
    python -m deeplab_kit results verify [NAME]     # is what is stored what the code makes?

Each stored result is a folder `notebooks/results/<name>/` of small files (tables, histories,
scores, figures; no weights) and a `provenance.json` written by `make`: the command, the git
commit and whether the tree was clean, the machine, torch and torchvision, and when it ran.
`make` trains in a work folder, `runs/results/<name>/` (checkpoints there, so that a stopped
make resumes), and replaces the stored folder only once everything is done.

The notebooks read stored files through `stored(relative)` (fetched from the repository in
Colab, where the kit is installed without them), the experiments through `stored_ablation()`
and `stored_going_deeper()`.

`verify` checks each stored result against itself and against the current code: the scores
recomputed from the stored confusion matrices, each history's last row against its scores,
tables against their run files, the stored configuration against the one the code would run
(else the result is stale), and it retrains the first epoch of one run of each experiment to
compare with the stored history: bit for bit where this machine runs the provenance's kernels
with its torch version, within `RETRAIN_TOLERANCE` elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeplab_kit.config import RunConfig, flat
from deeplab_kit.course import ablation, going_deeper, provenance
from deeplab_kit.course.atrous import feature_size
from deeplab_kit.course.colab import checkout, in_colab, raw_url
from deeplab_kit.course.demo import DEMO_DATA, run_demo
from deeplab_kit.course.experiments import last_gain, run_folder, setting_folder, threads_per_worker
from deeplab_kit.data.synthetic import DEFAULT_ROOT, GENERATOR_VERSION, make_synthetic_voc
from deeplab_kit.files import plain, write_json, write_text
from deeplab_kit.runtime import fingerprint
from deeplab_kit.runtime.arithmetic import Arithmetic
from deeplab_kit.runtime.run_files import metrics_dict, read_confusion, write_tables
from deeplab_kit.training.loop import train

WORK = Path("runs") / "results"  # under the checkout
PROVENANCE = "provenance.json"
PROVENANCE_KEYS = (
    "command",
    "commit",
    "clean",
    "machine",
    "torch",
    "torchvision",
    "started",
    "ended",
    "seconds",
)
# How far a retrained first epoch may be from the stored one on another CPU or torch version
# (bf16 kernels round differently across CPUs): relative, on the losses; absolute, on mIoU.
RETRAIN_TOLERANCE = {"train_loss": 0.02, "val_loss": 0.05, "miou": 0.02}
# The run whose first epoch `verify` retrains, per stored result: (its folder under the stored
# result, the generated dataset's folder and arguments); filled in below.
RETRAIN: dict[str, tuple[str, str, dict]] = {}


@dataclass(frozen=True)
class StoredResult:
    name: str
    about: str
    make: Callable[[Path, bool], dict]  # (work folder, progress) -> {stored name: source path}
    check: Callable[[Path], list[str]]  # stored folder -> problems
    data: Callable[[], dict]  # the generated dataset it is made on (make_synthetic_voc's args)


# --- where things are ---------------------------------------------------------------------


def store(name: str) -> Path:
    return checkout(required=True) / "notebooks" / "results" / name


def results_dir() -> Path:
    """notebooks/results of the repository checkout (see `colab.checkout`); in Colab, a local
    folder that `stored` fills from the repository."""
    found = checkout()
    return found / "notebooks" / "results" if found else Path.cwd() / "results"


def stored(relative: str) -> Path:
    """A stored result file (notebooks/results/<relative>), read from the checkout; in Colab,
    where the kit is pip-installed without the notebooks, fetched from the repository first."""

    path = results_dir() / relative
    if path.is_file():
        return path
    if not in_colab():
        raise FileNotFoundError(f"{path}: stored result not found (it comes with the repository)")
    url = f"{raw_url()}/notebooks/results/{relative}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, path)
    except (urllib.error.URLError, OSError) as error:
        raise FileNotFoundError(f"{url}: could not fetch the stored result ({error})") from None
    return path


def read_stored_json(relative: str) -> dict:
    return json.loads(stored(relative).read_text())


def stored_ablation() -> tuple[pd.DataFrame, dict, dict[str, np.ndarray]]:
    """The stored ablation: its table, its provenance and, for each trained backbone and
    setting, its effective receptive field (the seeds' gradient maps, each scaled to sum 1,
    averaged), keyed "backbone / setting"."""
    table, record = ablation.read_ablation(stored("ablation/ablation.json"))
    trained = table[table["same network as"].isna()]
    maps = {}
    for (backbone, setting), group in trained.groupby(["backbone", "setting"], sort=False):
        label = ablation.run_label(backbone, setting)
        paths = [
            stored(f"ablation/{setting_folder(label)}/seed-{seed}/erf.npy")
            for seed in group["seed"]
        ]
        maps[label] = ablation.average_erf(paths)
    return table, record, maps


def stored_ablation_lr() -> float | None:
    """The learning rate the stored ablation's sweep chose (None when none is stored here)."""
    try:
        return float(read_stored_json("ablation/ablation.json")["config"]["lr"])
    except (FileNotFoundError, KeyError, ValueError):
        return None


def stored_going_deeper() -> tuple[pd.DataFrame, dict]:
    """The stored going-deeper experiment: its table and its provenance."""
    record = read_stored_json("going-deeper/going-deeper.json")
    table = pd.DataFrame(record["rows"], columns=list(going_deeper.COLUMNS))
    return table, {k: v for k, v in record.items() if k != "rows"}


@contextlib.contextmanager
def _inside(folder: Path):
    """Work with `folder` as the working directory, so every path a result records is relative
    to the checkout ("data/synthetic"), never a machine's own."""
    before = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


# --- the demo -----------------------------------------------------------------------------

DEMO_FILES = (
    "history.csv",
    "metrics.json",
    "metrics.md",
    "metrics.csv",
    "per_class.csv",
    "loss_curve.png",
    "predictions.png",
)
DEMO_DATA_ROOT = DEFAULT_ROOT


def demo_config():
    """The configuration `results make demo` runs (and `verify` expects)."""

    return RunConfig.from_recipe(
        "demo", data_root=DEMO_DATA_ROOT, cache_dir=f"{DEMO_DATA_ROOT}/cache"
    )


def _dataset(name: str) -> dict:
    """The generated dataset a stored result is made on: make_synthetic_voc's arguments and the
    generator's version."""

    data = {
        "demo": DEMO_DATA,
        "ablation": ablation.ABLATION_DATA,
        "going-deeper": going_deeper.GOING_DEEPER_DATA,
    }
    return plain({**data[name], "generator version": GENERATOR_VERSION})


def _make_demo(work: Path, progress: bool) -> dict:

    config = demo_config()
    make_synthetic_voc(DEMO_DATA_ROOT, **DEMO_DATA)  # regenerated if another set is there
    run_demo(work, DEMO_DATA_ROOT, config=config, progress=progress)
    write_json(work / "config.json", config.to_dict())
    return {name: work / name for name in (*DEMO_FILES, "config.json")}


def _check_demo(folder: Path) -> list[str]:
    problems = _check_run(folder)
    problems += _check_config(folder / "config.json", demo_config())
    problems += _check_tables(folder)
    return problems


# --- the two experiments ------------------------------------------------------------------

ABLATION_DATA_ROOT = f"{DEFAULT_ROOT}-ablation"
GOING_DEEPER_DATA_ROOT = f"{DEFAULT_ROOT}-going-deeper"
RUN_FILES = ("history.csv", "metrics.json", "config.json")
# The experiments train two runs at a time, each in its own process with half the cores as torch
# threads: on a 2-core CPU, two one-thread runs of these small models do about 1.25 times the
# work of one two-thread run (measured on the ablation's and going-deeper's models).
WORKERS = 2


def ablation_config(lr: float | None = None) -> RunConfig:
    """The base configuration of `results make ablation` (and what `verify` expects), at the
    learning rate its sweep chose (the recipe's own without one)."""
    config = RunConfig.from_recipe(
        "ablation", data_root=ABLATION_DATA_ROOT, cache_dir=f"{ABLATION_DATA_ROOT}/cache"
    )
    return config if lr is None else config.replace(lr=lr)


def going_deeper_config() -> RunConfig:
    """The base configuration of `results make going-deeper` (and what `verify` expects)."""
    return RunConfig.from_recipe(
        "going-deeper",
        data_root=GOING_DEEPER_DATA_ROOT,
        cache_dir=f"{GOING_DEEPER_DATA_ROOT}/cache",
    )


def _make_ablation(work: Path, progress: bool) -> dict:
    make_synthetic_voc(ABLATION_DATA_ROOT, **ablation.ABLATION_DATA)
    sweep = ablation.sweep_lr(ablation_config(), work / "sweep", progress=progress, workers=WORKERS)
    lr = ablation.chosen_lr(sweep)
    table = ablation.run_ablation(
        ablation_config(lr),
        work,
        seeds=ablation.SEEDS,
        erf_images=ablation.ERF_IMAGES,
        progress=progress,
        keep_checkpoints=False,
        sweep=sweep,
        workers=WORKERS,
    )
    files = {"ablation.json": work / "ablation.json", "ablation.csv": work / "ablation.csv"}
    for run in sorted((work / "sweep").glob("*/seed-0")):
        files.update(_run_files(work, run, RUN_FILES))
    for row in table[table["same network as"].isna()].to_dict("records"):
        run = ablation.run_folder_of(work, row)
        files.update(_run_files(work, run, (*RUN_FILES, "interior.json", "erf.npy")))
    return files


def _make_going_deeper(work: Path, progress: bool) -> dict:
    make_synthetic_voc(GOING_DEEPER_DATA_ROOT, **going_deeper.GOING_DEEPER_DATA)
    table = going_deeper.run_going_deeper(
        going_deeper_config(),
        work,
        seeds=going_deeper.SEEDS,
        progress=progress,
        keep_checkpoints=False,
        workers=WORKERS,
    )
    record = {
        "config": going_deeper_config().to_dict(),
        "settings": going_deeper.SETTINGS,
        "seeds": list(going_deeper.SEEDS),
        "rows": table.to_dict("records"),
    }
    write_json(work / "going-deeper.json", plain(record))
    write_text(work / "going-deeper.csv", table.to_csv(index=False))
    files = {name: work / name for name in ("going-deeper.json", "going-deeper.csv")}
    for row in table.drop_duplicates(["setting", "seed"]).to_dict("records"):
        run = run_folder(work, row["setting"], int(row["seed"]))
        names = (*RUN_FILES, "predictions.png") if row["seed"] == 0 else RUN_FILES
        files.update(_run_files(work, run, names))
    return files


def _run_files(work: Path, run: Path, names) -> dict:
    return {
        f"{run.relative_to(work)}/{name}": run / name for name in names if (run / name).is_file()
    }


def _check_ablation(folder: Path) -> list[str]:
    try:
        table, record = ablation.read_ablation(folder)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    sweep = pd.DataFrame(record.get("lr sweep") or [])
    problems = _check_sweep(folder, sweep)
    lr = ablation.chosen_lr(sweep) if len(sweep) else None
    base = ablation_config(lr)
    problems += _check_experiment(folder, "ablation", table, record, base)
    expected = [
        (backbone, setting, seed)
        for backbone in ablation.BACKBONES
        for setting in ablation.SETTINGS
        for seed in ablation.SEEDS
    ]
    if list(zip(table["backbone"], table["setting"], table["seed"], strict=True)) != expected:
        problems.append(
            "ablation.json: its rows are not the current backbones x settings x seeds: stale"
        )
        return problems
    configs = ablation.configs(base)
    twins = ablation.equivalent_settings(configs)
    by_key = {(r["backbone"], r["setting"], r["seed"]): r for r in table.to_dict("records")}
    for row in table.to_dict("records"):
        label = ablation.run_label(row["backbone"], row["setting"])
        where = f"ablation.json, {label} seed {row['seed']}"
        if row["feature map"] != "16x16":
            problems.append(f"{where}: ASPP saw a {row['feature map']} map, not the report's 16x16")
        twin = twins.get(label)
        if row["same network as"] != twin:
            problems.append(
                f"{where}: 'same network as' is {row['same network as']!r}, the geometry says {twin!r}"
            )
        if twin is not None:
            backbone, setting = twin.split(" / ")
            other = by_key.get((backbone, setting, row["seed"]), {})
            if [row[k] for k in ABLATION_SCORES] != [other.get(k) for k in ABLATION_SCORES]:
                problems.append(f"{where}: its scores differ from {twin}'s, the same network")
            continue
        run = ablation.run_folder_of(folder, row)
        config = configs[label].replace(seed=int(row["seed"]))
        problems += _check_row_run(where, run, row, config)
        interior = _read_json(run / "interior.json")
        if "confusion_matrix" not in interior:
            problems.append(f"{run}/interior.json: missing or without a confusion matrix")
        elif metrics_dict(read_confusion(interior))["miou"] != row["interior miou"]:
            problems.append(
                f"{where}: interior miou {row['interior miou']!r} is not its interior.json's"
            )
        radii = ablation.erf_radii(run)
        if any(not math.isclose(radii[k], row[k]) for k in radii):
            problems.append(
                f"{where}: ERF radii {[row[k] for k in radii]} but its erf.npy gives {list(radii.values())}"
            )
    return problems


ABLATION_SCORES = ("miou", "interior miou", "pixel_accuracy", "erf r50 (px)", "erf r90 (px)")


def _check_sweep(folder: Path, sweep: pd.DataFrame) -> list[str]:
    """The stored learning-rate sweep: each run's score from its own files, and its choice."""
    if sweep.empty:
        return ["ablation.json: no learning-rate sweep stored"]
    problems = []
    for row in sweep.to_dict("records"):
        run = run_folder(folder / "sweep", f"lr {row['lr']:g} {row['backbone']}", 0)
        problems += _check_run(run)
        if _read_json(run / "metrics.json").get("miou") != row["miou"]:
            problems.append(
                f"ablation.json: the sweep's mIoU at lr {row['lr']:g} ({row['backbone']}) is "
                "not its run's"
            )
        history = pd.read_csv(run / "history.csv") if (run / "history.csv").is_file() else None
        if history is None or float(history["val_loss"].iloc[-1]) != row.get("val_loss"):
            problems.append(
                f"ablation.json: the sweep's validation loss at lr {row['lr']:g} "
                f"({row['backbone']}) is not its run's"
            )
    return problems


def _check_going_deeper(folder: Path) -> list[str]:
    record = _read_json(folder / "going-deeper.json")
    if "rows" not in record:
        return [f"{folder / 'going-deeper.json'}: missing or without rows"]
    table = pd.DataFrame(record["rows"], columns=list(going_deeper.COLUMNS))
    base = going_deeper_config()
    problems = _check_experiment(folder, "going-deeper", table, record, base)
    expected = going_deeper.going_deeper_table(
        [{"setting": s, "seed": k} for s in going_deeper.SETTINGS for k in going_deeper.SEEDS]
    )
    keys = ["experiment", "setting", "seed"]
    if table[keys].values.tolist() != expected[keys].values.tolist():
        problems.append("going-deeper.json: its rows are not the current settings x seeds: stale")
        return problems
    for row in table.to_dict("records"):
        where = f"going-deeper.json, {row['experiment']}: {row['setting']} seed {row['seed']}"
        overrides = going_deeper.SETTINGS[row["setting"]]
        side = feature_size(base.image_size, overrides["output_stride"])
        if row["feature map"] != f"{side}x{side}":
            problems.append(
                f"{where}: feature map {row['feature map']}, the geometry says {side}x{side}"
            )
        run = run_folder(folder, row["setting"], int(row["seed"]))
        config = base.replace(**overrides, seed=int(row["seed"]))
        problems += _check_row_run(where, run, row, config)
    return problems


def _check_experiment(
    folder: Path, name: str, table: pd.DataFrame, record: dict, base: RunConfig
) -> list[str]:
    """What both experiments' tables share: the configuration the current code would run, the
    CSV equal to the JSON's rows, the provenance at the JSON's top level."""
    problems = []
    problems += _check_config_dict(f"{name}.json", record.get("config"), base)
    csv = folder / f"{name}.csv"
    if not csv.is_file() or csv.read_text() != table.to_csv(index=False):
        problems.append(f"{name}.csv: missing or not {name}.json's rows")
    problems += [
        f"{name}.json: {key} is not the provenance's"
        for key in PROVENANCE_KEYS
        if record.get(key) != _read_provenance(folder).get(key)
    ]
    return problems


def _check_row_run(where: str, run: Path, row: dict, config: RunConfig) -> list[str]:
    """A table row against its run folder: scores recomputed, history, configuration."""
    problems = _check_run(run)
    metrics = _read_json(run / "metrics.json")
    problems += [
        f"{where}: {key} {row[key]!r} but its metrics.json says {metrics.get(key)!r}"
        for key in ("miou", "pixel_accuracy")
        if metrics.get(key) != row[key]
    ]
    return problems + _check_config(run / "config.json", config)


def retrain_first_epoch(name: str, folder: Path, *, progress: bool = False) -> list[str]:
    """Retrain the first epoch of the stored result's `RETRAIN` run and compare it with its
    stored history: [] when it matches, else the problems. It retrains in the stored run's own
    path (precision and memory format) with the provenance's thread count; bit for bit where
    this machine runs the same kernels (`provenance.same_kernels`: fingerprint and torch
    version), within RETRAIN_TOLERANCE elsewhere; it says which and why."""
    relative, data_root, data = RETRAIN[name]
    run = folder / relative
    record = _read_provenance(folder)
    stored = pd.read_csv(run / "history.csv").iloc[0]
    arithmetic = Arithmetic.parse(stored.get("arithmetic", stored.get("path")))
    config = RunConfig.from_dict(_read_json(run / "config.json")).replace(
        session_epochs=1, amp=arithmetic.amp, channels_last=arithmetic.channels_last
    )
    exact, why = provenance.same_kernels(record)
    threads = torch.get_num_threads()
    with _inside(checkout(required=True)), tempfile.TemporaryDirectory() as tmp:
        make_synthetic_voc(data_root, **data)
        runs_threads = record.get("threads per run") or record.get("machine", {}).get("threads")
        torch.set_num_threads(runs_threads or threads)
        try:
            again = train(config, Path(tmp) / "run", progress=progress).history[0]
        finally:
            torch.set_num_threads(threads)
    how = f"bit-exact ({why})" if exact else f"within {RETRAIN_TOLERANCE} ({why})"
    problems = []
    for key, tolerance in RETRAIN_TOLERANCE.items():
        old, new = float(stored[key]), float(again[key])
        scale = abs(old) if key != "miou" else 1.0
        if not (old == new if exact else abs(new - old) <= tolerance * scale):
            problems.append(
                f"{name}: {relative}: retrained epoch 1 {key} {new!r}, stored {old!r} ({how})"
            )
    verdict = "matches" if not problems else "DIFFERS"
    print(
        f"{name}: retrained epoch 1 of the stored run {relative} in {arithmetic}: {verdict}, {how}"
    )
    return problems


# --- checks shared by the results ---------------------------------------------------------


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _read_provenance(folder: Path) -> dict:
    return _read_json(folder / PROVENANCE)


def _check_run(run: Path) -> list[str]:
    """A run folder's scores equal those recomputed from its confusion matrix, and its history's
    last row equals its scores."""

    metrics = _read_json(run / "metrics.json")
    if "confusion_matrix" not in metrics:
        return [f"{run}/metrics.json: missing or without a confusion matrix"]
    recomputed = metrics_dict(read_confusion(metrics))
    problems = [
        f"{run}/metrics.json: {key} is {metrics.get(key)!r}, its confusion matrix gives {value!r}"
        for key, value in recomputed.items()
        if metrics.get(key) != value
    ]
    try:
        last = pd.read_csv(run / "history.csv").iloc[-1]
    except (OSError, ValueError, IndexError):
        return problems + [f"{run}/history.csv: missing or empty"]
    if float(last["miou"]) != metrics.get("miou") or int(last["epoch"]) != metrics.get("epoch"):
        problems.append(
            f"{run}/history.csv: last row (epoch {int(last['epoch'])}, miou {last['miou']!r}) "
            f"does not match metrics.json (epoch {metrics.get('epoch')}, miou "
            f"{metrics.get('miou')!r})"
        )
    return problems


def _check_config(path: Path, expected: RunConfig) -> list[str]:
    return _check_config_dict(str(path), _read_json(path), expected)


def _check_config_dict(where: str, stored: dict | None, expected: RunConfig) -> list[str]:
    """A stored configuration (in either form, nested or the older flat one) against the one
    the current code would run: [] when they are the same run, else why it is stale."""
    try:
        same = RunConfig.from_dict(stored or {}) == expected
    except ValueError as error:
        return [f"{where}: not a configuration the current code reads ({error}): stale"]
    return [] if same else [_stale(where, flat(RunConfig.from_dict(stored or {})), flat(expected))]


def _stale(where: str, stored: dict, expected: dict) -> str:
    fields = sorted(k for k in set(stored) | set(expected) if stored.get(k) != expected.get(k))
    shown = ", ".join(f"{k}: stored {stored.get(k)!r}, now {expected.get(k)!r}" for k in fields)
    return f"{where}: stale (the current code would run another configuration: {shown})"


def _check_tables(folder: Path) -> list[str]:
    """metrics.md/.csv and per_class.csv equal the tables rewritten from metrics.json."""

    with tempfile.TemporaryDirectory() as tmp:
        write_tables(Path(tmp), _read_json(folder / "metrics.json"))
        return [
            f"{folder / name}: differs from the table its metrics.json gives"
            for name in ("metrics.md", "metrics.csv", "per_class.csv")
            if not (folder / name).is_file()
            or (folder / name).read_text() != (Path(tmp) / name).read_text()
        ]


# --- the registry and the commands --------------------------------------------------------

RESULTS = {
    "demo": StoredResult(
        "demo",
        "the demo run: 10 epochs of the demo recipe on the generated 96-pixel set",
        _make_demo,
        _check_demo,
        lambda: _dataset("demo"),
    ),
    "going-deeper": StoredResult(
        "going-deeper",
        "going deeper with atrous convolution: block7 at output stride 8..256, blocks 4..7 at 16",
        _make_going_deeper,
        _check_going_deeper,
        lambda: _dataset("going-deeper"),
    ),
    "ablation": StoredResult(
        "ablation",
        "the ASPP rate ablation: 2 backbones x 5 ASPP settings x 5 seeds on a 16x16 map",
        _make_ablation,
        _check_ablation,
        lambda: _dataset("ablation"),
    ),
}
RETRAIN.update(
    {
        "ablation": (
            f"{setting_folder(ablation.run_label('small field', 'report'))}/seed-0",
            ABLATION_DATA_ROOT,
            ablation.ABLATION_DATA,
        ),
        "going-deeper": (
            f"{setting_folder(going_deeper.label(4, 16))}/seed-0",
            GOING_DEEPER_DATA_ROOT,
            going_deeper.GOING_DEEPER_DATA,
        ),
    }
)


def _result(name: str) -> StoredResult:
    if name not in RESULTS:
        raise ValueError(f"no stored result {name!r}; known: {sorted(RESULTS)}")
    return RESULTS[name]


def make(name: str, *, command: str | None = None, progress: bool = True) -> Path:
    """Make the stored result `name` (resuming a stopped make) and replace its stored folder.
    Returns the stored folder."""
    result = _result(name)
    root = checkout(required=True)
    work = root / WORK / name
    record = provenance.start(command or f"deeplab_kit.course.results.make({name!r})")
    record["data"] = result.data()
    if name in RETRAIN:  # the experiments' runs train in workers (see WORKERS)
        record.update(workers=WORKERS, **{"threads per run": threads_per_worker(WORKERS)})
    sessions = _read_json(work / "sessions.json")
    with _inside(root):
        try:
            files = result.make(WORK / name, progress)
        finally:  # a stopped make counts its time when it is resumed
            record = provenance.finish(record, earlier_seconds=sessions.get("seconds", 0.0))
            record.update(
                started=sessions.get("first_started", record["started"]),
                sessions=sessions.get("sessions", 0) + 1,
            )
            work.mkdir(parents=True, exist_ok=True)
            write_json(
                work / "sessions.json",
                {
                    "first_started": record["started"],
                    "seconds": record["seconds"],
                    "sessions": record["sessions"],
                },
            )
    return _replace_store(name, {k: root / v for k, v in files.items()}, record)


def _replace_store(name: str, files: dict[str, Path], record: dict) -> Path:
    """Copy `files` ({relative name: source}) into a fresh stored folder with the provenance;
    the old folder is replaced only once the new one is complete."""
    target = store(name)
    fresh = target.with_name(f".{name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    for relative, source in files.items():
        (fresh / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, fresh / relative)
    table = fresh / f"{name}.json"
    if table.is_file():  # an experiment's table carries its provenance at its top level
        write_json(table, {**record, **json.loads(table.read_text()), **record})
    write_json(fresh / PROVENANCE, record)
    old = target.with_name(f".{name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def verify(names=None, *, retrain: bool = True, progress: bool = False) -> list[str]:
    """The problems of the stored results `names` (default: all); [] when all hold."""
    problems = []
    for name in names or RESULTS:
        folder = store(_result(name).name)
        if not folder.is_dir():
            problems.append(
                f"{folder}: not stored; make it with `python -m deeplab_kit results make {name}`"
            )
            continue
        record = _read_provenance(folder)
        missing = [k for k in PROVENANCE_KEYS if k not in record]
        if missing:
            problems.append(f"{folder / PROVENANCE}: missing or without {missing}")
        if record.get("data") != RESULTS[name].data():
            problems.append(
                _stale(str(folder / PROVENANCE), record.get("data") or {}, RESULTS[name].data())
            )
        problems += RESULTS[name].check(folder)
        if name in RETRAIN and retrain and not problems:
            problems += retrain_first_epoch(name, folder, progress=progress)
    return problems


def listing() -> pd.DataFrame:
    """One row per stored result, short enough for a terminal: how long it took, on which kind
    of machine, from which commit, when. `details(name)` says the rest."""
    rows = []
    for name in RESULTS:
        record = _read_provenance(store(name))
        commit = (record.get("commit") or "?")[:7] + ("" if record.get("clean", True) else "+")
        rows.append(
            {
                "result": name,
                "minutes": round(record["seconds"] / 60, 1) if record else np.nan,
                "machine": fingerprint.kind_of(record.get("machine", {})) if record else "",
                "cores": record.get("machine", {}).get("cores", ""),
                "commit": commit if record else "(not stored)",
                "ended": record.get("ended", "")[:10],
            }
        )
    return pd.DataFrame(rows).set_index("result")


def details(name: str) -> str:
    """A stored result in a few lines: what it is, and its provenance."""
    result = _result(name)
    record = _read_provenance(store(name))
    if not record:
        return f"{name}: {result.about}\nnot stored; make it with `python -m deeplab_kit results make {name}`"
    return f"{name}: {result.about}\n" + provenance.describe(record)


def stored_gains(name: str, runs: pd.DataFrame) -> pd.DataFrame:
    """How much each stored run's mIoU rose over its last two epochs (the convergence check),
    read from its stored history: one row per (setting, seed) of `runs`."""
    rows = []
    for row in runs.to_dict("records"):
        label = (
            row["setting"]
            if name != "ablation"
            else ablation.run_label(row["backbone"], row["setting"])
        )
        history = pd.read_csv(
            stored(f"{name}/{setting_folder(label)}/seed-{row['seed']}/history.csv")
        )
        rows.append(
            {**{k: row[k] for k in ("setting", "seed")}, "label": label, "gain": last_gain(history)}
        )
    return pd.DataFrame(rows)
