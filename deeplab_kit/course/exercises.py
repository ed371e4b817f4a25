"""The notebooks' exercises and their checks: the student writes a short function in the
notebook; `check_<name>(function)` runs it on a few cases against the kit's own answer and says
in one line whether it is right, what is wrong, or what is still to do. A check returns a
`Verdict`: shown, it is that line; as a truth value, whether the answer is right (the tests run
each check with a right and a wrong answer).

    def output_size(n, kernel, rate, stride=1, padding=0):
        ...                                   # the student's code
    exercises.check_output_size(output_size)  # -> right: ... / not yet: ... / to do: ...
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from deeplab_kit.course.atrous import feature_size, valid_share
from deeplab_kit.data.classes import IGNORE_INDEX
from deeplab_kit.metrics import ConfusionMatrix


class Verdict:
    """A check's answer: shown, one line ("right: ...", "not yet: ...", "to do: ..."); as a
    truth value, whether the answer was right."""

    def __init__(self, right: bool, line: str) -> None:
        self.right, self.line = right, line

    def __bool__(self) -> bool:
        return self.right

    def __repr__(self) -> str:
        return self.line


def _say(name: str, cases, answer: Callable, expected: Callable, close=None) -> Verdict:
    """Run `answer` on each case (a tuple of arguments) beside `expected`; one line for all."""
    close = close or (lambda a, b: a == b)
    for args in cases:
        try:
            got = answer(*args)
        except Exception as error:  # the student's code: any error is part of the answer
            line = f"not yet: {name}{_shown(args)} raised {type(error).__name__}: {error}"
            return Verdict(False, line)
        if got is None:
            return Verdict(False, f"to do: fill in {name} (it returned None)")
        want = expected(*args)
        if not close(got, want):
            line = f"not yet: {name}{_shown(args)} gives {_value(got)}, expected {_value(want)}"
            return Verdict(False, line)
    return Verdict(True, f"right: {name} agrees with the kit on {len(cases)} cases")


def _shown(args) -> str:
    return "(" + ", ".join(_value(a) for a in args) + ")"


def _value(value) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value)


def _allclose(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and np.allclose(a, b, equal_nan=True)


# --- 01: the data -----------------------------------------------------------------------------


def check_class_shares(class_shares: Callable) -> Verdict:
    """`class_shares(mask, num_classes)`: each class's share of the mask's labelled pixels (void,
    255, left out), an array of `num_classes` numbers that sum to 1."""
    rng = np.random.default_rng(0)
    masks = [rng.integers(0, 4, (6, 8)), np.array([[0, 0, 255], [2, 255, 2]])]
    masks[0][0, :3] = IGNORE_INDEX

    def expected(mask, num_classes):
        labels = mask[mask != IGNORE_INDEX]
        return np.bincount(labels, minlength=num_classes) / labels.size

    return _say("class_shares", [(m, 4) for m in masks], class_shares, expected, _allclose)


# --- 02: atrous convolution -------------------------------------------------------------------


def check_output_size(output_size: Callable) -> Verdict:
    """`output_size(n, kernel, rate, stride=1, padding=0)`: the length of a convolution's output
    along an axis of length n (PyTorch's rule: the kernel spans rate * (kernel - 1) + 1)."""
    cases = [(33, 3, 1, 1, 1), (33, 3, 6, 1, 6), (33, 3, 12, 1, 0)]
    cases += [(65, 3, 2, 2, 1), (16, 1, 1, 1, 0)]  # a stride, a 1x1 kernel

    def expected(n, kernel, rate, stride, padding):
        return (n + 2 * padding - rate * (kernel - 1) - 1) // stride + 1

    return _say("output_size", cases, output_size, expected)


def check_receptive_field(receptive_field: Callable) -> Verdict:
    """`receptive_field(layers)`: the input pixels one output of a stack of convolutions sees,
    for `layers` a list of (kernel, stride, rate) from the input up."""
    cases = [
        ([(3, 1, 1)],),
        ([(3, 1, 1)] * 3,),
        ([(3, 2, 1), (3, 1, 2)],),
        ([(7, 2, 1), (3, 2, 1), (3, 1, 4)],),
    ]

    def expected(layers):
        field, jump = 1, 1
        for kernel, stride, rate in layers:
            field += (kernel - 1) * rate * jump
            jump *= stride
        return field

    return _say("receptive_field", cases, receptive_field, expected)


def check_valid_share(share: Callable) -> Verdict:
    """`share(size, rate)`: the share of a 3x3 kernel's 9 weights that read a size x size map
    rather than its zero padding, averaged over the map's positions (padding = rate)."""
    cases = [(33, 1), (33, 6), (16, 12), (16, 16), (9, 4)]
    return _say("share", cases, share, lambda size, rate: valid_share(size, rate), math.isclose)


def check_aspp_forward(forward: Callable, aspp: torch.nn.Module) -> Verdict:
    """`forward(aspp, x)`: ASPP's forward pass written from its parts (`aspp.convs`, its branches;
    `aspp.project`), on `aspp`'s own weights; compared with `aspp(x)` in eval mode."""
    aspp = aspp.eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, aspp.convs[0][0].in_channels, 9, 9, generator=generator)

    def expected(module, x):
        with torch.no_grad():
            return module(x)

    def run(module, x):
        with torch.no_grad():
            return forward(module, x)

    def close(a, b):
        return a.shape == b.shape and torch.allclose(a, b, atol=1e-5)

    return _say("forward", [(aspp, x)], run, expected, close)


# --- 03: going deeper -------------------------------------------------------------------------


def check_feature_side(side: Callable) -> Verdict:
    """`side(n, output_stride)`: the side of the backbone's feature map for an n x n input (each
    halving rounds up: 513 -> 257 -> 129 -> 65 -> 33 at output stride 16)."""
    cases = [(513, 16), (513, 8), (136, 32), (272, 16), (128, 8), (136, 256)]
    return _say("side", cases, side, lambda n, stride: feature_size(n, stride))


# --- 04: the ablation -------------------------------------------------------------------------


def check_holm(holm: Callable) -> Verdict:
    """`holm(p)`: Holm's adjusted p-values for a list of p-values, in the list's order: sort
    ascending, multiply the k-th smallest (k from 0) by (m - k), carry the running maximum,
    cap at 1."""
    from deeplab_kit.course.experiments import holm as reference

    cases = [([0.01, 0.04, 0.03],), ([0.2, 0.001],), ([0.5],), ([0.01, 0.01, 0.3, 0.02],)]
    return _say("holm", cases, holm, lambda p: list(reference(p)), _allclose)


# --- 05: training in sessions -----------------------------------------------------------------


def check_cosine_lr(lr: Callable) -> Verdict:
    """`lr(step, total, warmup, peak)`: the learning rate at optimiser step `step` of `total`:
    a linear warm-up to `peak` over the first `warmup` steps ((step + 1) / warmup of it), then
    half a cosine from `peak` down to 0 at the end of the run."""

    def expected(step, total, warmup, peak):
        t = min(max(step - warmup, 0) / (total - warmup), 1.0)
        value = peak * 0.5 * (1 + math.cos(math.pi * t))
        return value * min(1.0, (step + 1) / warmup) if warmup else value

    cases = [(0, 100, 10, 0.006), (9, 100, 10, 0.006), (55, 100, 10, 0.006), (99, 100, 0, 1.0)]
    return _say(
        "lr", cases, lr, expected, lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    )


# --- 06: the report's metrics -----------------------------------------------------------------


def _cases() -> list[tuple[np.ndarray]]:
    return [
        (np.array([[50, 2, 3], [4, 10, 1], [0, 2, 8]]),),
        (np.array([[90, 5, 0], [5, 0, 0], [0, 0, 0]]),),  # class 2 absent everywhere
    ]


def check_iou(iou: Callable) -> Verdict:
    """`iou(matrix)`: each class's IoU from a confusion matrix (rows truth, columns prediction):
    TP / (TP + FP + FN), NaN for a class absent from truth and prediction."""
    expected = lambda m: np.array(ConfusionMatrix.from_matrix(torch.tensor(m)).compute()["iou"])  # noqa: E731
    return _say("iou", _cases(), iou, expected, _allclose)


def check_micro_macro(precisions: Callable) -> Verdict:
    """`precisions(matrix)`: (micro, macro) precision of a confusion matrix: pooled over all
    pixels, and averaged over the classes present in truth or prediction."""

    def expected(m):
        scores = ConfusionMatrix.from_matrix(torch.tensor(m)).compute()
        return (scores["precision_micro"], scores["precision_macro"])

    return _say("precisions", _cases(), precisions, expected, _allclose)
