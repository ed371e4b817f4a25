"""Writing files so that nothing half-written is ever seen: `atomic_write` and its text and
JSON forms, `ensure_writable` (checked before any work), and `plain` (JSON-ready data).

Every file the kit writes goes through `atomic_write` (a temporary file, fsync, rename), so a
reader never sees half a file and a failed write leaves the previous one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Write `path` through `write(file)` so that a reader, a crash or a full disk never leaves
    half a file: a temporary file in the same folder, flushed and fsync'd, renamed over `path`,
    then the folder fsync'd (so the rename itself lasts). On failure the old file stays and an
    OSError names `path` and the reason."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as error:
        # torch's zip writer reports a failed write (a full disk, say) as a RuntimeError
        failed_write = "failed writing" in str(error) or "file write failed" in str(error)
        if isinstance(error, RuntimeError) and not failed_write:
            raise
        raise OSError(f"{path}: could not be written ({_why(error, tmp)})") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _why(error: OSError | RuntimeError, tmp: Path) -> str:
    """Why a write failed, in words; for a full disk (or torch's writer failing, which does not
    say why), how much was written before it stopped and how much room is left there."""
    reason = getattr(error, "strerror", None) or str(error).strip().splitlines()[-1]
    if getattr(error, "errno", None) == errno.ENOSPC or isinstance(error, RuntimeError):
        written = tmp.stat().st_size if tmp.exists() else 0
        free = shutil.disk_usage(tmp.parent).free
        reason += f": {size_text(written)} written before it stopped, {size_text(free)} free there"
    return reason


def size_text(size: int) -> str:
    """A byte count as people read it: "0 B", "12.0 MB", "3.4 GB"."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some systems (Windows); the rename stands
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


def ensure_writable(folder: str | os.PathLike) -> Path:
    """Make sure the kit can write into `folder` before any work is done there: created if
    absent, not a file, writable. Raises an OSError naming the folder and the reason."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder}: is a file, not a folder to write into")
    probe = folder / f".write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(f"{folder}: cannot write there ({error.strerror or error})") from None
    return folder


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def plain(value):
    """Plain JSON data: tensors, arrays and tuples become lists, numpy numbers Python ones,
    NaN null. (This module imports no torch: the torch-free configuration reaches it.)"""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray) or type(value).__name__ == "Tensor":  # torch's, unimported
        return plain(value.tolist())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
