"""The training loss, named: cross-entropy over the labelled pixels plus the weighted aux loss.

criterion = Criterion(aux_weight=0.5)
loss = criterion(model(images), targets)     # {"out": ..., "aux": ...} vs (N, H, W) labels
"""

from __future__ import annotations

import torch
from torch import nn

from deeplab_kit.data.classes import IGNORE_INDEX


class Criterion(nn.Module):
    """The training loss: cross-entropy over the labelled pixels (VOC's void, 255, ignored), plus
    `aux_weight` times the same loss of the auxiliary head when the model has one (torchvision's
    reference training weighs it 0.5). Computed in fp32 whatever the forward pass ran in."""

    def __init__(self, aux_weight: float = 0.5, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.aux_weight = aux_weight
        self.cross_entropy = nn.CrossEntropyLoss(ignore_index=ignore_index)

    def forward(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        loss = self.cross_entropy(outputs["out"].float(), targets)  # (N, C, H, W) vs (N, H, W)
        if "aux" in outputs:
            loss = loss + self.aux_weight * self.cross_entropy(outputs["aux"].float(), targets)
        return loss
