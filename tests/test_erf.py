"""Effective receptive fields: analytic checks on single convolutions, and the radius measure."""

import numpy as np
import pytest
import torch
from torch import nn

from deeplab_kit.course.atrous import sampling_positions
from deeplab_kit.course.erf import erf_radius, erf_table, gradient_map


@pytest.mark.parametrize("rate", [1, 2, 5])
def test_a_dilated_3x3_convolution_looks_exactly_at_its_taps(rate):
    torch.manual_seed(rate)
    conv = nn.Conv2d(3, 1, 3, padding=rate, dilation=rate)
    with torch.no_grad():  # weights far from 0, so no tap can vanish by chance
        conv.weight.copy_(torch.rand_like(conv.weight) + 0.5)
    images = torch.randn(2, 3, 21, 21)
    grad = gradient_map(conv, images)
    taps = sampling_positions((21 // 2, 21 // 2), rate)  # (9, 2) rows, columns
    expected = np.zeros((21, 21), dtype=bool)
    expected[taps[:, 0], taps[:, 1]] = True
    assert grad.shape == (21, 21)
    assert np.array_equal(grad > 0, expected)
    # Each tap's gradient is its weight summed over the colour channels (a linear layer).
    weights = conv.weight[0].detach().sum(0).numpy()  # (3, 3)
    assert grad[expected].reshape(3, 3) == pytest.approx(weights, rel=1e-5)


def test_the_gradient_of_one_image_does_not_depend_on_the_others():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 2, 3, padding=2, dilation=2),
    )
    model.train()  # gradient_map switches to eval (running statistics) and back
    images = torch.randn(3, 3, 15, 15)
    alone = gradient_map(model, images[:1])
    together = gradient_map(model, images, batch_size=3) * 3
    rest = gradient_map(model, images[1:], batch_size=2) * 2
    assert together - rest == pytest.approx(alone, abs=1e-5)
    assert model.training and all(p.grad is None for p in model.parameters())


def centred_distance(side: int) -> np.ndarray:
    rows, cols = np.mgrid[0:side, 0:side]
    return np.hypot(rows - side // 2, cols - side // 2)


def test_radius_holding_a_share_of_the_mass():
    grad = np.zeros((11, 11))
    grad[5, 5] = 1.0
    assert erf_radius(grad, 0.5) == erf_radius(grad, 1.0) == 1.0  # the centre ring's outer edge
    disc = (centred_distance(65) < 20).astype(float)
    assert erf_radius(disc, 1.0) == 20.0
    # a uniform disc holds half its mass within r / sqrt(2) = 14.1: the ring ending at 15
    assert erf_radius(disc, 0.5) == 15.0
    table = erf_table({"a": disc}, {"a": 99})
    assert table.loc["a", "theoretical field (px)"] == 99
    assert table.loc["a", "radius of 50% (px)"] == 15.0
    with pytest.raises(ValueError, match="zero everywhere"):
        erf_radius(np.zeros((3, 3)))


def test_the_image_edge_does_not_cut_the_radius_short():
    field = np.exp(-(centred_distance(129) ** 2) / (2 * 6.0**2))  # an isotropic field, sigma 6
    cropped = field[64 - 24 : 64 + 25, 64 - 24 : 64 + 25]  # the same field on a 49-px image
    for mass in (0.5, 0.9):
        assert erf_radius(cropped, mass) == erf_radius(field, mass)
    # a Gaussian holds half its mass within 1.18 sigma (7.1 px) and 90% within 2.15 sigma (12.9)
    assert erf_radius(field, 0.5) == 8.0 and erf_radius(field, 0.9) == 13.0
    uniform = np.ones((128, 128))  # as wide as the image: the largest radii it can report
    assert (erf_radius(uniform, 0.5), erf_radius(uniform, 0.9)) == (65.0, 87.0)
    with pytest.raises(ValueError, match="mass must be in"):
        erf_radius(uniform, 0.0)
