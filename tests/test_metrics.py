import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from deeplab_kit.data.classes import VOC_CLASSES
from deeplab_kit.metrics import (
    ConfusionMatrix,
    named_scores,
    per_class_table,
    report_table,
)


def scores_of(pred, target, num_classes, **kwargs):
    pred, target = torch.as_tensor(pred), torch.as_tensor(target)
    return ConfusionMatrix(num_classes, **kwargs).update(pred, target).compute()


# --- hand-computed cases ---------------------------------------------------------------------


def test_perfect_prediction_scores_one_and_ignores_void():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 0, 1, 2], [2, 2, 0, 1]])  # wrong only where the truth is void
    cm = ConfusionMatrix(3).update(pred, target)
    assert torch.equal(cm.matrix, torch.diag(torch.tensor([2, 2, 2])))
    s = cm.compute()
    for key in (
        "pixel_accuracy",
        "mean_accuracy",
        "miou",
        "fw_iou",
        "precision_macro",
        "recall_macro",
        "f1_macro",
    ):
        assert s[key] == 1.0, key
    assert s["iou"] == [1.0, 1.0, 1.0]


def test_all_wrong_scores_zero():
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    s = scores_of((target + 1) % 3, target, 3)
    for key in ("pixel_accuracy", "miou", "precision", "recall", "f1", "f1_micro", "fw_iou"):
        assert s[key] == 0.0, key
    assert s["support"] == [2, 2, 2]


def test_hand_computed_scores_with_a_class_absent_from_truth_and_prediction():
    # rows = truth: [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]]; class 3 never occurs
    cm = ConfusionMatrix(4).update(
        torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2])
    )
    expected = torch.tensor([[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    assert torch.equal(cm.matrix, expected)
    s = cm.compute()
    assert s["iou"] == pytest.approx([2 / 3, 1 / 3, 1 / 2, float("nan")], nan_ok=True)
    assert s["miou"] == pytest.approx(0.5)  # over classes 0..2 only: the mean of the non-NaN
    assert s["miou"] == pytest.approx(np.nanmean(s["iou"]))
    assert s["pixel_accuracy"] == pytest.approx(4 / 6)
    assert s["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert s["recall"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert s["f1"] == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    assert s["precision_weighted"] == pytest.approx((3 * 1 + 2 * 0.5 + 1 * 0.5) / 6)
    assert s["fw_iou"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 3 + 1 * 1 / 2) / 6)
    assert s["mean_accuracy"] == pytest.approx(s["recall"])  # same classes in truth here


def test_class_only_predicted_counts_in_macro_but_not_in_mean_accuracy():
    # class 3 is predicted once and never true: IoU 0, recall 0/0 = 0; class 2 never occurs
    s = scores_of([0, 3, 1], [0, 0, 1], 4)
    assert s["iou"] == pytest.approx([0.5, 1.0, float("nan"), 0.0], nan_ok=True)
    assert s["miou"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["recall"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert s["mean_accuracy"] == pytest.approx((0.5 + 1.0) / 2)  # FCN's: classes in the truth


def test_micro_scores_equal_pixel_accuracy():
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, 5, (3, 17, 13), generator=g)
    pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, 0)
    target[torch.rand(target.shape, generator=g) < 0.1] = 255
    s = ConfusionMatrix(5).update(pred, target).compute()
    valid = target != 255
    accuracy = (pred[valid] == target[valid]).double().mean().item()
    assert 0.5 < accuracy < 1.0
    for key in ("pixel_accuracy", "precision_micro", "recall_micro", "f1_micro", "recall_weighted"):
        assert s[key] == pytest.approx(accuracy, abs=1e-12), key
    assert s["precision_weighted"] != pytest.approx(accuracy)


def test_ignored_pixels_change_nothing_whatever_their_prediction():
    target = torch.tensor([0, 1, 1, 2])
    pred = torch.tensor([0, 1, 2, 2])
    base = ConfusionMatrix(3).update(pred, target).matrix
    padded = ConfusionMatrix(3).update(
        torch.cat([pred, torch.tensor([0, 2, -7, 99])]), torch.cat([target, torch.full((4,), 255)])
    )
    assert torch.equal(padded.matrix, base)
    assert padded.out_of_range_predictions.sum() == 0


def test_out_of_range_predictions_count_as_misses_of_the_true_class():
    cm = ConfusionMatrix(3).update(torch.tensor([-1, 3, 1, 1]), torch.tensor([0, 0, 1, 2]))
    assert torch.equal(cm.matrix, torch.tensor([[0, 0, 0], [0, 1, 0], [0, 1, 0]]))
    assert cm.out_of_range_predictions.tolist() == [2, 0, 0]
    with pytest.warns(UserWarning, match="2 predictions were outside 0..2"):
        s = cm.compute()
    assert s["support"] == [2, 1, 1]
    assert s["pixel_accuracy"] == pytest.approx(1 / 4)
    assert s["recall_per_class"] == pytest.approx([0.0, 1.0, 0.0])
    assert s["precision_per_class"] == pytest.approx([0.0, 0.5, 0.0])  # no false positive for 0


def test_bad_target_labels_raise_and_leave_the_counts_untouched():
    cm = ConfusionMatrix(3).update(torch.tensor([0, 1]), torch.tensor([0, 1]))
    before = cm.matrix
    with pytest.raises(ValueError, match=r"2 pixels with labels outside 0\.\.2.*<= -1, 3"):
        cm.update(torch.tensor([0, 1, 2]), torch.tensor([3, -4, 1]))
    assert torch.equal(cm.matrix, before)


def test_shape_and_dtype_errors_are_clear():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match=r"argmax\(1\)"):
        cm.update(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="same shape"):
        cm.update(torch.zeros(2, 4, 4, dtype=torch.long), torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class labels"):
        cm.update(torch.zeros(2, 4), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int16, torch.int32])
def test_any_integer_dtype_gives_the_same_matrix(dtype):
    g = torch.Generator().manual_seed(2)
    target = torch.randint(0, 4, (2, 9, 9), generator=g)
    target[0, 0] = 255 if dtype == torch.uint8 else -100
    pred = torch.randint(0, 4, (2, 9, 9), generator=g)
    ignore = 255 if dtype == torch.uint8 else -100
    reference = ConfusionMatrix(4, ignore).update(pred, target).matrix
    assert torch.equal(
        ConfusionMatrix(4, ignore).update(pred.to(dtype), target.to(dtype)).matrix, reference
    )


def test_merge_add_reset_and_from_matrix():
    g = torch.Generator().manual_seed(3)
    a, b = (torch.randint(0, 4, (2, 5, 5), generator=g) for _ in range(2))
    t1, t2 = (torch.randint(0, 4, (2, 5, 5), generator=g) for _ in range(2))
    cm1 = ConfusionMatrix(4).update(a, t1)
    cm2 = ConfusionMatrix(4).update(b, t2)
    both = ConfusionMatrix(4).update(a, t1).update(b, t2)
    assert torch.equal((cm1 + cm2).matrix, both.matrix)
    assert torch.equal(ConfusionMatrix.from_matrix(both.matrix).matrix, both.matrix)
    assert ConfusionMatrix.from_matrix(both.matrix).compute() == both.compute()
    cm1.merge(cm2)
    assert torch.equal(cm1.matrix, both.matrix)
    assert cm1.reset().matrix.sum() == 0
    with pytest.raises(ValueError, match="cannot merge"):
        cm1.merge(ConfusionMatrix(5))


def test_update_reads_nothing_back_from_the_device():
    # Meta tensors have no data: any host read (.item(), boolean-mask indexing, bincount's max)
    # would fail here, so update passing on them shows it is free of host syncs.
    cm = ConfusionMatrix(21)
    pred = torch.empty(2, 8, 8, dtype=torch.long, device="meta")
    cm.update(pred, torch.empty(2, 8, 8, dtype=torch.long, device="meta"))
    assert cm.matrix.device.type == "meta" and cm.matrix.shape == (21, 21)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_update_on_cuda_has_no_host_sync():
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    pred = torch.randint(0, 21, (2, 64, 64), device="cuda")
    target = torch.randint(0, 21, (2, 64, 64), device="cuda")
    target[:, :4] = 255
    cm = ConfusionMatrix(21)
    cm.update(pred, target)  # the first call moves the counts to CUDA
    torch.cuda.set_sync_debug_mode("error")
    try:
        cm.update(pred, target)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    expected = 2 * multiclass_confusion_matrix(pred, target, 21, ignore_index=255)
    assert torch.equal(cm.matrix, expected)


# --- agreement with torchmetrics ------------------------------------------------------------


def random_case(seed, num_classes=8, shape=(3, 40, 40)):
    """Random labels with void pixels; class 5 never predicted, 6 never true, 7 never anywhere."""
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, num_classes, shape, generator=g)
    target[target >= 6] = 0
    pred = torch.where(
        torch.rand(shape, generator=g) < 0.5, target, torch.randint(0, 7, shape, generator=g)
    )
    pred[pred == 5] = 6
    target[torch.rand(shape, generator=g) < 0.15] = 255
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_torchmetrics(seed):
    # torchmetrics is imported in the tests that use it, so that the DDP test's spawned
    # processes, which import this module, start faster.
    from torchmetrics.functional.classification import (
        multiclass_confusion_matrix,
        multiclass_f1_score,
        multiclass_jaccard_index,
        multiclass_precision,
        multiclass_recall,
    )

    n = 8
    pred, target = random_case(seed, n)
    cm = ConfusionMatrix(n).update(pred[:2], target[:2]).update(pred[2:], target[2:])
    assert torch.equal(cm.matrix, multiclass_confusion_matrix(pred, target, n, ignore_index=255))
    s = cm.compute()
    kw = dict(num_classes=n, ignore_index=255)
    present = torch.tensor(
        [(c == pred[target != 255]).any() or (c == target).any() for c in range(n)]
    )
    assert present.tolist() == [True] * 7 + [False]

    def close(ours, theirs):
        # torchmetrics scores a class absent from truth and prediction 0; we say NaN (absent)
        if isinstance(ours, list):
            assert all(np.isnan(v) for v, p in zip(ours, present, strict=True) if not p)
            ours = [v for v, p in zip(ours, present, strict=True) if p]
            theirs = torch.as_tensor(theirs)[present]
        assert ours == pytest.approx(torch.as_tensor(theirs).double().tolist(), abs=1e-6)

    close(s["iou"], multiclass_jaccard_index(pred, target, average="none", **kw))
    # torchmetrics (>= 1.4) leaves classes with TP + FP + FN = 0 out of its macro averages, as we
    # do; older versions averaged over all classes. Compare with both: its macro, and the mean of
    # its per-class values over the classes present.
    for ours, fn in [
        ("precision", multiclass_precision),
        ("recall", multiclass_recall),
        ("f1", multiclass_f1_score),
    ]:
        per_class = fn(pred, target, average="none", **kw)
        close(s[f"{ours}_per_class"], per_class)
        close(s[ours], per_class[present].mean())
        close(s[ours], fn(pred, target, average="macro", **kw))
        close(s[f"{ours}_micro"], fn(pred, target, average="micro", **kw))
        close(s[f"{ours}_weighted"], fn(pred, target, average="weighted", **kw))
    close(s["miou"], multiclass_jaccard_index(pred, target, average="none", **kw)[present].mean())
    close(s["miou"], multiclass_jaccard_index(pred, target, average="macro", **kw))
    close(s["fw_iou"], multiclass_jaccard_index(pred, target, average="weighted", **kw))
    for iou, p, r in zip(
        s["iou"][:7], s["precision_per_class"], s["recall_per_class"], strict=False
    ):
        assert iou >= p + r - 1 - 1e-12  # the floor that rules out macro averages in Table 1


@pytest.mark.parametrize("ignore_index", [None, -100, 0])
def test_other_ignore_indices_agree_with_torchmetrics(ignore_index):
    from torchmetrics.functional.classification import multiclass_confusion_matrix

    pred, target = random_case(4, 8)
    if ignore_index is not None:
        target[target == 255] = ignore_index
    else:
        target[target == 255] = 1
    cm = ConfusionMatrix(8, ignore_index).update(pred, target)
    assert torch.equal(
        cm.matrix, multiclass_confusion_matrix(pred, target, 8, ignore_index=ignore_index)
    )


# --- tables --------------------------------------------------------------------------------


def test_per_class_table_names_and_values():
    pred, target = random_case(5, 21, shape=(2, 16, 16))
    cm = ConfusionMatrix(21).update(pred, target)
    table = per_class_table(cm)
    s = cm.compute()
    assert list(table.index) == list(VOC_CLASSES)
    assert table["IoU"].tolist() == pytest.approx(s["iou"], nan_ok=True)
    assert table["F1"].tolist() == pytest.approx(s["f1_per_class"], nan_ok=True)
    assert table["support_pixels"].tolist() == cm.matrix.sum(1).tolist()
    assert table["predicted_pixels"].tolist() == cm.matrix.sum(0).tolist()
    assert list(per_class_table(ConfusionMatrix(3)).index) == ["class 0", "class 1", "class 2"]
    percent = per_class_table(cm, percent=True)  # as the notebooks show it
    assert percent["IoU (%)"].tolist() == pytest.approx(100 * table["IoU"], nan_ok=True)
    assert percent["support_pixels"].tolist() == table["support_pixels"].tolist()


def test_report_table_rows_units_and_conventions():
    pred, target = random_case(6, 8)
    cm = ConfusionMatrix(8).update(pred, target)
    s = cm.compute()
    table = report_table({"ours": cm, "as dict": s}, average="weighted")
    assert list(table.index) == [
        "Precision (weighted)",
        "Recall (weighted)",
        "F1 score (weighted)",
        "mIoU (macro)",
    ]
    assert table.loc["mIoU (macro)", "unit"] == "%"
    assert table.loc["mIoU (macro)", "ours"] == pytest.approx(100 * s["miou"])
    assert table["ours"].tolist() == table["as dict"].tolist()
    assert table.loc["Precision (weighted)", "ours"] == pytest.approx(s["precision_weighted"])
    assert list(table.columns) == ["unit", "ours", "as dict"]
    micro = report_table({"ours": cm}, average="micro")["ours"]
    assert micro["Precision (micro)"] == pytest.approx(micro["Recall (micro)"])
    assert micro["Precision (micro)"] == pytest.approx(micro["F1 score (micro)"])
    assert micro["Precision (micro)"] == pytest.approx(s["pixel_accuracy"])
    with pytest.raises(ValueError, match="average"):
        report_table({"ours": cm}, average="samples")


# --- DDP ---------------------------------------------------------------------------------------


class LogitsModel(torch.nn.Module):
    """Its input already is the logits: lets evaluate run on known scores."""

    def forward(self, x):
        return {"out": x}


def eval_case(rank):
    g = torch.Generator().manual_seed(20 + rank)
    logits = torch.randn(2, 8, 12, 12, generator=g)  # (N, C, H, W)
    target = torch.randint(0, 8, (2, 12, 12), generator=g)
    target[:, : 3 * rank] = 255
    return logits, target


def _ddp_worker(rank, world_size, port, path):
    from deeplab_kit.evaluate import evaluate
    from deeplab_kit.runtime.arithmetic import FP32

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        pred, target = random_case(10 + rank, 8)
        cm = ConfusionMatrix(8).update(pred, target).all_reduce()
        ce = torch.nn.CrossEntropyLoss(ignore_index=255)
        result = evaluate(
            LogitsModel(),
            [eval_case(rank)],
            device="cpu",
            num_classes=8,
            criterion=ce,
            arithmetic=FP32,
        )
        out = {
            "matrix": cm.matrix,
            "eval": result.confusion.matrix,
            "loss": torch.tensor(result.loss),
        }
        torch.save(out, f"{path}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2)
    expected = sum(ConfusionMatrix(8).update(*random_case(10 + r, 8)).matrix for r in range(2))
    cases = [eval_case(r) for r in range(2)]
    expected_eval = sum(ConfusionMatrix(8).update(x.argmax(1), t).matrix for x, t in cases)
    ce_sum = sum(F.cross_entropy(x, t, ignore_index=255, reduction="sum") for x, t in cases)
    expected_loss = float(ce_sum) / sum(int((t != 255).sum()) for _, t in cases)
    for rank in range(2):
        out = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(out["matrix"], expected)
        # evaluate reduces over ranks itself: each rank sees the whole set's scores
        assert torch.equal(out["eval"], expected_eval)
        assert float(out["loss"]) == pytest.approx(expected_loss, rel=1e-6)
    # outside a process group it is a no-op
    single = ConfusionMatrix(8).update(*random_case(10, 8))
    assert torch.equal(single.all_reduce().matrix, single.matrix)


def test_every_average_is_named_and_the_short_names_repeat_the_macro_ones():
    pred, target = random_case(7)
    s = ConfusionMatrix(8).update(pred, target).compute()
    for score in ("precision", "recall", "f1"):
        assert s[score] == s[f"{score}_macro"]  # the public surface's short names
        assert {f"{score}_{kind}" for kind in ("macro", "micro", "weighted")} <= set(s)
    named = named_scores(s)
    assert not {"precision", "recall", "f1"} & set(named)
    assert named["precision_macro"] == s["precision"]
