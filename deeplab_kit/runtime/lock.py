"""One writer per run folder: a lock file that names its holder and is refreshed while it works.

    with RunLock("runs/report"):      # a second process on the same folder fails at once
        ...                           # lock.refresh() now and then (cheap: it writes at most
                                      # every REFRESH_SECONDS)

A cell run twice, or two Colab tabs training into one Drive folder, would interleave their
checkpoints and histories. The lock file (`.lock` in the run folder) holds the holder's host,
process id, start time and last refresh. A second writer is refused in one line naming the
holder. A lock whose holder is gone is taken over with a warning, so that a killed run resumes
with the same command: on the same host, when its process no longer exists; from another host
(another Colab VM on the same Drive folder), when it has not been refreshed for
`STALE_SECONDS`.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from deeplab_kit.files import write_json

LOCK_NAME = ".lock"
REFRESH_SECONDS = 30.0
STALE_SECONDS = 300.0  # five minutes without a refresh: the holder (on another host) is gone


class RunFolderBusy(RuntimeError):
    """Another process is writing this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    """The lock of one run folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.held = False
        self.refreshed = 0.0
        self.me = {"host": socket.gethostname(), "pid": os.getpid()}

    def holder(self) -> dict | None:
        """The lock file's contents (None when there is none; {} when it cannot be read)."""
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}

    def stale(self, holder: dict) -> str | None:
        """Why `holder` no longer holds the folder, or None while it does."""
        if not holder:
            return "the lock file cannot be read"
        age = time.time() - float(holder.get("refreshed", 0))
        if holder.get("host") == self.me["host"] and not _alive(int(holder.get("pid", -1))):
            return f"its process {holder.get('pid')} no longer exists"
        if age > STALE_SECONDS:
            return f"it was last refreshed {age / 60:.0f} minutes ago"
        return None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunFolderBusy naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        stamp = datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds")
        record = {**self.me, "started": stamp, "refreshed": started}
        try:
            with os.fdopen(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY), "w") as file:
                json.dump(record, file)
        except FileExistsError:
            holder = self.holder()
            if holder is None:  # released in between
                return self.acquire()
            why = self.stale(holder)
            if why is None:
                raise RunFolderBusy(
                    f"{self.path.parent} is being written by process {holder.get('pid')} on "
                    f"{holder.get('host')} (since {holder.get('started')}); wait for it to end "
                    "or stop it, or use another --out"
                ) from None
            warnings.warn(
                f"{self.path.parent}: taking over the lock of process {holder.get('pid')} on "
                f"{holder.get('host')}: {why}",
                stacklevel=2,
            )
            write_json(self.path, record)
        self.held, self.refreshed = True, started
        return self

    def refresh(self, *, force: bool = False) -> None:
        """Tell other hosts the holder is alive (at most every REFRESH_SECONDS)."""
        now = time.time()
        if not self.held or (not force and now - self.refreshed < REFRESH_SECONDS):
            return
        holder = self.holder() or {}
        if holder.get("host") != self.me["host"] or holder.get("pid") != self.me["pid"]:
            self.held = False
            raise RunFolderBusy(
                f"{self.path.parent}: process {holder.get('pid')} on {holder.get('host')} took "
                "this run folder over; stopping so that the two do not interleave"
            )
        write_json(self.path, {**holder, "refreshed": now})
        self.refreshed = now

    def release(self) -> None:
        if self.held:
            holder = self.holder() or {}
            if holder.get("pid") == self.me["pid"] and holder.get("host") == self.me["host"]:
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
