"""The files of a run folder: history.csv, metrics.json and the metrics tables.

    history.csv    one row per epoch: epoch, session, train_loss, val_loss, miou, lr, seconds,
                   epochs (the run's planned length then)
    metrics.json   the last evaluation: every score of ConfusionMatrix.compute() ("miou" in
                   0..1), "confusion_matrix" (C x C counts, rows = truth) and what was scored
    metrics.md / metrics.csv   the report's Table 1 scores; per_class.csv   per-class scores

Every file the kit writes goes through `atomic_write` (a temporary file, fsync, rename), so a
reader never sees half a file and a failed write leaves the previous one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np
import torch

from deeplab_kit.metrics import ConfusionMatrix, named_scores, per_class_table, report_table

# "epochs" is the run's planned length when the epoch ran (it changes when a run is extended);
# histories written before it existed lack it.
HISTORY_COLUMNS = (
    "epoch", "session", "train_loss", "val_loss", "miou", "lr", "seconds", "epochs",
)  # fmt: skip


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
    except OSError as error:
        raise OSError(f"{path}: could not be written ({error.strerror or error})") from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # folders cannot be opened on some systems (Windows); the rename stands
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
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


def write_history(path: Path, history: list[dict]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    write_text(path, text.getvalue())


def metrics_dict(confusion: ConfusionMatrix, **extra) -> dict:
    """What metrics.json holds: every score ("miou" in 0..1), the confusion matrix, `extra`."""
    matrix = confusion.matrix.cpu().tolist()
    return plain({**named_scores(confusion.compute()), "confusion_matrix": matrix, **extra})


def write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_confusion(metrics: dict) -> ConfusionMatrix:
    """The ConfusionMatrix of a metrics.json dict."""
    return ConfusionMatrix.from_matrix(torch.tensor(metrics["confusion_matrix"], dtype=torch.int64))


def write_tables(out_dir: Path, metrics: dict, name: str = "model") -> None:
    """A metrics.json dict's Table 1 scores as metrics.md (headed by how they were scored) and
    metrics.csv; its per-class scores as per_class.csv."""
    confusion = read_confusion(metrics)
    summary = report_table({name: confusion})
    write_text(out_dir / "metrics.csv", summary.to_csv())
    write_text(out_dir / "metrics.md", scored_line(metrics) + "\n\n" + markdown_table(summary))
    write_text(out_dir / "per_class.csv", per_class_table(confusion).to_csv())


def scored_line(metrics: dict) -> str:
    """How a metrics.json's scores were made, in one line."""
    how = [f"{key.replace('_', ' ')} {metrics[key]}" for key in SCORED_AS if key in metrics]
    return "Scored on " + (metrics.get("split") or "?") + ": " + (", ".join(how) or "as recorded")


SCORED_AS = ("protocol", "output_stride", "scales", "flip", "batch_size")


def markdown_table(frame) -> str:
    """A pandas DataFrame as a Markdown table (pandas' to_markdown needs the tabulate package)."""

    def cell(value) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index)] + [cell(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def read_metrics(out_dir: Path) -> dict | None:
    path = out_dir / "metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def plain(value):
    """Plain JSON data: tensors, arrays and tuples become lists, numpy numbers Python ones,
    NaN null."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (torch.Tensor, np.ndarray)):
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
