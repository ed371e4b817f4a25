"""Atrous convolution made computable: sampling positions, feature sizes, valid taps, receptive fields.

A 3x3 atrous (dilated) convolution at rate r reads its input at offsets -r, 0, +r along each
axis: the same 9 weights, spread over a (2r + 1) x (2r + 1) window. This module turns the ideas
of DeepLabv3's Section 3 into numbers a notebook can print:

- where the 9 taps of a kernel land (`tap_offsets`, `sampling_positions`, `taps_inside`);
- how big the feature map is for an input size and output stride (`feature_size`);
- how many of the 9 weights still see the feature map rather than its zero padding
  (`valid_share`, `valid_tap_counts`): the paper's Figure 4 argument for image pooling;
- two exact rewritings of a dilated convolution (`dilate_kernel`, `atrous_conv_by_phases`);
- the theoretical receptive field of the backbone and of each ASPP branch, walked from a real
  model (`receptive_field`) or computed from a configuration (`receptive_field_from_config`);
- one table per ASPP setting (`aspp_table`), the numbers the rate explorer widget shows.

Sizes are an int (a square map) or a (height, width) pair; positions are (row, column).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from deeplab_kit.backbone import stage_plan
from deeplab_kit.config import ModelConfig, output_strides
from deeplab_kit.model import ASPPPooling, DeepLabV3, aspp_of, aspp_rates

Size = int | tuple[int, int]
# The stem gives 4; each later stage may halve once more: layer2..layer4 give 8 to 32, and the
# paper's cascaded block5..block7 up to 256.
OUTPUT_STRIDES = (4, *output_strides(3))


def _pair(size: Size, name: str = "size") -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if int(h) != h or int(w) != w or h < 1 or w < 1:
        raise ValueError(f"{name} must be a positive int or a (height, width) pair, got {size!r}")
    return int(h), int(w)


def check_rate(rate: int) -> int:
    if int(rate) != rate or rate < 1:
        raise ValueError(f"rate must be a positive integer, got {rate!r}")
    return int(rate)


# --- where the taps land ----------------------------------------------------------------------


def tap_offsets(rate: int, kernel_size: int = 3) -> np.ndarray:
    """The (row, column) offsets of a kernel's taps from its centre at `rate`: (k * k, 2) ints.

    For a 3x3 kernel these are {-rate, 0, rate} x {-rate, 0, rate}, row by row.
    """
    rate = check_rate(rate)
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd and positive, got {kernel_size!r}")
    steps = np.arange(kernel_size) - kernel_size // 2  # (k,): -1, 0, 1 for k = 3
    rows, cols = np.meshgrid(steps * rate, steps * rate, indexing="ij")
    return np.stack([rows.ravel(), cols.ravel()], axis=1)


def sampling_positions(center: tuple[int, int], rate: int, kernel_size: int = 3) -> np.ndarray:
    """Where a kernel centred at `center` (row, column) reads its input: (k * k, 2) ints."""
    return np.asarray(center, dtype=np.int64) + tap_offsets(rate, kernel_size)


def taps_inside(positions: np.ndarray, size: Size) -> np.ndarray:
    """Which positions (N, 2) fall inside a map of `size`; the others read zero padding: (N,) bool."""
    h, w = _pair(size)
    positions = np.asarray(positions)
    rows, cols = positions[:, 0], positions[:, 1]
    return (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)


# --- feature size -------------------------------------------------------------------------------


def feature_size(input_size: Size, output_stride: int) -> Size:
    """The backbone's output size for an input size, as torchvision's ResNet computes it (also
    with cascaded blocks, whose striding first block halves the same way).

    conv1 (7x7, stride 2, padding 3), the max pool (3x3, stride 2, padding 1) and every
    stride-2 3x3 conv (padding 1) map n to floor((n - 1) / 2) + 1 = ceil(n / 2); so the size is
    n halved, rounding up, log2(output_stride) times (513 -> 257 -> 129 -> 65 -> 33 at OS16).
    Returns an int for an int input and a (height, width) pair for a pair.
    """
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")
    h, w = _pair(input_size, "input_size")
    for _ in range(int(math.log2(output_stride))):
        h, w = -(-h // 2), -(-w // 2)  # ceil(n / 2)
    return h if isinstance(input_size, (int, np.integer)) else (h, w)


# --- valid taps (the paper's Figure 4) -----------------------------------------------------------


def _valid_counts_1d(n: int, rate: int, kernel_size: int) -> np.ndarray:
    """For each of n positions along one axis, how many of the k taps fall inside: (n,) ints."""
    positions = np.arange(n)[:, None] + (np.arange(kernel_size) - kernel_size // 2)[None, :] * rate
    return ((positions >= 0) & (positions < n)).sum(axis=1)


def valid_share(size: Size, rate: int, kernel_size: int = 3) -> float:
    """The share of a k x k kernel's weights that read the map, not its padding, averaged over
    every output position of a `size` map (padding = rate, so there is one output per pixel).

    The kernel is separable in where its taps land, so the count at (i, j) is the product of
    the counts along the rows and the columns, and its mean is the product of their means:
    a tap at offset t*rate is inside for n - |t|*rate of the n positions of an axis. For a 3x3
    kernel that gives (1 + 2 max(h - r, 0) / h)(1 + 2 max(w - r, 0) / w) / 9: 1 at r = 1 on a
    large map, falling towards 1/9 (only the centre tap) as r nears the map's size, exactly
    1/9 once r >= max(h, w).
    """
    h, w = _pair(size)
    rate = check_rate(rate)
    steps = np.abs(np.arange(kernel_size) - kernel_size // 2)  # |t| for each tap of an axis
    mean_rows = np.maximum(h - steps * rate, 0).sum() / h
    mean_cols = np.maximum(w - steps * rate, 0).sum() / w
    return float(mean_rows * mean_cols / kernel_size**2)


def valid_tap_counts(size: Size, rate: int, kernel_size: int = 3) -> dict[int, float]:
    """The share of output positions at which exactly n of the k*k taps are valid, for each n
    that occurs: the paper's Figure 4 plots these for n = 1, 4, 9 on a 65 x 65 map."""
    h, w = _pair(size)
    rate = check_rate(rate)
    rows, cols = (_valid_counts_1d(n, rate, kernel_size) for n in (h, w))
    values, frequency = np.unique(np.outer(rows, cols), return_counts=True)
    return {int(v): float(f) / (h * w) for v, f in zip(values, frequency, strict=True)}


def effective_rates(size: Size, rates: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """What each 3x3 branch at `rates` really computes on a `size` map: its (row, column)
    rates, with 0 along an axis where the off-centre taps can never land on the map (rate >=
    that side). A branch that is (0, 0) is a 1x1 convolution in disguise.

    Two rate sets with the same effective rates build the same function: started from the same
    weights, they train to the same network (the dead taps get no gradient). On a 16 x 16 map,
    (12, 16, 24) and (12, 24, 36) are both ((12, 12), (0, 0), (0, 0)).
    """
    h, w = _pair(size)
    return tuple(
        (r if r < h else 0, r if r < w else 0) for r in (check_rate(rate) for rate in rates)
    )


# --- two exact rewritings of a dilated convolution ------------------------------------------------


def dilate_kernel(weight: torch.Tensor, rate: int) -> torch.Tensor:
    """Insert rate - 1 zeros between a kernel's taps: (O, I, k, k) -> (O, I, r(k-1)+1, r(k-1)+1).

    An ordinary convolution with the result equals the atrous convolution with `weight` at
    `rate` ("atrous" is French for "with holes": the holes are these zeros).
    """
    rate = check_rate(rate)
    out_c, in_c, kh, kw = weight.shape
    dilated = weight.new_zeros(out_c, in_c, rate * (kh - 1) + 1, rate * (kw - 1) + 1)
    dilated[:, :, ::rate, ::rate] = weight
    return dilated


def atrous_conv_by_phases(x: torch.Tensor, weight: torch.Tensor, rate: int) -> torch.Tensor:
    """A 3x3 atrous convolution at `rate` (padding = rate) computed with ordinary 3x3 convs.

    Split the map into its rate x rate phases (every rate-th pixel from offset (a, b)), run the
    undilated conv (padding 1) on each subsampled map and interleave the results: the pixels
    rate apart in the map are neighbours in a phase. This is how atrous convolution was first
    implemented ("space to batch") and why it costs no more than an ordinary convolution.
    x: (N, C, H, W); weight: (O, C, 3, 3); returns (N, O, H, W).
    """
    rate = check_rate(rate)
    n, _, h, w = x.shape
    out = x.new_zeros(n, weight.shape[0], h, w)
    for a in range(min(rate, h)):
        for b in range(min(rate, w)):
            phase = x[:, :, a::rate, b::rate]  # (N, C, ceil((H - a) / r), ceil((W - b) / r))
            out[:, :, a::rate, b::rate] = F.conv2d(phase, weight, padding=1)
    return out


# --- receptive fields ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReceptiveField:
    """Theoretical receptive fields in input pixels (the extent of the input one output
    position can depend on), with the stride of each map.

    Every layer of the model pads by half its kernel's extent, so the field of output position
    i is centred on input pixel i * stride.
    """

    stages: dict[str, int]  # "stem", "layer1", ... -> field of one position of that stage's output
    strides: dict[str, int]  # the same names -> that output's stride in input pixels
    branches: dict[str, float]  # ASPP branch ("1x1", "rate 6", ..., "image pooling") -> field

    @property
    def backbone(self) -> int:
        """The field of one position of the backbone's output (its last stage)."""
        return list(self.stages.values())[-1]

    def table(self) -> pd.DataFrame:
        """One row per stage and per ASPP branch: receptive field and stride in input pixels."""
        stride = list(self.strides.values())[-1]
        rows = [("backbone", name, rf, self.strides[name]) for name, rf in self.stages.items()]
        rows += [("ASPP", name, _readable(rf), stride) for name, rf in self.branches.items()]
        return pd.DataFrame(rows, columns=["part", "name", "receptive field (px)", "stride (px)"])


def _readable(rf: float) -> int | str:
    """A field for a table: pixels, or "whole image" for the pooled branch."""
    return "whole image" if math.isinf(rf) else int(rf)


def _grow(rf: int, stride: int, kernel: int, step: int, dilation: int) -> tuple[int, int]:
    """One layer: it adds (its extent - 1) input steps of the current stride, then strides."""
    extent = dilation * (kernel - 1) + 1
    return rf + (extent - 1) * stride, stride * step


def _branch_names(rates: Sequence[int], image_pooling: bool) -> list[str]:
    """Unique branch names: "1x1", "rate 6", ...; a repeated rate gets " (2)", " (3)"."""
    names = ["1x1"]
    for rate in rates:
        name, k = f"rate {rate}", 2
        while name in names:
            name, k = f"rate {rate} ({k})", k + 1
        names.append(name)
    return names + (["image pooling"] if image_pooling else [])


def _branches(rf: int, stride: int, rates: Sequence[int], image_pooling: bool) -> dict[str, float]:
    fields = [rf] + [_grow(rf, stride, 3, 1, rate)[0] for rate in rates]
    fields += [math.inf] if image_pooling else []  # the pooled branch sees the whole image
    return dict(zip(_branch_names(rates, image_pooling), fields, strict=True))


def _grow_by(rf: int, stride: int, layer: nn.Module) -> tuple[int, int]:
    """`_grow` with a conv's or a pool's own kernel size, stride and dilation."""

    def first(value) -> int:  # convs hold pairs, pools plain ints
        return value[0] if isinstance(value, tuple) else value

    return _grow(rf, stride, first(layer.kernel_size), first(layer.stride), first(layer.dilation))


def receptive_field(model: DeepLabV3) -> ReceptiveField:
    """Walk a DeepLabV3's modules and return the receptive field of each stage and ASPP branch.

    The walk follows the main path of every residual block (conv1, conv2, conv3: the shortcut's
    1x1 conv sees less), reading each conv's and pool's kernel, stride and dilation from the
    module itself, so it reflects whatever dilations the model really has.
    """
    backbone = model.backbone
    rf, stride = _grow_by(1, 1, backbone.conv1)
    rf, stride = _grow_by(rf, stride, backbone.maxpool)
    stages, strides = {"stem": rf}, {"stem": stride}
    for name, stage in backbone.stages():
        for block in stage:
            for child_name, layer in block.named_children():
                if child_name != "downsample" and isinstance(layer, (nn.Conv2d, nn.MaxPool2d)):
                    rf, stride = _grow_by(rf, stride, layer)
        stages[name], strides[name] = rf, stride
    head = aspp_of(model)
    if head is None:  # the cascaded model: its 1x1 classifier sees what the last block sees
        return ReceptiveField(stages, strides, {"1x1": rf})
    pooling = any(isinstance(branch, ASPPPooling) for branch in head.convs)
    return ReceptiveField(stages, strides, _branches(rf, stride, aspp_rates(head), pooling))


def receptive_field_from_config(
    config: ModelConfig | Mapping | None = None, **settings
) -> ReceptiveField:
    """The same numbers as `receptive_field(build_model(config, **settings))`, by arithmetic
    alone: `config` is a ModelConfig (a model's `config`) or its settings as a dict (a preset
    from `deeplab_kit.config.MODEL_PRESETS`); missing ones take ModelConfig's defaults."""
    if not isinstance(config, ModelConfig):
        config = ModelConfig.from_dict(config or {})
    config = config.replace(**settings)
    rf, stride = _grow(1, 1, 7, 2, 1)  # conv1
    rf, stride = _grow(rf, stride, 3, 2, 1)  # max pool
    stages, strides = {"stem": rf}, {"stem": stride}
    for name, blocks in stage_plan(config):
        for step, dilation in blocks:
            rf, stride = _grow(rf, stride, 3, step, dilation)  # the 1x1 convs add nothing
        stages[name], strides[name] = rf, stride
    if not config.aspp:
        return ReceptiveField(stages, strides, {"1x1": rf})
    rates = [check_rate(r) for r in config.atrous_rates]
    return ReceptiveField(stages, strides, _branches(rf, stride, rates, config.image_pooling))


# --- one ASPP setting in numbers ------------------------------------------------------------------


def aspp_table(
    *,
    input_size: Size = 513,
    output_stride: int = 16,
    atrous_rates: Sequence[int] = (6, 12, 18),
    backbone: str = "resnet50",
    multi_grid: Sequence[int] | None = None,
    image_pooling: bool = True,
) -> pd.DataFrame:
    """One row per ASPP branch: its rate, the feature map it runs on, how far apart its taps are
    in input pixels, the share of its weights that see the map, and its receptive field.

    The rate explorer widget shows this table for its sliders' setting; a notebook cell can
    show it for one fixed setting.
    """
    size = _pair(feature_size(input_size, output_stride))
    fields = receptive_field_from_config(
        backbone=backbone,
        output_stride=output_stride,
        atrous_rates=tuple(atrous_rates),
        multi_grid=multi_grid,
        image_pooling=image_pooling,
    ).branches
    kinds = ["1x1"] + ["3x3"] * len(atrous_rates) + (["pooling"] if image_pooling else [])
    rates = [None] + list(atrous_rates) + ([None] if image_pooling else [])
    rows = []
    for (name, rf), kind, rate in zip(fields.items(), kinds, rates, strict=True):
        rows.append(
            {
                "branch": name,
                "kernel": kind,
                "rate": rate,
                "feature map": f"{size[0]}x{size[1]}",
                "tap spacing (px)": None if rate is None else rate * output_stride,
                # a 1x1 conv and the pooled branch read only real positions
                "valid weights": 1.0 if rate is None else valid_share(size, rate),
                "receptive field (px)": _readable(rf),
            }
        )
    return pd.DataFrame(rows).astype({"rate": "Int64", "tap spacing (px)": "Int64"})
