"""The confusion matrix and every score derived from it: mIoU, pixel accuracy, precision, recall, F1.

Everything a segmentation benchmark reports is a function of one (C, C) table of pixel counts,
rows = true class, columns = predicted class. `ConfusionMatrix` accumulates it batch by batch on
the tensors' own device; `compute()` turns it into scores.

Averaging conventions (they decide the numbers, so they are spelled out):
- per class c: TP = M[c, c], FP = column sum - TP, FN = row sum - TP (the "support" is the row sum);
  precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN),
  IoU = TP / (TP + FP + FN). A class absent from both truth and prediction (TP + FP + FN = 0)
  gets NaN for every per-class score (it says nothing about the model); any other 0/0 is 0.
- macro: the plain mean over the classes that occur in the truth or the prediction (TP + FP + FN > 0);
  a class absent from both says nothing about the model and is left out. mIoU is the macro IoU.
  (`mean_accuracy`, FCN's "mean accuracy", averages recall over the classes present in the truth.)
- micro: pool TP, FP, FN over classes first. Every valid pixel is one prediction and one truth, so
  micro precision = micro recall = micro F1 = pixel accuracy: dominated by the commonest class.
- weighted: per-class scores averaged with weights = support (scikit-learn's "weighted").
  Weighted recall is pixel accuracy again.

VOC's background covers about 70% of the pixels, so micro and weighted scores sit near the
background's own score (high), while mIoU weighs the 20 object classes equally with it. That is how
the report's Table 1 shows 0.99 precision beside 55% mIoU (`deeplab_kit.course.table1` works it
through).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import pandas as pd
import torch
import torch.distributed as dist

from deeplab_kit.data.classes import IGNORE_INDEX, VOC_CLASSES


class ConfusionMatrix:
    """Pixel counts of (true class, predicted class) pairs, accumulated over batches.

    `update` adds one batch with a single `index_add_` (no boolean masking, no `bincount`, whose
    CUDA version reads the maximum back to the host), so it never waits on the GPU.

    Labels outside the classes go to side bins instead of corrupting real cells: each target
    value and prediction is clamped into a few extra rows and columns of a slightly larger table.
    - target == ignore_index: not scored (VOC's void borders, padding).
    - other targets outside 0..C-1: bad masks. `compute()` raises a ValueError naming the values;
      on the CPU, `update` raises at once (on CUDA the check waits for `compute()`, to stay sync-free).
    - predictions outside 0..C-1: counted as misses of the pixel's true class (a false negative,
      no false positive anywhere); `compute()` warns; `out_of_range_predictions` has the counts.
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int | None = IGNORE_INDEX,
        *,
        device: torch.device | str | None = None,
    ):
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        # Target values are clamped into [lo, hi]: lo and hi are side rows for anything below or
        # above, and ignore_index keeps a row of its own. Predictions are clamped into [-1, C].
        ignore = 0 if ignore_index is None else ignore_index
        self._lo = min(0, ignore) - 1
        self._hi = max(num_classes, ignore + 1)
        self._cols = num_classes + 2  # predictions -1 (below), 0..C-1, C (above)
        self._rows = self._hi - self._lo + 1
        self._counts = torch.zeros(
            self._rows, self._cols, dtype=torch.int64, device=torch.device(device or "cpu")
        )  # (rows, cols): row = target - lo, column = prediction + 1

    @classmethod
    def from_matrix(
        cls, matrix: torch.Tensor, ignore_index: int | None = IGNORE_INDEX
    ) -> ConfusionMatrix:
        """A ConfusionMatrix holding the given (C, C) counts (rows = truth)."""
        matrix = torch.as_tensor(matrix)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square (C, C) matrix, got shape {tuple(matrix.shape)}")
        if matrix.is_floating_point() or (matrix < 0).any():
            raise ValueError("a confusion matrix holds non-negative integer counts")
        cm = cls(matrix.shape[0], ignore_index, device=matrix.device)
        cm._class_block().copy_(matrix)
        return cm

    @property
    def device(self) -> torch.device:
        return self._counts.device

    def _class_block(self) -> torch.Tensor:
        """The (C, C) view of the table for real classes (a view: writes go through)."""
        c = self.num_classes
        return self._counts[-self._lo : -self._lo + c, 1 : c + 1]

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Add a batch: `pred` holds class labels (e.g. logits.argmax(1)), `target` the truth.

        Any matching shapes, any integer dtypes, both on one device (the counts follow them there).
        """
        if pred.shape != target.shape:
            hint = ""
            if pred.ndim == target.ndim + 1:
                hint = "; pred looks like scores (N, C, H, W): pass scores.argmax(1)"
            raise ValueError(
                f"pred and target must have the same shape, got {tuple(pred.shape)} "
                f"and {tuple(target.shape)}{hint}"
            )
        for name, t in (("pred", pred), ("target", target)):
            if t.is_floating_point() or t.is_complex():
                raise TypeError(f"{name} must hold integer class labels, got dtype {t.dtype}")
        if pred.device != target.device:
            raise ValueError(f"pred is on {pred.device} but target on {target.device}")
        if self._counts.device != pred.device:
            self._counts = self._counts.to(pred.device)

        # One flat bin per (target code, prediction code) pair: (t - lo) * cols + (p + 1).
        index = pred.to(torch.int64).clamp(-1, self.num_classes)
        index.add_(target.to(torch.int64).clamp(self._lo, self._hi), alpha=self._cols)
        index.add_(1 - self._lo * self._cols)
        ones = torch.ones((), dtype=torch.int64, device=index.device).expand(index.numel())
        batch = torch.zeros_like(self._counts).view(-1)
        batch.index_add_(0, index.view(-1), ones)
        batch = batch.view(self._rows, self._cols)
        if batch.device.type == "cpu":  # free here; on CUDA it would stall the stream
            self._check_targets(batch)
        self._counts += batch
        return self

    def reset(self) -> ConfusionMatrix:
        self._counts.zero_()
        return self

    @property
    def matrix(self) -> torch.Tensor:
        """(C, C) int64 counts on the accumulating device; rows = truth, columns = prediction."""
        m = self._class_block().clone()
        if self.ignore_index is not None and 0 <= self.ignore_index < self.num_classes:
            m[self.ignore_index] = 0  # an ignored class is never scored
        return m

    @property
    def out_of_range_predictions(self) -> torch.Tensor:
        """(C,) int64: per true class, pixels whose prediction was outside 0..C-1."""
        c = self.num_classes
        rows = self._counts[-self._lo : -self._lo + c]
        counts = rows[:, 0] + rows[:, c + 1]
        if self.ignore_index is not None and 0 <= self.ignore_index < c:
            counts[self.ignore_index] = 0
        return counts

    def _check_targets(self, counts: torch.Tensor) -> None:
        """Raise if any scored target value lies outside 0..C-1."""
        per_row = counts.sum(1).cpu()  # pixels per clamped target value
        bad_values, bad_pixels = [], 0
        for row in per_row.nonzero().flatten().tolist():
            value = row + self._lo
            if 0 <= value < self.num_classes or value == self.ignore_index:
                continue
            bad_pixels += int(per_row[row])
            side = "<= " if row == 0 else ">= " if row == self._rows - 1 else ""  # the side rows
            bad_values.append(f"{side}{value}")
        if bad_values:
            raise ValueError(
                f"target holds {bad_pixels} pixels with labels outside 0..{self.num_classes - 1} "
                f"that are not ignore_index={self.ignore_index}: {', '.join(bad_values)}; "
                "check the masks and num_classes"
            )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts into this one (in place); returns self."""
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise ValueError(
                f"cannot merge a matrix for {other.num_classes} classes (ignore_index="
                f"{other.ignore_index}) into one for {self.num_classes} (ignore_index="
                f"{self.ignore_index})"
            )
        self._counts += other._counts.to(self._counts.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        if not isinstance(other, ConfusionMatrix):
            return NotImplemented
        total = ConfusionMatrix(self.num_classes, self.ignore_index, device=self.device)
        return total.merge(self).merge(other)

    def all_reduce(self) -> ConfusionMatrix:
        """Sum the counts over all DDP processes (in place); a no-op when not distributed.

        The counts must live where the process group's backend works (CPU for gloo, CUDA for NCCL).
        """
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self._counts, op=dist.ReduceOp.SUM)
        return self

    def compute(self) -> dict:
        """All scores as plain Python floats (per-class ones as lists); see the module docstring.

        Keys: pixel_accuracy, mean_accuracy, miou, fw_iou, iou (per class); precision, recall
        and F1 under each averaging, named by it: precision_macro, precision_micro,
        precision_weighted, precision_per_class (and the same for recall_ and f1_); support
        (true pixels per class). Scores lie in 0..1 ("miou" too, not percent).
        `precision`, `recall` and `f1` repeat the macro averages under their short names (the
        kit's public surface); what the kit writes and shows uses the named ones only
        (`named_scores`).
        """
        self._check_targets(self._counts)
        missed = self.out_of_range_predictions.cpu().double()
        if missed.sum() > 0:
            warnings.warn(
                f"{int(missed.sum())} predictions were outside 0..{self.num_classes - 1}; "
                "they count as misses of their true class",
                stacklevel=2,
            )
        scores = _scores(class_stats(self.matrix.cpu().double(), missed))
        scores.update({name: scores[f"{name}_macro"] for name in SHORT_NAMES})
        return scores

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"pixels={int(self.matrix.sum())}, device={self.device})"
        )


# compute()'s short names for the macro averages, kept for the public surface.
SHORT_NAMES = ("precision", "recall", "f1")


def named_scores(scores: Mapping) -> dict:
    """`compute()`'s scores without the short aliases: every average named by its convention."""
    return {key: value for key, value in scores.items() if key not in SHORT_NAMES}


def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """num / den with 0/0 (and x/0) read as 0."""
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), 0.0)


def class_stats(matrix: torch.Tensor, missed: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class counts and scores from a float64 (C, C) matrix and (C,) out-of-range misses."""
    tp = matrix.diagonal()
    predicted = matrix.sum(0)
    support = matrix.sum(1) + missed  # every scored pixel of the class, however it was predicted
    fp, fn = predicted - tp, support - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "support": support,
        "predicted": predicted,
        "precision": safe_div(tp, tp + fp),
        "recall": safe_div(tp, tp + fn),
        "f1": safe_div(2 * tp, 2 * tp + fp + fn),
        "iou": safe_div(tp, tp + fp + fn),
    }


def _scores(s: dict[str, torch.Tensor]) -> dict:
    """Every score from per-class statistics (`class_stats`), under each averaging."""
    tp, fp, fn, support = s["tp"], s["fp"], s["fn"], s["support"]
    present = (tp + fp + fn) > 0  # a class absent from truth and prediction says nothing
    in_truth, total = support > 0, support.sum()
    TP, FP, FN = tp.sum(), fp.sum(), fn.sum()

    def macro(x: torch.Tensor) -> float:
        return float(x[present].mean()) if present.any() else 0.0

    def weighted(x: torch.Tensor) -> float:
        return float(safe_div((x * support).sum(), total))

    def per_class(x: torch.Tensor) -> list[float]:  # NaN for a class absent from both
        return torch.where(present, x, torch.nan).tolist()

    scores = {
        "pixel_accuracy": float(safe_div(TP, total)),
        "mean_accuracy": float(s["recall"][in_truth].mean()) if in_truth.any() else 0.0,
        "miou": macro(s["iou"]),
        "fw_iou": weighted(s["iou"]),
        "iou": per_class(s["iou"]),
    }
    pooled = {"precision": (TP, TP + FP), "recall": (TP, TP + FN), "f1": (2 * TP, 2 * TP + FP + FN)}
    for name, (numerator, denominator) in pooled.items():
        scores[f"{name}_macro"] = macro(s[name])
        scores[f"{name}_per_class"] = per_class(s[name])
        scores[f"{name}_micro"] = float(safe_div(numerator, denominator))
        scores[f"{name}_weighted"] = weighted(s[name])
    scores["support"] = [int(n) for n in support.tolist()]
    return scores


def class_names(num_classes: int) -> list[str]:
    """VOC's names for 21 classes; "class 0", "class 1", ... otherwise."""
    if num_classes == len(VOC_CLASSES):
        return list(VOC_CLASSES)
    return [f"class {i}" for i in range(num_classes)]


def per_class_table(
    cm: ConfusionMatrix, names: list[str] | None = None, *, percent: bool = False
) -> pd.DataFrame:
    """One row per class: IoU, precision, recall, F1 (0..1, or in % with `percent`, the
    columns then named "IoU (%)" and so on; NaN for a class absent from truth and prediction)
    and pixel counts."""
    names = names or class_names(cm.num_classes)
    s = class_stats(cm.matrix.cpu().double(), cm.out_of_range_predictions.cpu().double())
    present = (s["tp"] + s["fp"] + s["fn"]) > 0  # the others get NaN scores
    scores = {"IoU": "iou", "precision": "precision", "recall": "recall", "F1": "f1"}
    table = pd.DataFrame(
        {name: torch.where(present, s[key], torch.nan).numpy() for name, key in scores.items()},
        index=pd.Index(names, name="class"),
    )
    table["support_pixels"] = s["support"].numpy().astype("int64")
    table["predicted_pixels"] = s["predicted"].numpy().astype("int64")
    if percent:
        table[list(scores)] = 100 * table[list(scores)]
        table = table.rename(columns={name: f"{name} (%)" for name in scores})
    return table


TABLE1_ROWS = ("Precision", "Recall", "F1 score", "mIoU")  # as the report labels them
AVERAGES = ("micro", "macro", "weighted")


def report_table(
    models: Mapping[str, ConfusionMatrix | Mapping], *, average: str = "weighted"
) -> pd.DataFrame:
    """The report's Table 1 for our models: rows Precision, Recall, F1 score, mIoU; a column each.

    `models` maps a name to a ConfusionMatrix or to its `compute()` dict. `average` picks the
    precision/recall/F1 convention: "micro", "macro" or "weighted" (scikit-learn's names). The
    report does not say which it used; weighted is the default, as with it recall is pixel
    accuracy, what a pixel-level "recall near 0.99" most likely is (no convention reproduces the
    report's Table 1: see `deeplab_kit.course.table1`). Units as the report prints them (the
    "unit" column): P, R and F1 in 0..1, mIoU in %. Rows name their averaging; mIoU is macro.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    columns = {"unit": ["0..1", "0..1", "0..1", "%"]}
    for name, scores in models.items():
        if isinstance(scores, ConfusionMatrix):
            scores = scores.compute()
        averaged = [scores[f"{score}_{average}"] for score in ("precision", "recall", "f1")]
        columns[name] = [*averaged, 100.0 * scores["miou"]]
    return pd.DataFrame(columns, index=pd.Index(table1_rows(average), name="score"))


def table1_rows(average: str = "weighted") -> list[str]:
    """The report's Table 1 row labels with the averaging named: "Precision (weighted)", ..."""
    return [f"{row} ({average})" for row in TABLE1_ROWS[:3]] + ["mIoU (macro)"]
