"""Effective receptive fields: where in the input a trained network really looks.

The theoretical receptive field (`atrous.receptive_field`) says which input pixels *can*
influence an output. The effective one (Luo et al. 2016, "Understanding the Effective Receptive
Field in Deep Convolutional Neural Networks") measures how much each of them *does*: the
gradient of one central output with respect to the input, in absolute value, averaged over
images. It is usually far smaller than the theoretical field and concentrated near the centre;
ASPP's rates are the model's way to widen it.

    grad = gradient_map(model, images)        # (H, W): mean |d centre output / d input pixel|
    erf_radius(grad, mass=0.5)                # pixels around the centre holding half of it
    erf_table({"report": grad, ...})          # the radii of several models side by side
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

MASSES = (0.5, 0.9)  # the shares of the gradient mass the table gives a radius for


def _logits(output) -> torch.Tensor:
    """A model's class scores: a segmentation model's "out", or the tensor itself."""
    return output["out"] if isinstance(output, Mapping) else output


def gradient_map(model: nn.Module, images: torch.Tensor, *, batch_size: int = 16) -> np.ndarray:
    """The effective receptive field of `model`'s central output: (H, W) float64.

    For each image (N, C, H, W), float and already normalised as the model expects, the score of
    the class the model predicts at the central output pixel is differentiated with respect to
    the input; the absolute gradient is summed over the colour channels and averaged over the
    images. The model runs in eval mode and in fp32 (batch norm uses its running statistics,
    so each image's gradient is its own), and its parameters get no gradients.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    try:
        with torch.enable_grad():
            for start in range(0, len(images), batch_size):
                x = images[start : start + batch_size].detach().float().requires_grad_(True)
                scores = _logits(model(x))  # (n, K, H', W')
                centre = scores[:, :, scores.shape[-2] // 2, scores.shape[-1] // 2]  # (n, K)
                chosen = centre.gather(1, centre.argmax(1, keepdim=True))  # predicted class
                (grad,) = torch.autograd.grad(chosen.sum(), x)  # only x, not the parameters
                total += grad.abs().sum(1).sum(0).double()  # (H, W)
    finally:
        model.train(was_training)
    return (total / len(images)).numpy()


def radial_profile(grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(radius, mean gradient) of each 1-pixel ring around the map's centre, the mean taken over
    the ring's pixels inside the image (out to the image's corner)."""
    grad = np.asarray(grad, dtype=np.float64)
    h, w = grad.shape
    rows, cols = np.mgrid[0:h, 0:w]
    ring = np.floor(np.hypot(rows - h // 2, cols - w // 2)).astype(np.int64).ravel()
    sums = np.bincount(ring, weights=grad.ravel())
    counts = np.bincount(ring)
    radii = np.flatnonzero(counts)
    return radii.astype(np.float64), sums[radii] / counts[radii]


def erf_radius(grad: np.ndarray, mass: float = 0.5) -> float:
    """The radius (pixels) of the disc around the centre that holds `mass` of the effective
    receptive field, so measured that the image's edge does not cut it short: each 1-pixel
    ring's mass is its mean gradient over the pixels of it inside the image times its full
    circumference (the field is taken as the same in every direction). Rings are measured out to
    the image's corner (91 px on a 128-px image), so a field as wide as the image gives 65 px
    for half its mass and 87 px for 90%: a uniform map's radii. A radius is the outer edge of
    the ring that reaches the share (1 px for a map held by its centre pixel)."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    radii, profile = radial_profile(grad)
    ring_mass = profile * 2 * np.pi * (radii + 0.5)  # a disc of radius 0.5 for the centre ring
    ring_mass[0] = profile[0] * np.pi * 0.25
    total = ring_mass.sum()
    if total <= 0:
        raise ValueError("the gradient map is zero everywhere: no receptive field to measure")
    held = np.cumsum(ring_mass) / total
    return float(radii[np.searchsorted(held, mass - 1e-12)] + 1.0)


def erf_table(
    maps: Mapping[str, np.ndarray],
    theoretical: Mapping[str, float] | None = None,
    masses: Sequence[float] = MASSES,
) -> pd.DataFrame:
    """One row per named gradient map: the radius holding each share of its mass, beside the
    theoretical receptive field (pixels across) where given."""
    rows = []
    for name, grad in maps.items():
        row = {"setting": name}
        if theoretical is not None:
            row["theoretical field (px)"] = theoretical.get(name)
        for mass in masses:
            row[f"radius of {mass:.0%} (px)"] = erf_radius(grad, mass)
        rows.append(row)
    return pd.DataFrame(rows).set_index("setting")
