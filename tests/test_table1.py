"""The report's Table 1 worked through: quoted columns beside ours, the bound that one confusion
matrix cannot give its numbers, micro against macro."""

import pytest
import torch

from deeplab_kit.course import table1
from deeplab_kit.course.table1 import explain_micro_macro, miou_loss_bound, table1_bound
from deeplab_kit.metrics import ConfusionMatrix


def test_explain_micro_macro_shows_how_background_dominates():
    # 3 object classes predicted poorly, background (class 0) covering 90% of pixels, nearly right
    matrix = torch.tensor(
        [[900, 20, 10, 10], [20, 10, 0, 0], [20, 0, 10, 0], [20, 0, 0, 10]], dtype=torch.long
    )
    cm = ConfusionMatrix.from_matrix(matrix)
    table = explain_micro_macro(cm)["value (%)"] / 100  # every quantity in %, as mIoU is read
    s = cm.compute()
    assert table["precision (micro)"] == pytest.approx(table["pixel accuracy"])
    assert table["pixel accuracy"] == pytest.approx(930 / 1030)
    assert table["class 0 share of pixels"] == pytest.approx(940 / 1030)
    assert table["class 0 IoU"] == pytest.approx(900 / (940 + 960 - 900))
    object_ious = [10 / (30 + 30 - 10), 10 / (30 + 20 - 10), 10 / (30 + 20 - 10)]
    assert table["mean IoU over object classes"] == pytest.approx(sum(object_ious) / 3)
    assert table["mIoU"] == pytest.approx((table["class 0 IoU"] + sum(object_ious)) / 4)
    assert table["precision (micro)"] > 0.9 > 0.5 > table["mIoU"]
    assert table["F1 (macro)"] == pytest.approx(s["f1"])
    assert table["P + R - 1 (macro)"] == pytest.approx(s["precision"] + s["recall"] - 1)
    assert table["mIoU"] >= table["P + R - 1 (macro)"]


def test_the_miou_bound_holds_on_confusion_matrices_built_by_hand():
    """1 - mIoU <= 2 E / (C m): E the pixel error rate, m the smallest class's pixel share."""
    # 100 pixels: 90 background, 6 and 4 object pixels; 2 wrong (background read as objects)
    cm = ConfusionMatrix.from_matrix(torch.tensor([[88, 1, 1], [0, 6, 0], [0, 0, 4]]))
    s = cm.compute()
    assert s["pixel_accuracy"] == pytest.approx(0.98)
    bound = miou_loss_bound(0.02, 0.04, 3)
    assert bound == pytest.approx(2 * 0.02 / (3 * 0.04))
    assert 1 - s["miou"] <= bound
    # the worst case: every wrong pixel taken from the smallest class, a wrong label of its own
    worst = ConfusionMatrix.from_matrix(torch.tensor([[90, 0, 0], [0, 6, 0], [0, 2, 2]]))
    assert 1 - worst.compute()["miou"] <= miou_loss_bound(0.02, 0.04, 3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        matrix = torch.randint(0, 50, (5, 5), generator=generator)
        matrix += torch.diag(torch.randint(1, 2000, (5,), generator=generator))
        cm = ConfusionMatrix.from_matrix(matrix)
        total = matrix.sum().item()
        error = 1 - matrix.diag().sum().item() / total
        smallest = matrix.sum(1).min().item() / total
        assert 1 - cm.compute()["miou"] <= miou_loss_bound(error, smallest, 5) + 1e-12


def test_the_report_s_table1_cannot_come_from_one_confusion_matrix_of_voc():

    bound = table1_bound()
    share = bound["largest smallest-class share (%)"]
    # Pretrained: recall 0.99873 and mIoU 64.6% need every class below 0.034% of the pixels
    assert share["Pretrained (quoted)"] == pytest.approx(0.0342, abs=5e-4)
    assert share["MyModel (quoted)"] == pytest.approx(0.24, abs=0.01)


def test_table1_adds_quoted_columns_only_and_names_each_protocol():
    cm = ConfusionMatrix(3).update(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))
    table = table1.table1({"mine": cm}, protocols={"mine": "original"})
    assert table.loc["mIoU (macro)", "mine [original]"] == pytest.approx(100 * cm.compute()["miou"])
    others = [c for c in table.columns if c not in ("unit", "mine [original]")]
    assert others and all("(quoted) [" in c for c in others)
    assert table.loc["mIoU (macro)", "paper ResNet-101 (quoted) [original]"] == 77.21
    assert "mine" in table1.table1({"mine": cm}).columns  # no protocol given, no label
