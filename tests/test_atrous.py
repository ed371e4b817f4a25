"""Atrous convolution arithmetic, checked against brute force, torch's convs and real models."""

import itertools
import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from deeplab_kit.course.atrous import (
    aspp_table,
    atrous_conv_by_phases,
    dilate_kernel,
    feature_size,
    receptive_field,
    receptive_field_from_config,
    sampling_positions,
    tap_offsets,
    taps_inside,
    valid_share,
    valid_tap_counts,
)
from deeplab_kit.model import build_model


def _brute_valid_counts(h, w, rate):
    """For every output position, count the 3x3 taps at `rate` that land inside an h x w map."""
    counts = np.zeros((h, w), dtype=int)
    for i, j in itertools.product(range(h), range(w)):
        for di, dj in itertools.product((-rate, 0, rate), repeat=2):
            counts[i, j] += 0 <= i + di < h and 0 <= j + dj < w
    return counts


# --- taps ---------------------------------------------------------------------------------------


def test_tap_offsets_are_the_rate_spaced_grid():
    offsets = tap_offsets(3)
    assert offsets.shape == (9, 2)
    assert {tuple(o) for o in offsets} == set(itertools.product((-3, 0, 3), repeat=2))
    assert {tuple(o) for o in tap_offsets(2, kernel_size=5)} == set(
        itertools.product((-4, -2, 0, 2, 4), repeat=2)
    )


def test_sampling_positions_and_which_fall_inside():
    positions = sampling_positions((1, 4), rate=2)  # on a 5 x 6 map
    assert {tuple(p) for p in positions} == set(itertools.product((-1, 1, 3), (2, 4, 6)))
    inside = taps_inside(positions, (5, 6))
    expected = [0 <= r < 5 and 0 <= c < 6 for r, c in positions]
    assert inside.tolist() == expected
    assert inside.sum() == 4  # rows 1, 3 x columns 2, 4


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_a_rate_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="rate"):
        tap_offsets(bad)


# --- feature size -------------------------------------------------------------------------------


def test_feature_size_matches_real_backbones(one_thread):
    # without dilation, layer1..layer4 end at output strides 4, 8, 16, 32; at OS8 the last two
    # stages keep layer2's size
    sizes = [(33, 33), (50, 47), (65, 64), (97, 81)]
    for output_stride, stage_strides in [(32, (4, 8, 16, 32)), (8, (4, 8, 8, 8))]:
        model = build_model(
            backbone="resnet26", aspp_channels=8, output_stride=output_stride
        ).eval()
        shapes = []
        for _, stage in model.backbone.stages():
            stage.register_forward_hook(
                lambda m, i, o, shapes=shapes: shapes.append(tuple(o.shape[-2:]))
            )
        with torch.no_grad():
            for h, w in sizes:
                shapes.clear()
                model.backbone(torch.zeros(1, 3, h, w))
                assert shapes == [feature_size((h, w), s) for s in stage_strides], (h, w)
                assert shapes[-1][1] == feature_size(w, output_stride)


def test_feature_size_of_the_papers_crop():
    # 513 -> 257 -> 129 -> 65 -> 33 -> 17: the paper's 65 x 65 (OS8) and 33 x 33 (OS16) maps
    assert [feature_size(513, s) for s in (4, 8, 16, 32)] == [129, 65, 33, 17]


def test_feature_size_rejects_other_strides():
    with pytest.raises(ValueError, match="output_stride"):
        feature_size(513, 12)


# --- valid taps ---------------------------------------------------------------------------------


def test_valid_share_equals_brute_force_counting():
    for h, w, rate in itertools.product(range(1, 8), range(1, 8), range(1, 9)):
        expected = _brute_valid_counts(h, w, rate).mean() / 9
        assert valid_share((h, w), rate) == pytest.approx(expected, abs=1e-12), (h, w, rate)
        if h == w:
            assert valid_share(h, rate) == pytest.approx(expected, abs=1e-12)


def test_valid_share_equals_a_dilated_conv_of_ones():
    # each output of a ones-kernel atrous conv over a ones map, zero padded, counts valid taps
    for size, rate in [((33, 33), 6), ((33, 33), 12), ((65, 41), 24), ((17, 17), 16)]:
        ones = torch.ones(1, 1, *size, dtype=torch.float64)
        counts = F.conv2d(
            ones, torch.ones(1, 1, 3, 3, dtype=torch.float64), padding=rate, dilation=rate
        )
        assert valid_share(size, rate) == pytest.approx(counts.mean().item() / 9, abs=1e-12)


def test_a_rate_at_least_the_map_size_leaves_only_the_centre_tap():
    for size in (1, 5, 17, 33):
        for rate in (size, size + 1, 3 * size):
            assert valid_share(size, rate) == pytest.approx(1 / 9)
            assert valid_tap_counts(size, rate) == {1: 1.0}
    shares = [valid_share(33, r) for r in range(1, 40)]
    assert all(a >= b for a, b in itertools.pairwise(shares))  # never grows with the rate
    assert shares[0] > 0.9


def test_valid_tap_counts_equal_brute_force_histogram():
    for h, w, rate in [(9, 9, 2), (9, 9, 5), (7, 12, 4), (65, 65, 24)]:
        counts = _brute_valid_counts(h, w, rate)
        values, frequency = np.unique(counts, return_counts=True)
        expected = dict(zip(values.tolist(), (frequency / counts.size).tolist(), strict=True))
        got = valid_tap_counts((h, w), rate)
        assert got.keys() == expected.keys()
        assert all(got[k] == pytest.approx(expected[k]) for k in got)
        assert sum(k * v for k, v in got.items()) / 9 == pytest.approx(valid_share((h, w), rate))


# --- two rewritings of a dilated conv ------------------------------------------------------------


@pytest.mark.parametrize("rate", [1, 2, 3, 5])
def test_dilated_conv_equals_a_zero_inserted_kernel(rate):
    gen = torch.Generator().manual_seed(rate)
    x = torch.randn(2, 3, 13, 11, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    big = dilate_kernel(weight, rate)  # (4, 3, 2r+1, 2r+1)
    assert big.shape[-2:] == (2 * rate + 1, 2 * rate + 1)
    assert torch.count_nonzero(big) == torch.count_nonzero(weight)  # only zeros were added
    atrous = F.conv2d(x, weight, padding=rate, dilation=rate)
    torch.testing.assert_close(F.conv2d(x, big, padding=rate), atrous)


@pytest.mark.parametrize(
    "rate, size", [(1, (8, 8)), (2, (8, 8)), (2, (9, 7)), (3, (10, 13)), (4, (5, 6))]
)
def test_dilated_conv_equals_undilated_convs_on_the_interleaved_phases(rate, size):
    gen = torch.Generator().manual_seed(10 + rate)
    x = torch.randn(2, 3, *size, generator=gen, dtype=torch.float64)
    weight = torch.randn(4, 3, 3, 3, generator=gen, dtype=torch.float64)
    atrous = F.conv2d(x, weight, padding=rate, dilation=rate)
    torch.testing.assert_close(atrous_conv_by_phases(x, weight, rate), atrous)


# --- receptive fields ------------------------------------------------------------------------------

CONFIGS = [
    dict(backbone="resnet50", output_stride=16, atrous_rates=(6, 12, 18)),
    dict(backbone="resnet50", output_stride=8, atrous_rates=(12, 24, 36), aux_loss=True),
    dict(backbone="resnet50", output_stride=32, atrous_rates=(1, 1, 1)),
    dict(backbone="resnet101", output_stride=16, multi_grid=(1, 2, 4), atrous_rates=(6, 12, 18)),
    dict(backbone="resnet50", output_stride=8, multi_grid=(1, 2, 4), extra_blocks=2),
    dict(
        backbone="resnet26",
        output_stride=16,
        multi_grid=(2, 4),
        atrous_rates=(8, 12, 16),
        decoder=True,
    ),
    dict(
        backbone="resnet26",
        output_stride=32,
        multi_grid=(1, 2),
        image_pooling=False,
        atrous_rates=(3,),
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_walked_and_computed_receptive_fields_agree(config):
    with torch.device("meta"):  # modules without storage: building is quick
        model = build_model(**config)
    walked, computed = receptive_field(model), receptive_field_from_config(model.config)
    assert walked == computed
    stride = config["output_stride"]
    assert list(walked.strides.values())[-1] == stride
    for rate in model.config.atrous_rates:  # each branch adds 2 * rate steps of the stride
        assert walked.branches[f"rate {rate}"] == walked.backbone + 2 * rate * stride
    assert math.isinf(walked.branches.get("image pooling", math.inf))


def test_the_walk_reads_the_modules_not_the_config():
    with torch.device("meta"):
        model = build_model(backbone="resnet26", output_stride=16)
    before = receptive_field(model).backbone
    conv = model.backbone.layer4[-1].conv2
    conv.dilation, conv.padding = (5, 5), (5, 5)  # was 2
    assert receptive_field(model).backbone == before + 2 * (5 - 2) * 16


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="unknown model setting .rates."):
        receptive_field_from_config(rates=(6, 12, 18))
    with pytest.raises(ValueError, match="multi_grid"):
        receptive_field_from_config(backbone="resnet26", multi_grid=(1, 2, 4))


def _row_extent(output_pixel: torch.Tensor, x: torch.Tensor) -> tuple[int, int]:
    """The first and last input row with a nonzero gradient of `output_pixel`."""
    (grad,) = torch.autograd.grad(output_pixel, x, retain_graph=True)
    rows = torch.nonzero(grad[0].abs().sum(dim=(0, 2)))[:, 0]
    return rows.min().item(), rows.max().item()


def test_receptive_field_bounds_the_empirical_one(one_thread):
    """The input rows a centre output depends on (nonzero gradient) span the theoretical field,
    centred on centre * stride and clipped to the image; never more. Kernels are square, so
    rows tell the whole story and a narrow image keeps the test cheap."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model(backbone="resnet26", aspp_channels=4, atrous_rates=(1, 3)).eval()
    field = receptive_field(model)
    stride, height = field.strides["layer4"], 256
    outputs = {}
    model.backbone.layer4.register_forward_hook(lambda m, i, o: outputs.__setitem__("backbone", o))
    for name, branch in zip(field.branches, model.classifier[0].convs, strict=True):
        branch.register_forward_hook(lambda m, i, o, name=name: outputs.__setitem__(name, o))
    x = torch.randn(
        1, 3, height, 32, generator=torch.Generator().manual_seed(1), requires_grad=True
    )
    model(x)
    centre = outputs["backbone"].shape[-2] // 2
    for name, rf in [
        ("backbone", field.backbone),
        ("1x1", field.branches["1x1"]),
        ("rate 1", field.branches["rate 1"]),
        ("rate 3", field.branches["rate 3"]),
    ]:
        rows = _row_extent(outputs[name][0, :, centre, 1].sum(), x)
        half = (rf - 1) // 2
        expected = (max(centre * stride - half, 0), min(centre * stride + half, height - 1))
        assert rows == expected, (name, rf, rows, expected)
    # the backbone's and the rate-1 branch's fields fit in the image: the match is exact there
    assert field.backbone < height and field.branches["rate 1"] < height < field.branches["rate 3"]


# --- one ASPP setting ------------------------------------------------------------------------------


def test_aspp_table_gathers_the_numbers_of_each_branch():
    table = aspp_table(
        input_size=321, output_stride=8, atrous_rates=(12, 24, 36), backbone="resnet101"
    )
    size = feature_size(321, 8)  # 41
    fields = receptive_field_from_config(
        backbone="resnet101", output_stride=8, atrous_rates=(12, 24, 36)
    )
    assert table["branch"].tolist() == list(fields.branches)
    assert (table["feature map"] == f"{size}x{size}").all()
    atrous = table[table["kernel"] == "3x3"]
    assert atrous["rate"].tolist() == [12, 24, 36]
    assert atrous["tap spacing (px)"].tolist() == [96, 192, 288]
    assert atrous["valid weights"].tolist() == [valid_share(size, r) for r in (12, 24, 36)]
    finite = [v for v in fields.branches.values() if not math.isinf(v)]
    assert table["receptive field (px)"].tolist() == finite + ["whole image"]
    assert table.loc[table["branch"] == "1x1", "valid weights"].item() == 1.0
