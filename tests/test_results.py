"""Stored results: they hold, and `verify` catches a changed number, a history that does not match
its scores, and a configuration the current code would not run."""

import json
import shutil

import pandas as pd
import pytest

from deeplab_kit.cli import main
from deeplab_kit.course import provenance, results
from deeplab_kit.course.ablation import read_ablation, run_folder
from deeplab_kit.training import machine
from deeplab_kit.training.config import RECIPES

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def copy_of(tmp_path):
    """A copy of a stored result, to tamper with."""

    def make(name):
        folder = tmp_path / name
        shutil.copytree(results.store(name), folder)
        return folder

    return make


def _check(name, folder):
    return results.RESULTS[name].check(folder)


@pytest.mark.parametrize("name", sorted(results.RESULTS))
def test_every_stored_result_holds_and_says_how_it_was_made(name):
    folder = results.store(name)
    assert _check(name, folder) == []
    record = json.loads((folder / results.PROVENANCE).read_text())
    assert set(results.PROVENANCE_KEYS) <= set(record)
    assert record["command"] == f"python -m deeplab_kit results make {name}"
    assert len(record["commit"]) == 40 and record["clean"] is True
    assert record["seconds"] > 0 and record["machine"]["cpu"]


def test_the_stored_ablation_is_the_issue_s_experiment():
    table, record = read_ablation(results.store("ablation"))
    assert (table["feature map"] == "16x16").all()
    assert table.groupby("setting").size().min() >= 3  # seeds per setting
    for key in ("command", "commit", "machine", "torch"):  # its provenance, at the top level
        assert (
            record[key]
            == json.loads((results.store("ablation") / "provenance.json").read_text())[key]
        )
    trained = table[table["same network as"].isna()]
    per_seed = trained.pivot(index="seed", columns="setting", values="miou")
    assert per_seed.T.duplicated().sum() == 0  # distinct networks give distinct results
    assert record["seconds"] <= 90 * 60


def test_a_changed_number_is_caught(copy_of):
    folder = copy_of("ablation")
    record = json.loads((folder / "ablation.json").read_text())
    record["rows"][0]["miou"] += 1e-9
    (folder / "ablation.json").write_text(json.dumps(record))
    problems = _check("ablation", folder)
    assert any("miou" in p and "metrics.json says" in p for p in problems)

    folder = copy_of("demo")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["miou"] = round(metrics["miou"], 3)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    assert any("its confusion matrix gives" in p for p in _check("demo", folder))


def test_a_history_that_does_not_match_its_scores_is_caught(copy_of):
    folder = copy_of("ablation")
    table, _ = read_ablation(folder)
    run = run_folder(folder, table["setting"][0], table["seed"][0])
    history = pd.read_csv(run / "history.csv")
    history.loc[len(history) - 1, "miou"] = 0.5
    history.to_csv(run / "history.csv", index=False)
    assert any("does not match metrics.json" in p for p in _check("ablation", folder))


def test_a_configuration_the_code_would_not_run_is_stale(copy_of, monkeypatch):
    folder = copy_of("demo")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "lr": 0.1}))
    problems = _check("demo", folder)
    assert any("stale" in p and "lr: stored 0.1, now 0.006" in p for p in problems)

    folder = copy_of("ablation")
    epochs = RECIPES["ablation"]["epochs"]
    monkeypatch.setitem(RECIPES, "ablation", {**RECIPES["ablation"], "epochs": epochs + 1})
    message = f"epochs: stored {epochs}, now {epochs + 1}"
    assert any("stale" in p and message in p for p in _check("ablation", folder))


def test_retraining_the_first_epoch_matches_the_stored_history(capsys):
    """Bit for bit where the kernels (the machine's fingerprint) and torch version are the
    provenance's, within the stated tolerance elsewhere; it says which."""
    record = json.loads((results.store("ablation") / "provenance.json").read_text())
    assert results.retrain_first_epoch(results.store("ablation")) == []
    said = capsys.readouterr().out
    assert ("bit-exact" in said) == provenance.same_kernels(record)[0]


def test_a_machine_with_the_same_model_name_but_other_flags_retrains_within_the_tolerance(
    capsys, monkeypatch
):
    record = json.loads((results.store("ablation") / "provenance.json").read_text())
    other = {**record["machine"], "isa": ["avx512f", "avx2"]}  # as stored, but no AMX or BF16
    monkeypatch.setattr(machine, "fingerprint", lambda device="cpu": other)
    same, why = provenance.same_kernels(record)
    assert not same and why.startswith("same model name, other instruction sets")
    assert results.retrain_first_epoch(results.store("ablation")) == []
    said = capsys.readouterr().out
    assert "matches, within" in said and "same model name, other instruction sets" in said


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
