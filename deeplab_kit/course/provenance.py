"""Where and how a result was made, written by code: the command, the code's git commit (and
whether the tree was clean), the machine, the library versions and the time it took.

    record = provenance.start("python -m deeplab_kit results make ablation")
    ...                                   # the work
    provenance.finish(record)             # adds ended and seconds
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from deeplab_kit.runtime import fingerprint


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def command_line() -> str:
    """How this process was started, as a user would type it."""
    return "python -m deeplab_kit " + shlex.join(sys.argv[1:])


# Stored results are made one after another, each replacing its own folder here: they are
# not the code that makes them, so they do not make a tree unclean.
NOT_CODE = "notebooks/results"


def git_state(folder: str | os.PathLike | None = None) -> tuple[str | None, bool | None]:
    """(commit, clean) of the repository holding `folder` (default: this package's); clean
    means no tracked file differs from the commit, stored results (`NOT_CODE`) aside.
    (None, None) outside a git checkout."""
    folder = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout.strip()
        top = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changes = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                f":(exclude){NOT_CODE}",
            ],
            cwd=top,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, not changes


def versions() -> dict:
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


def start(command: str | None = None, device: torch.device | str = "cpu") -> dict:
    """A provenance record for work that starts now."""
    commit, clean = git_state()
    return {
        "command": command or command_line(),
        "commit": commit,
        "clean": clean,
        "machine": fingerprint.of_machine(device),
        **versions(),
        "python": platform.python_version(),
        "started": now(),
        "_monotonic": time.monotonic(),
    }


def finish(record: dict, earlier_seconds: float = 0.0) -> dict:
    """The record completed: ended, and the wall seconds of this session plus `earlier_seconds`
    (the sessions a resumed piece of work took before)."""
    record = dict(record)
    elapsed = time.monotonic() - record.pop("_monotonic")
    record["ended"] = now()
    record["seconds"] = round(earlier_seconds + elapsed, 1)
    return record


def same_kernels(record: dict) -> tuple[bool, str]:
    """Whether this machine computes as the one a record was made on, bit for bit: the same
    kernel-selecting fingerprint (`fingerprint.same_kernels`) and the same torch version; and why."""
    same, why = fingerprint.same_kernels(record.get("machine", {}), fingerprint.of_machine())
    if same and record.get("torch") != torch.__version__:
        return False, f"{why}, but torch {torch.__version__} here, {record.get('torch')} stored"
    return same, why + (f", torch {torch.__version__}" if same else "")


def describe(record: dict) -> str:
    """A stored result's provenance in a few lines, as the notebooks print it."""
    commit = (record.get("commit") or "unknown")[:10]
    state = "" if record.get("clean", True) else " (with uncommitted changes)"
    sessions = record.get("sessions", 1)
    return "\n".join(
        [
            f"command:  {record.get('command', '?')}",
            f"code:     commit {commit}{state}",
            f"machine:  {fingerprint.describe(record.get('machine', {}))}; torch {record.get('torch', '?')}",
            f"took:     {record.get('seconds', 0) / 60:.0f} min"
            + (f" in {sessions} sessions" if sessions > 1 else "")
            + f", finished {record.get('ended', '?')}",
        ]
    )
