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
Colab, where the kit is installed without them) and the ablation through `stored_ablation()`.

`verify` checks each stored result against itself and against the current code: the scores
recomputed from the stored confusion matrices, each history's last row against its scores,
tables against their run files, the stored configuration against the one the code would run
(else the result is stale), and it retrains the first epoch of one ablation run to compare
with the stored history: bit for bit on the machine and torch version of the provenance,
within `RETRAIN_TOLERANCE` elsewhere.
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

from deeplab_kit.course import provenance
from deeplab_kit.course.ablation import (
    ABLATION_DATA,
    ERF_IMAGES,
    SEEDS,
    SETTINGS,
    average_erf,
    equivalent_settings,
    erf_radii,
    read_ablation,
    run_ablation,
    run_folder,
    setting_folder,
)
from deeplab_kit.course.colab import checkout, in_colab, raw_url
from deeplab_kit.course.demo import DEMO_DATA, run_demo
from deeplab_kit.data.synthetic import DEFAULT_ROOT, GENERATOR_VERSION, make_synthetic_voc
from deeplab_kit.files import write_json
from deeplab_kit.training import fastpath, machine
from deeplab_kit.training.config import RunConfig
from deeplab_kit.training.loop import train
from deeplab_kit.training.run_files import metrics_dict, read_confusion, write_tables

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
RETRAIN_RUN = ("report", 0)  # the ablation run whose first epoch `verify` retrains


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
    """The stored atrous-rate ablation: its table, its provenance and, for each trained setting,
    its effective receptive field (the seeds' gradient maps, each scaled to sum 1, averaged)."""

    table, record = read_ablation(stored("ablation/ablation.json"))
    maps = {
        label: average_erf(
            stored(f"ablation/{setting_folder(label)}/seed-{seed}/erf.npy")
            for seed in record["seeds"]
        )
        for label in table.loc[table["same network as"].isna(), "setting"].unique()
    }
    return table, record, maps


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

    return {
        **{"demo": DEMO_DATA, "ablation": ABLATION_DATA}[name],
        "generator version": GENERATOR_VERSION,
    }


def _make_demo(work: Path, progress: bool) -> dict:

    config = demo_config()
    make_synthetic_voc(DEMO_DATA_ROOT, **DEMO_DATA)  # regenerated if another set is there
    run_demo(work, DEMO_DATA_ROOT, config=config, progress=progress)
    write_json(work / "config.json", config.to_dict())
    return {name: work / name for name in (*DEMO_FILES, "config.json")}


def _check_demo(folder: Path) -> list[str]:
    problems = _check_run(folder)
    problems += _check_config(folder / "config.json", demo_config().to_dict())
    problems += _check_tables(folder)
    return problems


# --- the ablation -------------------------------------------------------------------------

ABLATION_DATA_ROOT = f"{DEFAULT_ROOT}-ablation"
RUN_FILES = ("history.csv", "metrics.json", "config.json", "erf.npy")


def ablation_config():
    """The base configuration `results make ablation` runs (and `verify` expects)."""

    return RunConfig.from_recipe(
        "ablation", data_root=ABLATION_DATA_ROOT, cache_dir=f"{ABLATION_DATA_ROOT}/cache"
    )


def _make_ablation(work: Path, progress: bool) -> dict:

    make_synthetic_voc(ABLATION_DATA_ROOT, **ABLATION_DATA)
    table = run_ablation(
        SETTINGS,
        ablation_config(),
        work,
        seeds=SEEDS,
        erf_images=ERF_IMAGES,
        progress=progress,
        keep_checkpoints=False,
    )
    files = {"ablation.json": work / "ablation.json", "ablation.csv": work / "ablation.csv"}
    for row in table[table["same network as"].isna()].itertuples():
        run = run_folder(work, row.setting, int(row.seed))
        files.update({f"{run.relative_to(work)}/{name}": run / name for name in RUN_FILES})
    return files


def _check_ablation(folder: Path) -> list[str]:

    try:
        table, record = read_ablation(folder)
    except (FileNotFoundError, ValueError) as error:
        return [str(error)]
    problems = []
    base = ablation_config()
    if record.get("config") != base.to_dict():
        problems.append(_stale("ablation.json", record.get("config", {}), base.to_dict()))
    expected = [(label, seed) for label in SETTINGS for seed in SEEDS]
    if list(zip(table["setting"], table["seed"], strict=True)) != expected:
        problems.append(
            "ablation.json: its rows are not the current settings x seeds "
            f"({len(SETTINGS)} settings, seeds {list(SEEDS)}): stale"
        )
    twins = equivalent_settings(SETTINGS, base.image_size, base.output_stride)
    csv = folder / "ablation.csv"
    if not csv.is_file() or csv.read_text() != table.to_csv(index=False):
        problems.append("ablation.csv: missing or not ablation.json's rows")
    problems += [
        f"ablation.json: {key} is not the provenance's"
        for key in PROVENANCE_KEYS
        if record.get(key) != _read_provenance(folder).get(key)
    ]
    rows = table.to_dict("records")
    by_key = {(row["setting"], row["seed"]): row for row in rows}
    for row in rows:
        problems += _check_ablation_row(folder, row, by_key, twins.get(row["setting"]), base)
    return problems


def _check_ablation_row(folder: Path, row: dict, by_key: dict, twin: str | None, base) -> list:

    where = f"ablation.json, {row['setting']} seed {row['seed']}"
    problems = []
    if row["feature map"] != "16x16":
        problems.append(f"{where}: ASPP saw a {row['feature map']} map, not the report's 16x16")
    if row["same network as"] != twin:
        problems.append(
            f"{where}: 'same network as' is {row['same network as']!r}, the geometry says {twin!r}"
        )
    if twin is not None:
        other = by_key.get((twin, row["seed"]), {})
        if [row[k] for k in SCORES] != [other.get(k) for k in SCORES]:
            problems.append(f"{where}: its scores differ from {twin}'s, the same network")
        return problems
    run = run_folder(folder, row["setting"], int(row["seed"]))
    problems += _check_run(run)
    metrics = _read_json(run / "metrics.json")
    problems += [
        f"{where}: {key} {row[key]!r} but its metrics.json says {metrics.get(key)!r}"
        for key in ("miou", "pixel_accuracy")
        if metrics.get(key) != row[key]
    ]
    config = base.replace(atrous_rates=SETTINGS[row["setting"]], seed=int(row["seed"]))
    problems += _check_config(run / "config.json", config.to_dict())
    radii = erf_radii(run)
    if any(not math.isclose(radii[k], row[k]) for k in radii):
        problems.append(
            f"{where}: ERF radii {[row[k] for k in radii]} but its erf.npy gives "
            f"{list(radii.values())}"
        )
    return problems


SCORES = ("miou", "pixel_accuracy", "erf r50 (px)", "erf r90 (px)")


def retrain_first_epoch(folder: Path, *, progress: bool = False) -> list[str]:
    """Retrain the first epoch of the ablation run `RETRAIN_RUN` and compare it with the stored
    history: [] when it matches, else the problems. It retrains in the stored run's own path
    (precision and memory format) with the provenance's thread count; bit for bit where this
    machine runs the same kernels (`provenance.same_kernels`: fingerprint and torch version),
    within RETRAIN_TOLERANCE elsewhere; it says which and why."""
    import torch

    setting, seed = RETRAIN_RUN
    run = run_folder(folder, setting, int(seed))
    record = _read_provenance(folder)
    stored = pd.read_csv(run / "history.csv").iloc[0]
    path = fastpath.Path.parse(stored["path"])
    config = RunConfig.from_dict(_read_json(run / "config.json")).replace(
        session_epochs=1, amp=path.amp, channels_last=path.channels_last
    )
    exact, why = provenance.same_kernels(record)
    threads = torch.get_num_threads()
    with _inside(checkout(required=True)), tempfile.TemporaryDirectory() as tmp:
        make_synthetic_voc(ABLATION_DATA_ROOT, **ABLATION_DATA)
        torch.set_num_threads(record.get("machine", {}).get("threads") or threads)
        try:
            again = train(config, Path(tmp) / "run", progress=progress).history[0]
        finally:
            torch.set_num_threads(threads)
    how = f"bit-exact ({why})" if exact else f"within {RETRAIN_TOLERANCE} ({why})"
    problems = []
    for key, tolerance in RETRAIN_TOLERANCE.items():
        old, new = float(stored[key]), float(again[key])
        ok = (
            old == new
            if exact
            else (abs(new - old) <= tolerance * (abs(old) if key != "miou" else 1.0))
        )
        if not ok:
            problems.append(f"{run.name}: retrained epoch 1 {key} {new!r}, stored {old!r} ({how})")
    print(
        f"retrained epoch 1 of the ablation's {setting} seed {seed} in {path}: "
        + ("matches, " if not problems else "DIFFERS, ")
        + how
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


def _check_config(path: Path, expected: dict) -> list[str]:
    stored = _read_json(path)
    return [] if stored == expected else [_stale(str(path), stored, expected)]


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
    "ablation": StoredResult(
        "ablation",
        "the atrous-rate ablation: 7 rate settings x 3 seeds on a 16x16 ASPP map",
        _make_ablation,
        _check_ablation,
        lambda: _dataset("ablation"),
    ),
}


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
    if (fresh / "ablation.json").is_file():  # the table carries its provenance at its top level
        table = json.loads((fresh / "ablation.json").read_text())
        write_json(fresh / "ablation.json", {**record, **table, **record})
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
        if name == "ablation" and retrain and not problems:
            problems += retrain_first_epoch(folder, progress=progress)
    return problems


def listing() -> pd.DataFrame:
    """One row per stored result: what it is and how it was made."""
    rows = []
    for name, result in RESULTS.items():
        record = _read_provenance(store(name))
        commit = record.get("commit") or "?"
        rows.append(
            {
                "result": name,
                "what": result.about,
                "command": record.get("command", "(not stored)"),
                "commit": commit[:10] + ("" if record.get("clean", True) else " (modified)"),
                "machine": machine.describe(record["machine"]) if record else "",
                "torch": record.get("torch", ""),
                "ended": record.get("ended", ""),
                "minutes": round(record["seconds"] / 60, 1) if record else np.nan,
            }
        )
    return pd.DataFrame(rows).set_index("result")
