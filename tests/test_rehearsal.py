"""The student's path, rehearsed end to end: every notebook in the rehearsal profile (the full
profile's code on any device), in a stand-in for Colab (tests/colab_standin: Drive, the widget
manager, uploads), its data a VOC tar on the stand-in Drive holding a tree as small as a
rehearsal tree gets: 3 training and 13 validation images at VOC's own sizes, VOC's list files
(and two more lists, as real VOC trees often carry), no SBD."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from deeplab_kit.course.colab import NOTEBOOKS
from deeplab_kit.data.synthetic import make_voc_like_tree

ROOT = Path(__file__).resolve().parents[1]
STANDIN = Path(__file__).resolve().parent / "colab_standin"

pytestmark = pytest.mark.rehearsal


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """A Colab VM: its /content (Drive mounted under it by the first cell), the VOC tar on Drive, and the
    kernel's environment (google.colab imported at start, as Colab's kernels have it)."""
    root = tmp_path_factory.mktemp("content")
    tree = make_voc_like_tree(root / "tree", {"train": 3, "val": 13})
    lists = tree / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    val = (lists / "val.txt").read_text().split()
    (lists / "train_official.txt").write_text((lists / "train.txt").read_text())
    (lists / "val_official.txt").write_text("\n".join(val[:10]) + "\n")
    drive = root / "cloud" / "MyDrive"  # Drive's files, on the VM only once mounted
    drive.mkdir(parents=True)
    with tarfile.open(drive / "VOCtrainval_11-May-2012.tar", "w") as archive:
        archive.add(tree / "VOCdevkit", arcname="VOCdevkit")
    startup = root / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text("import google.colab  # as in every Colab kernel\n")
    env = {
        "DEEPLAB_KIT_COLAB_ROOT": str(root),
        "DEEPLAB_KIT_HOME": str(root / "home"),
        "IPYTHONDIR": str(root / "ipython"),
        "PYTHONPATH": os.pathsep.join([str(STANDIN), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MPLBACKEND": "Agg",
        "DEEPLAB_KIT_PROFILE": "quick",  # the form's value must win over it
    }
    (root / "home").mkdir()
    return root, env


def as_the_form_says(notebook, **values) -> None:
    """Set the first cell's Colab form fields, as a student does before running it."""
    cell = next(c for c in notebook.cells if c.cell_type == "code")
    for name, value in values.items():
        lines = cell.source.splitlines()
        lines = [f"{name} = {value!r}" if x.startswith(f"{name} =") else x for x in lines]
        cell.source = "\n".join(lines)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_every_notebook_runs_end_to_end_in_a_colab_rehearsal(name, colab, monkeypatch):
    root, env = colab
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    as_the_form_says(
        notebook, PROFILE="rehearsal", VOC_ON_DRIVE="MyDrive/VOCtrainval_11-May-2012.tar"
    )
    where = {"metadata": {"path": env["DEEPLAB_KIT_HOME"]}}
    client = NotebookClient(notebook, timeout=600, kernel_name="python3", resources=where)
    client.execute()  # a cell that raises fails the test with its traceback
    calls = (root / "colab-calls.txt").read_text().splitlines()
    assert "output.enable_custom_widget_manager" in calls and "drive.mount drive" in calls
    assert (root / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()  # on the VM's disk
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    shown = "".join(o.get("text", "") for o in outputs)
    if name == "05_training_sessions.ipynb":  # the session ends with Drive flushed
        assert "drive.flush_and_unmount" in calls and "Google Drive flushed" in shown
    if name == "01_data.ipynb":
        assert "profile rehearsal" in shown  # the form, not the environment, set the profile
        assert "SBD" in shown  # the missing SBD is said, and the notebook goes on


def test_a_rehearsal_keeps_its_run_folders_on_drive(colab):
    root, _ = colab
    runs = root / "drive" / "MyDrive" / "deeplab-kit" / "runs" / "rehearsal"
    if not runs.is_dir():
        pytest.skip("runs when the notebooks' rehearsal ran first in this session")
    report = runs / "report"
    assert (report / "checkpoints").is_dir() and (report / "history.csv").is_file()
    history = report / "history.csv"
    sessions = [line.split(",")[1] for line in history.read_text().splitlines()[1:]]
    assert sessions == ["1", "2"]  # two sessions of one epoch: resuming ran too
    assert json.loads((report / "metrics.json").read_text())["split"] == "val"
