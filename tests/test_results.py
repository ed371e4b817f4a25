"""Stored results: they hold, and `verify` catches a changed number, a history that does not match
its scores, and a configuration the current code would not run. The checks of an experiment run
on a tiny one made here by `results.make` itself (the stored experiments take hours to make)."""

import json
import shutil

import pandas as pd
import pytest
import torch

from deeplab_kit.cli import main
from deeplab_kit.config import RECIPES
from deeplab_kit.course import ablation, colab, going_deeper, provenance, results
from deeplab_kit.runtime import fingerprint
from deeplab_kit.runtime.arithmetic import Arithmetic
from tests.conftest import TINY_RUN

pytestmark = pytest.mark.usefixtures("one_thread")
STORED = list(results.RESULTS)
TINY = going_deeper.Design(
    name="going-deeper",
    settings={going_deeper.label(7, s): dict(extra_blocks=3, output_stride=s) for s in (8, 32)},
    seeds=(0, 1),
    data=dict(num_train=6, num_val=4, size=32, seed=0, classes=going_deeper.CLASSES),
    planned=((going_deeper.label(7, 8), going_deeper.label(7, 32)),),
    twice=(going_deeper.label(7, 32),),
)


def _as_stored(patch, root):
    """Make the code see `root` as the checkout and the tiny design as the going-deeper one."""
    patch.setattr(results, "checkout", lambda required=False: root)
    patch.setitem(going_deeper.DESIGNS, TINY.name, TINY)
    tiny = {k: v for k, v in TINY_RUN.items() if k not in ("backbone", "image_size")}
    patch.setitem(RECIPES, "going-deeper", {**RECIPES["going-deeper"], **tiny})
    result = results.StoredResult(
        TINY.name,
        "a tiny going-deeper",
        TINY.data,
        results._going_deeper_maker(TINY),
        results._check_going_deeper(TINY),
        results._retrain_setting(TINY.name, going_deeper.label(7, 32)),
    )
    patch.setitem(results.RESULTS, TINY.name, result)


@pytest.fixture(scope="module")
def tiny_checkout(tmp_path_factory):
    """A checkout whose notebooks/results holds a tiny going-deeper experiment, made by
    `results.make` itself: two settings, two seeds, one epoch on six 32-pixel images."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "notebooks" / "results").mkdir(parents=True)
    patch, threads = pytest.MonkeyPatch(), torch.get_num_threads()
    try:
        _as_stored(patch, root)
        patch.setattr(results, "WORKERS", 1)  # in this process, with the threads it records
        torch.set_num_threads(results.threads_per_worker(1))
        command = "python -m deeplab_kit results make going-deeper"
        results.make(TINY.name, command=command, progress=False)
    finally:
        patch.undo()
        torch.set_num_threads(threads)
    return root


@pytest.fixture
def tiny_store(tiny_checkout, monkeypatch):
    """The tiny experiment, seen as the stored going-deeper for one test."""
    _as_stored(monkeypatch, tiny_checkout)
    return tiny_checkout / "notebooks" / "results"


def test_every_result_the_kit_knows_is_stored():
    for name in results.RESULTS:
        assert (results.store(name) / results.PROVENANCE).is_file(), name


@pytest.fixture
def copy_of(tmp_path):
    """A copy of a stored result, to tamper with."""

    def make(name):
        folder = tmp_path / name
        shutil.copytree(results.store(name), folder)
        return folder

    return make


def _check(name, folder):
    record = json.loads((folder / f"{name}.json").read_text()) if name != "demo" else {}
    return results.RESULTS[name].check(folder, record)


@pytest.mark.parametrize("name", STORED)
def test_every_stored_result_holds_and_says_how_it_was_made(name):
    folder = results.store(name)
    assert _check(name, folder) == []
    record = json.loads((folder / results.PROVENANCE).read_text())
    assert set(results.PROVENANCE_KEYS) <= set(record)
    assert record["command"] == f"python -m deeplab_kit results make {name}"
    assert len(record["commit"]) == 40 and record["clean"] is True
    assert record["seconds"] > 0 and record["machine"]["cpu"]


def _provenance(name):
    return json.loads((results.store(name) / "provenance.json").read_text())


def _one_arithmetic(table, record):
    """Every run of an experiment in the arithmetic its make chose once."""
    assert set(table["arithmetic"]) == {record["arithmetic"]}


def test_the_stored_ablation_is_the_designed_experiment():
    table, record = results.stored_experiment("ablation")
    assert (table["feature map"] == "16x16").all()
    assert set(table["backbone"]) == set(ablation.BACKBONES)
    assert list(dict.fromkeys(table["setting"])) == list(ablation.SETTINGS)
    pairs = zip(table["backbone"], table["setting"], strict=True)
    labels = [ablation.run_label(b, s) for b, s in pairs]
    seeds = table.assign(label=labels).groupby("label", sort=False)["seed"].apply(tuple)
    assert all(seeds[label] == ablation.seeds_of(label) for label in seeds.index)
    for key in ("command", "commit", "machine", "torch"):  # its provenance, at the top level
        assert record[key] == _provenance("ablation")[key]
    _one_arithmetic(table, record)
    assert table["finished"].all() and (table["miou"] >= 0.10).all()  # off the plateau
    sweep = pd.DataFrame(record["lr sweep"])
    assert record["config"]["lr"] == ablation.chosen_lr(sweep) and ablation.inside_grid(sweep)
    assert [row["setting"] for row in record["twice the epochs"]] == list(ablation.TWICE)
    assert [list(pair) for pair in ablation.PLANNED] == record["planned pairs"]
    trained = table[table["same network as"].isna()]
    per_seed = trained.pivot_table(index="seed", columns=["backbone", "setting"], values="miou")
    assert per_seed.T.duplicated().sum() == 0  # distinct networks give distinct results


@pytest.mark.parametrize("name", ["going-deeper", "cascaded-blocks"])
def test_the_stored_going_deeper_experiments_are_their_designs(name):
    design = going_deeper.DESIGNS[name]
    table, record = results.stored_experiment(name)
    for key in ("command", "commit", "machine", "torch", "seconds"):
        assert record[key] == _provenance(name)[key]
    assert list(dict.fromkeys(table["setting"])) == list(design.settings)
    assert all(seeds == design.seeds for seeds in table.groupby("setting")["seed"].apply(tuple))
    _one_arithmetic(table, record)
    assert table["finished"].all()
    assert [tuple(pair) for pair in record["planned pairs"]] == list(design.planned)
    assert [row["setting"] for row in record["twice the epochs"]] == list(design.twice)
    geometry = pd.DataFrame(record["geometry"]).set_index("setting")
    assert list(geometry.index) == list(design.settings)
    assert geometry["oracle mIoU (%)"].between(0, 100).all()
    sides = table.drop_duplicates("setting")["feature map"]
    if name == "going-deeper":  # every output stride a map of its own side
        assert sides.is_unique and (table["blocks"] == 7).all()
    else:  # every depth on the one 17 x 17 map
        assert set(sides) == {"17x17"} and (table["output_stride"] == 16).all()


def test_a_made_experiment_holds_and_says_how_it_was_made(tiny_store):
    table, record = results.stored_experiment("going-deeper")
    assert results.verify(["going-deeper"], retrain=False) == []
    assert list(dict.fromkeys(table["setting"])) == list(TINY.settings) and len(table) == 4
    _one_arithmetic(table, record)
    assert [row["setting"] for row in record["twice the epochs"]] == list(TINY.twice)
    assert set(results.PROVENANCE_KEYS) <= set(_provenance("going-deeper"))
    assert record["data"]["files sha256"]
    assert record["other code"] is (not record["clean"])  # one session: only a dirty tree


def test_a_changed_number_is_caught(tiny_store, copy_of):
    folder = copy_of("going-deeper")
    record = json.loads((folder / "going-deeper.json").read_text())
    record["rows"][3]["miou"] += 1e-9
    (folder / "going-deeper.json").write_text(json.dumps(record))
    assert any("metrics.json says" in p for p in _check("going-deeper", folder))


def test_a_history_that_does_not_match_its_scores_is_caught(tiny_store, copy_of):
    folder = copy_of("going-deeper")
    run = folder / "block7-os32" / "seed-1"
    history = pd.read_csv(run / "history.csv")
    history.loc[len(history) - 1, "miou"] = 0.5
    history.to_csv(run / "history.csv", index=False)
    assert any("does not match metrics.json" in p for p in _check("going-deeper", folder))


def test_a_configuration_the_code_would_not_run_is_stale(copy_of):
    folder = copy_of("demo")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "lr": 0.1}))
    problems = _check("demo", folder)
    assert any("stale" in p and "lr: stored 0.1, now 0.006" in p for p in problems)


def test_an_experiment_the_code_would_not_run_is_stale(tiny_store, copy_of, monkeypatch):
    folder = copy_of("going-deeper")
    epochs = RECIPES["going-deeper"]["epochs"]
    monkeypatch.setitem(RECIPES, "going-deeper", {**RECIPES["going-deeper"], "epochs": epochs + 1})
    message = f"epochs: stored {epochs}, now {epochs + 1}"
    assert any("stale" in p and message in p for p in _check("going-deeper", folder))


def test_retraining_the_first_epoch_matches_the_stored_history(tiny_store, capsys):
    """Bit for bit where the kernels (the machine's fingerprint) and torch version are the
    provenance's, within the stated tolerance elsewhere; it says which, and names the run."""
    name = "going-deeper"
    record = _provenance(name)
    assert results.retrain_first_epoch(name, results.store(name)) == []
    said = capsys.readouterr().out
    relative, _ = results.RESULTS[name].retrain(Arithmetic.parse(record["arithmetic"]))
    assert said.startswith(f"{name}: retrained epoch 1 of the stored run {relative}")
    # with the threads each run was made with (a worker's share of the cores), from the full
    # record: provenance.json holds only the machine's threads
    made = json.loads((results.store(name) / f"{name}.json").read_text())
    assert f"with {made['threads per run']} torch thread(s)" in said
    assert ("bit-exact" in said) == provenance.same_kernels(record)[0]
    assert "run the same command again" not in said  # no training advice in a check


def test_a_machine_with_the_same_model_name_but_other_flags_retrains_within_the_tolerance(
    tiny_store, capsys, monkeypatch
):
    record = _provenance("going-deeper")
    other = {**record["machine"], "isa": ["avx512f", "avx2"]}  # as stored, but no AMX or BF16
    monkeypatch.setattr(fingerprint, "of_machine", lambda device="cpu": other)
    same, why = provenance.same_kernels(record)
    assert not same and why.startswith("same model name, other instruction sets")
    assert results.retrain_first_epoch("going-deeper", results.store("going-deeper")) == []
    said = capsys.readouterr().out
    assert "matches, within" in said and "same model name, other instruction sets" in said


def test_the_notebook_times_are_one_per_notebook_and_go_stale_with_the_course(copy_of):
    folder = copy_of("notebook-times")
    record = json.loads((folder / "notebook-times.json").read_text())
    assert [row["notebook"] for row in record["rows"]] == list(colab.NOTEBOOKS)
    assert all(row["seconds"] > 0 and row["profile"] == "quick" for row in record["rows"])
    record["rows"] = record["rows"][:-1]  # a notebook added since
    assert any("stale" in p for p in results.RESULTS["notebook-times"].check(folder, record))


def test_results_command(capsys):
    assert main(["results", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ablation" in listed and "demo" in listed
    assert main(["results", "verify", "demo", "--no-retrain"]) == 0
    assert "stored results hold" in capsys.readouterr().out
    assert main(["results", "make"]) == 2
    assert "results make needs a NAME" in capsys.readouterr().err
    assert main(["results", "verify", "nope"]) == 2
    assert "no stored result 'nope'" in capsys.readouterr().err


def test_a_tree_is_clean_when_only_stored_results_changed(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "notebooks" / "results").mkdir(parents=True)
    (tmp_path / "notebooks" / "results" / "table.csv").write_text("a\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "one")
    assert provenance.git_state(tmp_path)[1] is True
    (tmp_path / "notebooks" / "results" / "table.csv").write_text("b\n")  # a result remade
    assert provenance.git_state(tmp_path)[1] is True
    (tmp_path / "code.py").write_text("x = 2\n")  # the code changed
    commit, clean = provenance.git_state(tmp_path)
    assert clean is False and len(commit) == 40
