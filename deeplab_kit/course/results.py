"""Stored results: what `notebooks/results/` holds, the one command that makes each, and a check.

    python -m deeplab_kit results list              # what is stored, and how it was made
    python -m deeplab_kit results make ablation     # (re)make one; a stopped make resumes
    python -m deeplab_kit results verify [NAME]     # is what is stored what the code makes?

Each stored result is a folder `notebooks/results/<name>/` of small files (tables, histories,
scores, figures; no weights) and the `provenance.json` `make` writes: the command, the code (git
commit, clean or not, at the start and end of each session of the make), the machine, the
library versions, the arithmetic every run computed in, a hash of the generated dataset's files,
the time it took. `make` trains in `runs/results/<name>/` (checkpoints there: a stopped make
resumes) and replaces the stored folder only once everything is done. A make resumed on other
code than its first session's is refused unless told (`other_code=True`; the record says so);
one resumed on another machine keeps its first session's arithmetic.

The notebooks read stored files through `stored(relative)` (fetched from the repository in
Colab, where the kit is installed without them) and `stored_experiment(name)`.

`verify` checks each stored result against itself (scores against confusion matrices,
histories against scores, tables against run files) and against the current code (the
configuration it would run, else stale), and retrains the first epoch of one run of each
experiment: bit for bit where this machine runs the provenance's kernels and torch version,
within `RETRAIN_TOLERANCE` elsewhere.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeplab_kit.config import RunConfig, flat
from deeplab_kit.course import ablation, going_deeper, provenance
from deeplab_kit.course.colab import NOTEBOOKS, checkout, in_colab, raw_url
from deeplab_kit.course.demo import DEMO_DATA, run_demo
from deeplab_kit.course.experiments import (
    TWICE,
    last_gain,
    run_folder,
    setting_folder,
    threads_per_worker,
    twice_the_epochs,
)
from deeplab_kit.data.synthetic import (
    DEFAULT_ROOT,
    GENERATOR_VERSION,
    make_synthetic_voc,
    tree_hash,
)
from deeplab_kit.files import plain, write_json, write_text
from deeplab_kit.runtime import fingerprint
from deeplab_kit.runtime.arithmetic import Arithmetic, choose
from deeplab_kit.runtime.run_files import metrics_dict, read_confusion, write_tables
from deeplab_kit.training.loop import train

WORK = Path("runs") / "results"  # under the checkout
PROVENANCE = "provenance.json"
SESSIONS = "sessions.json"  # in the work folder: a make's sessions so far, and its arithmetic
PROVENANCE_KEYS = tuple(
    "command commit clean machine torch torchvision numpy pillow started ended seconds sessions "
    "arithmetic data".split()
)
# How far a retrained first epoch may be from the stored one on another CPU or torch version
# (bf16 kernels round differently across CPUs): relative, on the losses; absolute, on mIoU.
RETRAIN_TOLERANCE = {"train_loss": 0.02, "val_loss": 0.05, "miou": 0.02}
WORKERS = 2  # runs at a time, each with half the cores as threads (`experiments.run_grid`)
RUN_FILES = ("history.csv", "metrics.json", "config.json")


@dataclass(frozen=True)
class StoredResult:
    name: str
    about: str
    data: dict  # the generated dataset it is made on (make_synthetic_voc's arguments)
    make: Callable[[Path, Arithmetic, bool], dict]  # (work, arithmetic, progress) -> record
    check: Callable[[Path, dict], list[str]]  # (stored folder, its record) -> problems
    retrain: Callable[[Arithmetic], tuple[str, RunConfig]] | None = None  # the run verify retrains

    @property
    def data_root(self) -> str:
        return DEFAULT_ROOT if self.name == "demo" else f"{DEFAULT_ROOT}-{self.name}"


def store(name: str) -> Path:
    return checkout(required=True) / "notebooks" / "results" / name


def stored(relative: str) -> Path:
    """A stored result file (notebooks/results/<relative>), read from the checkout; in Colab,
    where the kit is pip-installed without the notebooks, fetched from the repository first
    into results/ of the working directory."""
    found = checkout()
    path = (found / "notebooks" / "results" if found else Path.cwd() / "results") / relative
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


def stored_experiment(name: str) -> tuple[pd.DataFrame, dict]:
    """A stored experiment: its table (one row per run) and the rest of its record (provenance,
    configuration, settings, seeds, planned pairs, geometry, the convergence check, ...)."""
    record = read_stored_json(f"{name}/{name}.json")
    if name == "ablation":
        frame = ablation.table(record["rows"])
    else:
        frame = pd.DataFrame(record["rows"], columns=list(going_deeper.COLUMNS))
    return frame, {k: v for k, v in record.items() if k != "rows"}


def stored_ablation_lr() -> float | None:
    """The learning rate the stored ablation's sweep chose (None when none is stored here)."""
    try:
        return float(RunConfig.from_dict(read_stored_json("ablation/ablation.json")["config"]).lr)
    except (FileNotFoundError, KeyError, ValueError):
        return None


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


def demo_config() -> RunConfig:
    """The configuration `results make demo` runs (and `verify` expects)."""
    root = RESULTS["demo"].data_root
    return RunConfig.from_recipe("demo", data_root=root, cache_dir=f"{root}/cache")


def experiment_config(name: str, arithmetic: Arithmetic, **overrides) -> RunConfig:
    """The base configuration of a stored experiment (and what `verify` expects): its recipe on
    its generated data, every run in one arithmetic."""
    result = RESULTS[name]
    recipe = "ablation" if name == "ablation" else "going-deeper"
    return RunConfig.from_recipe(
        recipe,
        data_root=result.data_root,
        cache_dir=f"{result.data_root}/cache",
        image_size=result.data["size"],
        amp=arithmetic.amp,
        channels_last=arithmetic.channels_last,
        **overrides,
    )


def experiment_settings(name: str, base: RunConfig) -> dict[str, RunConfig]:
    """Every setting's configuration of stored experiment `name`, from its base `base`."""
    if name == "ablation":
        return ablation.configs(base)
    return going_deeper.DESIGNS[name].configs(base)


def design_seeds(name: str, label: str) -> tuple[int, ...]:
    """The seeds the stored design of experiment `name` trains setting `label` with."""
    if name == "ablation":
        return ablation.seeds_of(label)
    return going_deeper.DESIGNS[name].seeds


def _run_label(name: str, row: Mapping) -> str:
    """A stored row's run label (the ablation's names its backbone too)."""
    if name == "ablation":
        return ablation.run_label(row["backbone"], row["setting"])
    return row["setting"]


def _grid(progress: bool) -> dict:
    return dict(workers=WORKERS, progress=progress, keep_checkpoints=False)


def _make_demo(work: Path, arithmetic: Arithmetic, progress: bool) -> dict:
    config = demo_config()
    make_synthetic_voc(config.data_root, **DEMO_DATA)  # regenerated if another set is there
    run_demo(work, config.data_root, config=config, progress=progress)
    write_json(work / "config.json", config.to_dict())
    return {}


def _going_deeper_maker(design: going_deeper.Design):
    def make(work: Path, arithmetic: Arithmetic, progress: bool) -> dict:
        base = experiment_config(design.name, arithmetic)
        make_synthetic_voc(base.data_root, **design.data)
        masks = going_deeper.validation_masks(base)
        rows = going_deeper.run(design, base, work, twice=design.twice, **_grid(progress))
        longer = {name: design.configs(base)[name] for name in design.twice}
        return {
            "config": base.to_dict(),
            "settings": design.settings,
            "seeds": list(design.seeds),
            "planned pairs": [list(pair) for pair in design.planned],
            "geometry": going_deeper.geometry(design, base, masks).reset_index().to_dict("records"),
            TWICE: twice_the_epochs(longer, rows, work, **_grid(progress)).to_dict("records"),
            "rows": rows,
        }

    return make


def _make_ablation(work: Path, arithmetic: Arithmetic, progress: bool) -> dict:
    base = experiment_config("ablation", arithmetic)
    make_synthetic_voc(base.data_root, **ablation.DATA)
    sweep = ablation.tune_lr(base, work / "sweep", **_grid(progress))
    base = base.replace(lr=ablation.chosen_lr(sweep))
    rows = ablation.run(
        base, work, erf_images=ablation.ERF_IMAGES, twice=ablation.TWICE, **_grid(progress)
    )
    longer = {name: ablation.configs(base)[name] for name in ablation.TWICE}
    return {
        "config": base.to_dict(),
        "settings": {
            k: {"rates": list(r), "image_pooling": p} for k, (r, p) in ablation.SETTINGS.items()
        },
        "backbones": ablation.BACKBONES,
        "planned pairs": [list(pair) for pair in ablation.PLANNED],
        "seeds": {
            "planned": list(ablation.PLANNED_SEEDS),
            "exploratory": list(ablation.EXPLORATORY_SEEDS),
        },
        "regions": {
            "interior distance (px)": ablation.INTERIOR_DISTANCE,
            "band (px)": ablation.BAND,
        },
        "lr sweep": sweep.to_dict("records"),
        "geometry": ablation.geometry_table(base).to_dict("records"),
        TWICE: twice_the_epochs(longer, rows, work, **_grid(progress)).to_dict("records"),
        "rows": ablation.table(rows).to_dict("records"),
    }


def _make_notebook_times(work: Path, arithmetic: Arithmetic, progress: bool) -> dict:
    """Each notebook executed once in the quick profile (a fresh kernel, the checkout's stored
    results), its wall seconds recorded: what the Colab plan's quick rows quote."""
    import nbformat  # the notebook tools, only for this make
    from nbclient import NotebookClient

    folder = checkout(required=True) / "notebooks"
    rows = []
    for name in NOTEBOOKS:
        notebook = nbformat.read(folder / name, as_version=4)
        client = NotebookClient(
            notebook, timeout=1800, resources={"metadata": {"path": str(folder)}}
        )
        started = time.monotonic()
        with _environment(DEEPLAB_KIT_PROFILE="quick"):
            client.execute()
        seconds = round(time.monotonic() - started, 1)
        rows.append({"notebook": name, "profile": "quick", "seconds": seconds})
    return {"rows": rows}


@contextlib.contextmanager
def _environment(**values):
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


def _check_notebook_times(folder: Path, record: dict) -> list[str]:
    rows = record.get("rows", [])
    if [r["notebook"] for r in rows] == list(NOTEBOOKS) and all(r["seconds"] > 0 for r in rows):
        return []
    return ["notebook-times.json: not one positive time per current notebook: stale"]


def make(
    name: str, *, command: str | None = None, progress: bool = True, other_code: bool = False
) -> Path:
    """Make the stored result `name` (resuming a stopped make) and replace its stored folder,
    which it returns."""
    result = _result(name)
    root = checkout(required=True)
    work = root / WORK / name
    log = _read_json(work / SESSIONS)
    session = provenance.start(command or f"deeplab_kit.course.results.make({name!r})")
    earlier = log.get("sessions", [])
    if earlier and not provenance.same_code(earlier[0], session) and not other_code:
        raise RuntimeError(
            f"{work}: this make started on commit {earlier[0].get('commit')} (clean: "
            f"{earlier[0].get('clean')}) and would resume on {session['commit']} (clean: "
            f"{session['clean']}); resume it on that code, or say so with --other-code"
        )
    arithmetic = log.get("arithmetic") or str(choose("cpu"))  # kept when it resumes elsewhere
    with _inside(root):
        try:
            record = result.make(WORK / name, Arithmetic.parse(arithmetic), progress)
        finally:  # a stopped make keeps its session, counted when it is resumed
            sessions = [*earlier, provenance.finish(session)]
            write_json(work / SESSIONS, plain({"arithmetic": arithmetic, "sessions": sessions}))
        data = {**result.data, "generator version": GENERATOR_VERSION} if result.data else {}
        if result.data:
            data["files sha256"] = tree_hash(result.data_root)
    record = {**provenance.combine(sessions), "arithmetic": arithmetic, "data": data, **record}
    record["other code"] = not all(provenance.same_code(sessions[0], s) for s in sessions)
    if name not in ("demo", "notebook-times"):
        record.update(workers=WORKERS, **{"threads per run": threads_per_worker(WORKERS)})
    return _replace_store(name, work, record)


def _stored_files(name: str, work: Path, record: dict) -> dict[str, Path]:
    """{relative name: source} of what a result stores: the demo's run files, or each of the
    record's runs' small files (no checkpoints): its rows', the convergence check's and the
    learning-rate sweep's."""
    if name == "notebook-times":
        return {}
    if name == "demo":
        names = ("history.csv", "metrics.json", "metrics.md", "metrics.csv", "per_class.csv")
        return {n: work / n for n in (*names, "loss_curve.png", "predictions.png", "config.json")}
    runs = [run_folder(work, _run_label(name, row), int(row["seed"])) for row in record["rows"]]
    runs += [run_folder(work / TWICE, row["setting"], 0) for row in record[TWICE]]
    runs += [
        run_folder(work / "sweep", f"lr {r['lr']:g} {r['setting']}", 0)
        for r in record.get("lr sweep", [])
    ]
    extra = ("predictions.png", "regions.json", "erf.npy")
    return {
        str(path.relative_to(work)): path
        for run in runs
        for path in (run / n for n in (*RUN_FILES, *extra))
        if path.is_file()
    }


def _replace_store(name: str, work: Path, record: dict) -> Path:
    """Copy the result's files into a fresh stored folder with its record; the old folder is
    replaced only once the new one is complete."""
    target, record = store(name), plain(record)
    fresh = target.with_name(f".{name}.new")
    shutil.rmtree(fresh, ignore_errors=True)
    for relative, source in _stored_files(name, work, record).items():
        (fresh / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, fresh / relative)
    if name != "demo":  # an experiment's record holds its table; the CSV the same rows
        write_json(fresh / f"{name}.json", record)
        write_text(fresh / f"{name}.csv", pd.DataFrame(record["rows"]).to_csv(index=False))
    provenance_only = {k: v for k, v in record.items() if k in PROVENANCE_KEYS or k == "other code"}
    write_json(fresh / PROVENANCE, provenance_only)
    old = target.with_name(f".{name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    fresh.rename(target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _check_demo(folder: Path, record: dict) -> list[str]:
    problems = _check_run(folder)
    problems += _check_config(folder / "config.json", demo_config())
    with tempfile.TemporaryDirectory() as tmp:  # the tables equal those its metrics.json gives
        write_tables(Path(tmp), _read_json(folder / "metrics.json"))
        problems += [
            f"{folder / name}: differs from the table its metrics.json gives"
            for name in ("metrics.md", "metrics.csv", "per_class.csv")
            if not (folder / name).is_file()
            or (folder / name).read_text() != (Path(tmp) / name).read_text()
        ]
    return problems


def _check_going_deeper(design: going_deeper.Design):
    def check(folder: Path, record: dict) -> list[str]:
        arithmetic = Arithmetic.parse(record.get("arithmetic", "fp32 + contiguous"))
        base = experiment_config(design.name, arithmetic)
        configs = design.configs(base)
        expected = [(name, seed) for name in design.settings for seed in design.seeds]
        problems = _check_experiment(folder, design.name, record, base, configs, expected)
        for row in record.get("rows", []):
            stride = configs[row["setting"]].model.output_stride
            side = going_deeper.feature_size(base.image_size, stride)
            if row["feature map"] != f"{side}x{side}":
                problems.append(
                    f"{row['setting']} seed {row['seed']}: feature map {row['feature map']}, the geometry says {side}x{side}"
                )
        return problems

    return check


def _check_ablation(folder: Path, record: dict) -> list[str]:
    base = RunConfig.from_dict(record.get("config") or {})
    arithmetic = Arithmetic.parse(record.get("arithmetic", "fp32 + contiguous"))
    expected_base = experiment_config("ablation", arithmetic, lr=base.lr)
    configs = ablation.configs(expected_base)
    expected = [(name, seed) for name in configs for seed in ablation.seeds_of(name)]
    rows = [{**r, "setting": _run_label("ablation", r)} for r in record.get("rows", [])]
    problems = _check_experiment(
        folder, "ablation", {**record, "rows": rows}, expected_base, configs, expected
    )
    sweep = pd.DataFrame(record.get("lr sweep") or [])
    if sweep.empty or not ablation.inside_grid(sweep) or ablation.chosen_lr(sweep) != base.lr:
        problems.append(
            "ablation.json: its learning rate is not the sweep's choice inside its grid"
        )
    for row in sweep.to_dict("records"):
        run = run_folder(folder / "sweep", f"lr {row['lr']:g} {row['setting']}", 0)
        problems += _check_run(run)
        if _read_json(run / "metrics.json").get("miou") != row["tune miou"]:
            problems.append(
                f"ablation.json: the sweep's tune mIoU at lr {row['lr']:g} ({row['setting']}) is not its run's"
            )
    for row in rows:
        run = run_folder(folder, row["setting"], int(row["seed"]))
        regions = _read_json(run / "regions.json")
        for region in ("interior", "band"):
            scores = regions.get(region, {})
            if (
                "confusion_matrix" not in scores
                or metrics_dict(read_confusion(scores))["miou"] != row[f"{region} miou"]
            ):
                problems.append(f"{run}/regions.json: its {region} mIoU is not the table's")
        radii = ablation.erf_radii(run)
        if any(not math.isclose(radii[k], row[k]) for k in radii):
            problems.append(
                f"{run}: ERF radii {[row[k] for k in radii]}, its erf.npy gives {list(radii.values())}"
            )
    return problems


def _check_experiment(
    folder: Path, name: str, record: dict, base: RunConfig, configs: Mapping, expected: list
) -> list[str]:
    """What every experiment's record holds: the base configuration the current code would run,
    rows for the expected (setting, seed)s, each row's and each convergence check's scores and
    configuration equal to its run folder's, the CSV equal to the rows."""
    problems = _check_config_dict(f"{name}.json", record.get("config"), base)
    rows = record.get("rows", [])
    if [(row["setting"], row["seed"]) for row in rows] != expected:
        return problems + [f"{name}.json: its rows are not the current settings x seeds: stale"]
    csv = folder / f"{name}.csv"
    original = _read_json(folder / f"{name}.json").get("rows", [])
    if not csv.is_file() or csv.read_text() != pd.DataFrame(original).to_csv(index=False):
        problems.append(f"{name}.csv: missing or not {name}.json's rows")
    for row in rows:
        where = f"{name}.json, {row['setting']} seed {row['seed']}"
        run = run_folder(folder, row["setting"], int(row["seed"]))
        config = configs[row["setting"]].replace(seed=int(row["seed"]))
        problems += _check_row_run(where, run, row, config)
    for row in record.get(TWICE, []):
        where = f"{name}.json, {TWICE}: {row['setting']}"
        run = run_folder(folder / TWICE, row["setting"], 0)
        config = configs[row["setting"]].replace(seed=0, epochs=2 * configs[row["setting"]].epochs)
        problems += _check_row_run(where, run, {"miou": row["twice the epochs"]}, config)
    return problems


def _check_row_run(where: str, run: Path, row: dict, config: RunConfig) -> list[str]:
    """A table row against its run folder: scores recomputed, history, configuration."""
    problems = _check_run(run)
    metrics = _read_json(run / "metrics.json")
    problems += [
        f"{where}: {key} {row[key]!r} but its metrics.json says {metrics.get(key)!r}"
        for key in ("miou", "pixel_accuracy")
        if key in row and metrics.get(key) != row[key]
    ]
    return problems + _check_config(run / "config.json", config)


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
        found = RunConfig.from_dict(stored or {})
    except ValueError as error:
        return [f"{where}: not a configuration the current code reads ({error}): stale"]
    if found == expected:
        return []
    a, b = flat(found), flat(expected)
    shown = ", ".join(f"{k}: stored {a[k]!r}, now {b[k]!r}" for k in a if a[k] != b[k])
    return [f"{where}: stale (the current code would run another configuration: {shown})"]


def retrain_first_epoch(
    name: str, folder: Path, record: dict | None = None, *, progress: bool = False
) -> list[str]:
    """Retrain the first epoch of the stored result's `retrain` run and compare it with its
    stored history: [] when it matches, else the problems. The dataset is regenerated (its files
    must hash as stored), the run retrained in its own arithmetic with the provenance's threads:
    bit for bit where `provenance.same_kernels`, within RETRAIN_TOLERANCE elsewhere (it says
    which and why). `record`: the result's full record (`_full_record`), when already read."""
    result = RESULTS[name]
    record = record or _full_record(name, folder, _read_json(folder / PROVENANCE))
    relative, config = result.retrain(Arithmetic.parse(record["arithmetic"]))
    stored_epoch = pd.read_csv(folder / relative / "history.csv").iloc[0]
    exact, why = provenance.same_kernels(record)
    threads = torch.get_num_threads()
    # an experiment's runs trained in workers, each with a share of the cores (its full record
    # says how many threads; provenance.json holds only the machine's)
    made_with = record.get("threads per run") or record["machine"].get("threads") or threads
    with _inside(checkout(required=True)), tempfile.TemporaryDirectory() as tmp:
        make_synthetic_voc(result.data_root, **result.data)
        problems = []
        if tree_hash(result.data_root) != record["data"].get("files sha256"):
            problems.append(f"{name}: the generated dataset's files differ from the stored hash")
        torch.set_num_threads(made_with)
        try:
            first = config.replace(session_epochs=1)
            again = train(first, Path(tmp) / "run", progress=progress).history[0]
        finally:
            torch.set_num_threads(threads)
    how = f"bit-exact ({why})" if exact else f"within {RETRAIN_TOLERANCE} ({why})"
    for key, tolerance in RETRAIN_TOLERANCE.items():
        old, new = float(stored_epoch[key]), float(again[key])
        scale = abs(old) if key != "miou" else 1.0
        if not (old == new if exact else abs(new - old) <= tolerance * scale):
            problems.append(
                f"{name}: {relative}: retrained epoch 1 {key} {new!r}, stored {old!r} ({how})"
            )
    verdict = "matches" if not problems else "DIFFERS"
    print(
        f"{name}: retrained epoch 1 of the stored run {relative} in {record['arithmetic']} "
        f"with {made_with} torch thread(s): {verdict}, {how}"
    )
    return problems


def _retrain_setting(name: str, setting: str):
    def retrain(arithmetic: Arithmetic) -> tuple[str, RunConfig]:
        # the ablation's learning rate is the one its sweep chose
        overrides = {"lr": stored_ablation_lr()} if name == "ablation" else {}
        base = experiment_config(name, arithmetic, **overrides)
        config = experiment_settings(name, base)[setting]
        return f"{setting_folder(setting)}/seed-0", config.replace(seed=0)

    return retrain


RESULTS = {
    "demo": StoredResult(
        "demo",
        "the demo run: 10 epochs of the demo recipe on the generated 96-pixel set",
        DEMO_DATA,
        _make_demo,
        _check_demo,
    ),
    "going-deeper": StoredResult(
        "going-deeper",
        "the paper's Table 1 at CPU scale: block7 at output stride 8..256 on 136-pixel images",
        going_deeper.OUTPUT_STRIDE.data,
        _going_deeper_maker(going_deeper.OUTPUT_STRIDE),
        _check_going_deeper(going_deeper.OUTPUT_STRIDE),
        _retrain_setting("going-deeper", going_deeper.label(7, 16)),
    ),
    "cascaded-blocks": StoredResult(
        "cascaded-blocks",
        "the paper's Table 2 at CPU scale: blocks 4..7 at output stride 16 on a 17 x 17 map",
        going_deeper.CASCADED.data,
        _going_deeper_maker(going_deeper.CASCADED),
        _check_going_deeper(going_deeper.CASCADED),
        _retrain_setting("cascaded-blocks", going_deeper.label(4, 16)),
    ),
    "notebook-times": StoredResult(
        "notebook-times",
        "every notebook executed once in the quick profile: the Colab plan's measured times",
        {},
        _make_notebook_times,
        _check_notebook_times,
    ),
    "ablation": StoredResult(
        "ablation",
        "ASPP's rates on a dilated and an undilated backbone of one depth, 16 x 16 map",
        ablation.DATA,
        _make_ablation,
        _check_ablation,
        _retrain_setting("ablation", ablation.run_label("undilated", "paper")),
    ),
}


def _result(name: str) -> StoredResult:
    if name not in RESULTS:
        raise ValueError(f"no stored result {name!r}; known: {sorted(RESULTS)}")
    return RESULTS[name]


def _full_record(name: str, folder: Path, made: dict) -> dict:
    """A stored result's provenance (`made`, as read) with its experiment's own record over it (the
    demo has none)."""
    return {**made, **(_read_json(folder / f"{name}.json") if name != "demo" else {})}


def verify(names=None, *, retrain: bool = True, progress: bool = False) -> list[str]:
    """The problems of the stored results `names` (default: all); [] when all hold."""
    problems = []
    for name in names or RESULTS:
        result, folder = _result(name), store(name)
        if not folder.is_dir():
            problems.append(
                f"{folder}: not stored; make it with `python -m deeplab_kit results make {name}`"
            )
            continue
        record = _read_json(folder / PROVENANCE)
        missing = [k for k in PROVENANCE_KEYS if k not in record]
        if missing:
            problems.append(f"{folder / PROVENANCE}: missing or without {missing}")
            continue
        data = {k: v for k, v in record["data"].items() if k != "files sha256"}
        expected = {**result.data, "generator version": GENERATOR_VERSION} if result.data else {}
        if data != plain(expected):
            problems.append(f"{folder / PROVENANCE}: made on another generated dataset: stale")
        full = _full_record(name, folder, record)
        problems += result.check(folder, full)
        if retrain and result.retrain and not problems:
            problems += retrain_first_epoch(name, folder, full, progress=progress)
    return problems


def listing() -> pd.DataFrame:
    """One row per stored result, short enough for a terminal: how long it took, on which kind
    of machine, in which arithmetic, from which commit, when. `details(name)` says the rest."""
    rows = []
    for name in RESULTS:
        record = _read_json(store(name) / PROVENANCE)
        commit = (record.get("commit") or "?")[:7] + ("" if record.get("clean", True) else "+")
        rows.append(
            {
                "result": name,
                "minutes": round(record["seconds"] / 60, 1) if record else np.nan,
                "machine": fingerprint.kind_of(record["machine"]) if record else "(not stored)",
                "arithmetic": record.get("arithmetic", "").replace(" autocast", ""),  # short
                "commit": commit if record else "",
                "ended": record.get("ended", "")[:10],
            }
        )
    return pd.DataFrame(rows).set_index("result")


def details(name: str) -> str:
    """A stored result in a few lines: what it is, and its provenance."""
    result = _result(name)
    record = _read_json(store(name) / PROVENANCE)
    if not record:
        return f"{name}: {result.about}\nnot stored; make it with `python -m deeplab_kit results make {name}`"
    return f"{name}: {result.about}\n" + provenance.describe(record)


def stored_gains(name: str, frame: pd.DataFrame, epochs: int = 6) -> pd.DataFrame:
    """How much each stored run's mIoU rose over its last `epochs` epochs, read from its stored
    history: one row per (setting, seed) of `frame`."""
    rows = []
    for row in frame.to_dict("records"):
        label = _run_label(name, row)
        path = stored(f"{name}/{setting_folder(label)}/seed-{row['seed']}/history.csv")
        gain = last_gain(pd.read_csv(path), epochs)
        rows.append({"setting": label, "seed": row["seed"], "gain": gain})
    return pd.DataFrame(rows)
