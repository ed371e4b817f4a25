"""The notebooks' exercises: each check accepts a right answer (the solutions live here, not in
the notebooks), names what is wrong in a wrong one, and says what is to do for an unsolved stub."""

import math

import numpy as np
import pytest
import torch

from deeplab_kit.course import exercises
from deeplab_kit.model import ASPP

# --- right answers ---------------------------------------------------------------------------


def class_shares(mask, num_classes):
    labels = mask[mask != 255]
    return np.bincount(labels, minlength=num_classes) / labels.size


def output_size(n, kernel, rate, stride=1, padding=0):
    return (n + 2 * padding - rate * (kernel - 1) - 1) // stride + 1


def receptive_field(layers):
    field, jump = 1, 1
    for kernel, stride, rate in layers:
        field += (kernel - 1) * rate * jump
        jump *= stride
    return field


def share(size, rate):
    inside = 1 + 2 * max(size - rate, 0) / size  # taps inside, per position, along one axis
    return inside * inside / 9


def aspp_forward(aspp, x):
    return aspp.project(torch.cat([branch(x) for branch in aspp.convs], dim=1))


def side(n, output_stride):
    for _ in range(int(math.log2(output_stride))):
        n = (n + 1) // 2
    return n


def holm(p):
    order = np.argsort(p)
    adjusted, running = np.empty(len(p)), 0.0
    for k, index in enumerate(order):
        running = max(running, min(1.0, (len(p) - k) * p[index]))
        adjusted[index] = running
    return list(adjusted)


def lr(step, total, warmup, peak):
    t = min(max(step - warmup, 0) / (total - warmup), 1.0)
    value = peak * 0.5 * (1 + math.cos(math.pi * t))
    return value * min(1.0, (step + 1) / warmup) if warmup else value


def iou(matrix):
    tp = np.diag(matrix).astype(float)
    union = matrix.sum(0) + matrix.sum(1) - tp
    with np.errstate(invalid="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def precisions(matrix):
    tp, predicted = np.diag(matrix).astype(float), matrix.sum(0)
    present = (matrix.sum(0) + matrix.sum(1)) > 0
    per_class = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    return tp.sum() / matrix.sum(), per_class[present].mean()


ASPP_MODULE = ASPP(8, (1, 2), out_channels=4, image_pooling=True)

CASES = [
    ("check_class_shares", class_shares, lambda mask, n: np.bincount(mask.ravel() % 256, minlength=n)[:n] / mask.size),
    ("check_output_size", output_size, lambda n, kernel, rate, stride=1, padding=0: n - kernel + 1),
    ("check_receptive_field", receptive_field, lambda layers: sum(k for k, _, _ in layers)),
    ("check_valid_share", share, lambda size, rate: 1.0),
    ("check_feature_side", side, lambda n, output_stride: n // output_stride),
    ("check_holm", holm, lambda p: [min(1.0, v * len(p)) for v in p]),
    ("check_cosine_lr", lr, lambda step, total, warmup, peak: peak),
    ("check_iou", iou, lambda m: np.diag(m) / m.sum(1)),
    ("check_micro_macro", precisions, lambda m: (0.5, 0.5)),
]  # fmt: skip


@pytest.mark.parametrize("check, right, wrong", CASES, ids=[c[0] for c in CASES])
def test_a_right_answer_passes_and_a_wrong_one_is_named(check, right, wrong):
    check = getattr(exercises, check)
    verdict = check(right)
    assert verdict and repr(verdict).startswith("right: ")
    verdict = check(wrong)
    said = repr(verdict)
    assert not verdict and said.startswith("not yet: ") and "expected" in said
    assert "\n" not in said


@pytest.mark.parametrize("check", [c[0] for c in CASES])
def test_an_unsolved_stub_is_a_to_do_not_an_error(check):
    verdict = getattr(exercises, check)(lambda *args: None)
    assert not verdict and repr(verdict).startswith("to do: fill in ")


def test_the_aspp_forward_is_checked_on_the_module_s_own_weights():
    assert exercises.check_aspp_forward(aspp_forward, ASPP_MODULE)

    def without_pooling(aspp, x):  # the image-level branch left out
        branches = [branch(x) for branch in aspp.convs[:-1]]
        return aspp.project(torch.cat([*branches, torch.zeros_like(branches[0])], 1))

    verdict = exercises.check_aspp_forward(without_pooling, ASPP_MODULE)
    assert not verdict and "not yet: forward" in repr(verdict)
    verdict = exercises.check_aspp_forward(lambda aspp, x: None, ASPP_MODULE)
    assert not verdict and "to do: fill in forward" in repr(verdict)


def test_an_answer_that_raises_is_named_with_its_error():
    verdict = exercises.check_output_size(lambda *args: 1 / 0)
    assert not verdict and "raised ZeroDivisionError" in repr(verdict)
