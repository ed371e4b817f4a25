"""Where and how a result was made, written by code: the command, the code's git commit (and
whether the tree was clean) when each session of the work started and when it ended, the
machine, the library versions and the time it took.

    session = provenance.start("python -m deeplab_kit results make ablation")
    ...                                   # the work
    session = provenance.finish(session)  # adds ended, seconds, and the code at the end
    record = provenance.combine([earlier, session])   # one record over a make's sessions
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
        commit = _git(folder, "rev-parse", "HEAD")
        top = _git(folder, "rev-parse", "--show-toplevel")
        changes = _git(
            top, "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){NOT_CODE}"
        )
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, not changes


def _git(folder: str | os.PathLike, *args: str) -> str:
    run = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, check=True)
    return run.stdout.strip()


def versions() -> dict:
    import numpy
    import PIL
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def start(command: str | None = None, device: torch.device | str = "cpu") -> dict:
    """A session's provenance record, for work that starts now."""
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


def finish(session: dict) -> dict:
    """The session's record completed: ended, its wall seconds, and the code at its end (a
    commit that landed while it ran shows as another commit there)."""
    session = dict(session)
    elapsed = time.monotonic() - session.pop("_monotonic")
    commit, clean = git_state()
    session.update(ended=now(), seconds=round(elapsed, 1), commit_at_end=commit, clean_at_end=clean)
    return session


def same_code(first: dict, session: dict) -> bool:
    """Whether a session runs the code the first session of its work ran: the same commit, and
    both trees clean."""
    return first.get("commit") == session.get("commit") and bool(
        first.get("clean") and session.get("clean")
    )


def combine(sessions: list[dict]) -> dict:
    """One record over the finished sessions of a piece of work: the first session's command,
    code, machine and versions; started at the first, ended at the last, the seconds summed;
    clean only when every session started and ended clean on one commit; each session's own
    times, code and machine kind under "sessions"."""
    first, last = sessions[0], sessions[-1]
    commits = {s.get(k) for s in sessions for k in ("commit", "commit_at_end")}
    clean = all(s.get("clean") and s.get("clean_at_end") for s in sessions) and len(commits) == 1
    kept = ("command", "commit", "machine", "torch", "torchvision", "numpy", "pillow", "python")
    return {
        **{key: first.get(key) for key in kept},
        "clean": clean,
        "started": first["started"],
        "ended": last["ended"],
        "seconds": round(sum(s["seconds"] for s in sessions), 1),
        "sessions": [
            {
                **{key: s[key] for key in ("started", "ended", "seconds")},
                **{key: s.get(key) for key in ("commit", "clean")},
                "commit at end": s.get("commit_at_end"),
                "clean at end": s.get("clean_at_end"),
                "machine": fingerprint.kind_of(s.get("machine", {})),
            }
            for s in sessions
        ],
    }


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
    sessions = record.get("sessions") or [record]
    sessions = len(sessions) if isinstance(sessions, list) else sessions
    lines = [
        f"command:  {record.get('command', '?')}",
        f"code:     commit {commit}{state}",
        f"machine:  {fingerprint.describe(record.get('machine', {}))}; torch {record.get('torch', '?')}",
        f"took:     {record.get('seconds', 0) / 60:.0f} min"
        + (f" in {sessions} sessions" if sessions > 1 else "")
        + f", finished {record.get('ended', '?')}",
    ]
    return "\n".join(lines)
