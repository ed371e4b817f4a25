"""One writer per run folder: a second one refused in one line, a dead holder's lock taken over,
and a run killed with SIGKILL resumed by the same command."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deeplab_kit.runtime import lock as lock_module
from deeplab_kit.runtime.lock import LOCK_NAME, RunFolderBusy, RunLock

ROOT = Path(__file__).resolve().parents[1]


def holder_file(folder: Path, **fields) -> Path:
    record = {"host": socket.gethostname(), "pid": os.getppid(), "started": "then"}
    record = {**record, "refreshed": time.time(), **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps(record))
    return folder / LOCK_NAME


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(RunFolderBusy, match=f"being written by process {os.getpid()} on"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()  # released
    holder_file(tmp_path)  # a live process (this one's parent) holds it
    with pytest.raises(RunFolderBusy, match=f"process {os.getppid()}"):
        RunLock(tmp_path).acquire()


def test_a_dead_holder_s_lock_is_taken_over_with_a_warning(tmp_path):
    command = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(command, capture_output=True, text=True).stdout  # it has ended
    holder_file(tmp_path, pid=int(dead))
    said = f"taking over the lock of process {int(dead)}.*no longer exists"
    with pytest.warns(UserWarning, match=said):
        with RunLock(tmp_path) as lock:
            assert lock.holder()["pid"] == os.getpid()


def test_another_host_s_lock_is_taken_over_only_when_it_went_quiet(tmp_path):
    holder_file(tmp_path, host="another-colab-vm", pid=1, refreshed=time.time())
    with pytest.raises(RunFolderBusy, match="on another-colab-vm"):
        RunLock(tmp_path).acquire()
    old = time.time() - lock_module.STALE_SECONDS - 60
    holder_file(tmp_path, host="another-colab-vm", pid=1, refreshed=old)
    with pytest.warns(UserWarning, match="last refreshed 6 minutes ago"):
        RunLock(tmp_path).acquire().release()


def test_a_holder_that_was_taken_over_stops(tmp_path, monkeypatch):
    mine = RunLock(tmp_path).acquire()
    holder_file(tmp_path, host="another-colab-vm", pid=1)  # someone took the folder over
    with pytest.raises(RunFolderBusy, match="took this run folder over"):
        mine.refresh(force=True)


def train_command(data: Path, out: Path) -> list[str]:
    options = (
        "--recipe demo --epochs 100 --image-size 32 --batch-size 2 --backbone-width 8 "
        "--aspp-channels 8 --device cpu --quiet --amp off --channels-last false"
    ).split()
    return [
        sys.executable,
        "-m",
        "deeplab_kit",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        *options,
    ]


def test_a_second_train_fails_at_once_and_a_killed_run_resumes(synthetic_root, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = subprocess.Popen(train_command(synthetic_root, out), cwd=ROOT, env=env, **quiet)
    try:
        deadline = time.monotonic() + 60
        while not list((out / "checkpoints").glob("epoch-*.pt")):  # it is training
            assert time.monotonic() < deadline and first.poll() is None
            time.sleep(0.2)
        # At once: before any work. Given data that do not exist, the second would fail on them
        # if it read them first; it fails on the lock instead.
        command = train_command(tmp_path / "no-data-here", out)
        second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"is being written by process {first.pid}" in lines[0]
        assert first.poll() is None  # still training when the second was refused
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    command = train_command(synthetic_root, out)
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "taking over the lock" in again.stderr
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 100 and not (out / LOCK_NAME).exists()
