"""The files of a run folder: history.csv, metrics.json and the metrics tables.

    history.csv    one row per epoch: epoch, session, train_loss, val_loss, miou, lr, seconds,
                   epochs (the run's planned length then), arithmetic (precision and layout)
    metrics.json   the last evaluation: every score of ConfusionMatrix.compute() ("miou" in
                   0..1), "confusion_matrix" (C x C counts, rows = truth) and what was scored
    metrics.md / metrics.csv   the report's Table 1 scores; per_class.csv   per-class scores

They are written through `deeplab_kit.files.atomic_write`, so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from deeplab_kit.files import plain, write_text
from deeplab_kit.metrics import ConfusionMatrix, named_scores, per_class_table, report_table

# "epochs" is the run's planned length when the epoch ran (it changes when a run is extended);
# "arithmetic" the precision and memory layout it ran in (deeplab_kit.runtime.arithmetic; "path"
# in histories written before the name). Histories written before a column existed lack it.
HISTORY_COLUMNS = tuple(
    "epoch session train_loss val_loss miou lr seconds epochs arithmetic".split()
)


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
    names = metrics.get("class names")  # a dataset of its own; else VOC's (or numbered)
    write_text(out_dir / "per_class.csv", per_class_table(confusion, names).to_csv())


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
