"""The files of a run folder: history.csv, metrics.json and the metrics tables.

    history.csv    one row per epoch: epoch, session, train_loss, val_loss, miou, lr, seconds
    metrics.json   the last evaluation: every score of ConfusionMatrix.compute() ("miou" in
                   0..1), "confusion_matrix" (C x C counts, rows = truth) and what was scored
    metrics.md / metrics.csv   the report's Table 1 scores; per_class.csv   per-class scores

Each file is written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

from deeplab_kit.metrics import ConfusionMatrix, named_scores, per_class_table, report_table

HISTORY_COLUMNS = ("epoch", "session", "train_loss", "val_loss", "miou", "lr", "seconds")


def write_history(path: Path, history: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows({k: row[k] for k in HISTORY_COLUMNS} for row in history)
    os.replace(tmp, path)


def metrics_dict(confusion: ConfusionMatrix, **extra) -> dict:
    """What metrics.json holds: every score ("miou" in 0..1), the confusion matrix, `extra`."""
    matrix = confusion.matrix.cpu().tolist()
    return plain({**named_scores(confusion.compute()), "confusion_matrix": matrix, **extra})


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def read_confusion(metrics: dict) -> ConfusionMatrix:
    """The ConfusionMatrix of a metrics.json dict."""
    return ConfusionMatrix.from_matrix(torch.tensor(metrics["confusion_matrix"], dtype=torch.int64))


def write_tables(out_dir: Path, confusion: ConfusionMatrix, name: str = "model") -> None:
    """The report's Table 1 scores as metrics.md and metrics.csv; per-class scores as per_class.csv."""
    summary = report_table({name: confusion})
    summary.to_csv(out_dir / "metrics.csv")
    (out_dir / "metrics.md").write_text(markdown_table(summary))
    per_class_table(confusion).to_csv(out_dir / "per_class.csv")


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
