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


def erf_radius(grad: np.ndarray, mass: float = 0.5) -> float:
    """The smallest radius (pixels, from the map's centre) of a disc holding `mass` of the
    gradient map's total."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    grad = np.asarray(grad, dtype=np.float64)
    total = grad.sum()
    if total <= 0:
        raise ValueError("the gradient map is zero everywhere: no receptive field to measure")
    h, w = grad.shape
    rows, cols = np.mgrid[0:h, 0:w]
    distance = np.hypot(rows - h // 2, cols - w // 2).ravel()
    order = np.argsort(distance, kind="stable")
    held = np.cumsum(grad.ravel()[order]) / total
    return float(distance[order][np.searchsorted(held, mass - 1e-12)])


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
