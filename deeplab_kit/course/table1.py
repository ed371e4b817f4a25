"""The report's Table 1, worked through: our models' scores beside the report's (quoted), the
bound that shows its numbers cannot come from one confusion matrix, and micro against macro
averaging in numbers (why precision near 0.99 sits beside mIoU near 55%).

    table1({"mine": confusion})      # the report's rows, our models beside the quoted columns
    table1_bound()                   # what the quoted columns would need of VOC val
    explain_micro_macro(confusion)   # every averaging of one confusion matrix, side by side
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from deeplab_kit.course.quoted_numbers import QUOTED_MIOU, REPORT_TABLE1
from deeplab_kit.metrics import (
    TABLE1_ROWS,
    ConfusionMatrix,
    class_names,
    class_stats,
    report_table,
    safe_div,
)


def table1(models: Mapping, protocols: Mapping[str, str] | None = None) -> pd.DataFrame:
    """The report's Table 1 for `models` ({name: ConfusionMatrix or scores}), beside the
    report's own numbers and the paper's mIoU, both as columns marked "(quoted)". Precision,
    recall and F1 are weighted averages (recall is then pixel accuracy; the report's own
    averaging is unstated, and `table1_bound` shows that no averaging of one confusion matrix
    gives its numbers); the paper reports no precision, recall or F1. `protocols` ({name:
    "original" or "resized"}) adds each measured column's protocol to its name; the quoted
    columns say theirs (the report's is unstated, most likely resized 256 x 256 masks; the
    paper's is original)."""
    table = report_table(models)
    names = {name: f"{name} [{protocol}]" for name, protocol in (protocols or {}).items()}
    for name, values in REPORT_TABLE1.items():
        table[f"{name} (quoted)"] = [values[row] for row in TABLE1_ROWS]
        names[f"{name} (quoted)"] = f"{name} (quoted) [report: unstated, likely resized]"
    paper = QUOTED_MIOU.loc[QUOTED_MIOU["source"] == "paper", "mIoU (%)"].item()
    table["paper ResNet-101 (quoted)"] = [np.nan, np.nan, np.nan, paper]
    names["paper ResNet-101 (quoted)"] = "paper ResNet-101 (quoted) [original]"
    return table.rename(columns=names)


def table1_bound(num_classes: int = 21) -> pd.DataFrame:
    """What the report's Table 1 would need of VOC val if its numbers came from one confusion
    matrix: taking its recall as pixel accuracy (weighted recall is; micro recall too), the
    pixel error E = 1 - recall, and `miou_loss_bound` read backwards, the largest share
    of the pixels any class could have for its mIoU: m <= 2 E / (C (1 - mIoU))."""
    rows = []
    for name, values in REPORT_TABLE1.items():
        error = 1.0 - values["Recall"]
        loss = 1.0 - values["mIoU"] / 100.0
        rows.append(
            {
                "model": f"{name} (quoted)",
                "recall = pixel accuracy": values["Recall"],
                "pixel error E": error,
                "mIoU (%)": values["mIoU"],
                "largest smallest-class share (%)": 100.0 * 2.0 * error / (num_classes * loss),
            }
        )
    return pd.DataFrame(rows).set_index("model")


def miou_loss_bound(pixel_error: float, smallest_share: float, num_classes: int) -> float:
    """The most mIoU can fall short of 1 given the pixel error rate E of one confusion matrix
    and the smallest class's share m of the pixels: 1 - mIoU <= 2 E / (C m).

    Per class, 1 - IoU = (FP + FN) / (TP + FP + FN) <= (FP + FN) / (true pixels of the class),
    and every wrong pixel is one FN (of its true class) and one FP (of the predicted one), so
    the FP + FN summed over classes is 2 E N; dividing each class by at least m N and averaging
    over the C classes gives the bound. Read backwards: a reported pixel accuracy and mIoU need
    every class to cover at most m <= 2 E / (C (1 - mIoU)) of the pixels."""
    if not 0 < smallest_share <= 1 or num_classes < 1:
        raise ValueError("smallest_share must be in (0, 1] and num_classes at least 1")
    return min(1.0, 2.0 * pixel_error / (num_classes * smallest_share))


# What each averaging of one confusion matrix shows: (quantity, its score's key, why).
AVERAGING_ROWS = (
    ("pixel accuracy", "pixel_accuracy", "correct pixels / scored pixels"),
    (
        "precision (micro)",
        "precision_micro",
        "pooled: every pixel is one prediction, so pixel accuracy",
    ),
    ("recall (micro)", "recall_micro", "equally pixel accuracy"),
    ("F1 (micro)", "f1_micro", "equally pixel accuracy"),
    ("precision (weighted)", "precision_weighted", "weighted by true pixels: big classes dominate"),
    ("recall (weighted)", "recall_weighted", "weighted recall is pixel accuracy"),
    ("F1 (weighted)", "f1_weighted", "can lie below both weighted P and R"),
    ("precision (macro)", "precision_macro", "each present class counts once"),
    ("recall (macro)", "recall_macro", "each present class counts once"),
    ("F1 (macro)", "f1_macro", "each present class counts once"),
)


def explain_micro_macro(cm: ConfusionMatrix, background: int = 0) -> pd.DataFrame:
    """Why precision near 0.99 and mIoU near 55% can describe the same predictions, in numbers.

    One row per quantity, with its value in % ("value (%)") and what it shows: micro precision equals pixel
    accuracy; what each averaging gives for precision, recall and F1; background's share of
    the pixels; background IoU against the mean IoU over the object classes.
    """
    scores = cm.compute()
    stats = class_stats(cm.matrix.cpu().double(), cm.out_of_range_predictions.cpu().double())
    objects = (stats["tp"] + stats["fp"] + stats["fn"]) > 0
    objects[background] = False
    iou, name = stats["iou"], class_names(cm.num_classes)[background]
    rows = [(label, scores[key], why) for label, key, why in AVERAGING_ROWS]
    floor = scores["precision_macro"] + scores["recall_macro"] - 1
    share = float(safe_div(stats["support"][background], stats["support"].sum()))
    objects_iou = float(iou[objects].mean()) if objects.any() else 0.0
    rows += [
        ("P + R - 1 (macro)", floor, "a floor under mIoU (per class, IoU >= P + R - 1)"),
        (f"{name} share of pixels", share, "the class that micro and weighted scores measure"),
        (f"{name} IoU", float(iou[background]), "usually the best class"),
        ("mean IoU over object classes", objects_iou, f"present classes other than {name}"),
        ("mIoU", scores["miou"], f"{name} and each object class count once"),
    ]
    return pd.DataFrame(
        [(100.0 * value, why) for _, value, why in rows],
        columns=["value (%)", "what it shows"],
        index=pd.Index([label for label, _, _ in rows], name="quantity"),
    )
