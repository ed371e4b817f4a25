"""A trained run as an ONNX model, to ship: any batch and image size in, class scores out.

    python -m deeplab_kit export --checkpoint runs/report --out model.onnx

The graph takes `images`: float32 (N, 3, H, W), RGB in 0..255 (ImageNet's normalisation is
inside the graph), and gives `logits`: float32 (N, classes, H, W) at the input size; the argmax
over classes is the prediction. `model.json` beside it says so, with the class names and
colours, and the side the run's validation resized images to (None: whole images). Exported
with torch.export (`torch.onnx.export(dynamo=True)`, which needs the `onnx` and `onnxscript`
packages) and checked at once by onnxruntime against torch on a batch of two sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from deeplab_kit.data.classes import Classes
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from deeplab_kit.files import write_json
from deeplab_kit.predict import load_predictor

OPSET = 18
# The agreement `export` checks (and the tests): logits within this of torch's, and the same
# argmax on nearly every pixel.
LOGIT_TOLERANCE = 1e-3
ARGMAX_AGREEMENT = 0.999


class Shipped(nn.Module):
    """The model as shipped: 0..255 RGB in, normalised inside, logits out."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W) -> (N, C, H, W)
        return self.model((images - self.mean) / self.std)["out"]


def export(checkpoint, out: str | Path, *, check: bool = True) -> Path:
    """Write the run's model to `out` (.onnx) and its description to `out`'s stem + .json;
    with `check`, run both in onnxruntime and torch and raise if they disagree."""
    model, input_size, classes = load_predictor(checkpoint)
    shipped = Shipped(model.float()).eval()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    side = dict(min=32, max=4096)
    dims = {0: torch.export.Dim("batch", max=256), 2: torch.export.Dim("height", **side)}
    dims[3] = torch.export.Dim("width", **side)
    torch.onnx.export(
        shipped,
        (torch.zeros(1, 3, 64, 64),),
        str(out),
        input_names=["images"],
        output_names=["logits"],
        dynamic_shapes={"images": dims},
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    write_json(out.with_suffix(".json"), _description(classes, input_size))
    if check:
        agreement(shipped, out)
    return out


def _description(classes: Classes, input_size: int | None) -> dict:
    return {
        "input": "images: float32 (N, 3, H, W), RGB in 0..255; normalised inside the graph "
        f"with ImageNet's mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}",
        "output": "logits: float32 (N, classes, H, W) at the input size; argmax over classes",
        "resize to": input_size,
        "classes": list(classes.names),
        "colours": [list(c) for c in classes.colours],
        "opset": OPSET,
    }


def agreement(shipped: nn.Module, path: Path) -> tuple[float, float]:
    """(largest logit difference, share of pixels with the same argmax) of the ONNX file against
    torch on random batches of two shapes; raises ValueError beyond the stated tolerance."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    worst, same, total = 0.0, 0, 0
    for shape in ((2, 3, 96, 128), (1, 3, 161, 97)):
        images = 255 * torch.rand(shape, generator=generator)
        onnx_logits = session.run(None, {"images": images.numpy()})[0]
        with torch.no_grad():
            torch_logits = shipped(images).numpy()
        worst = max(worst, float(np.abs(onnx_logits - torch_logits).max()))
        same += int((onnx_logits.argmax(1) == torch_logits.argmax(1)).sum())
        total += torch_logits[:, 0].size
    if worst > LOGIT_TOLERANCE or same / total < ARGMAX_AGREEMENT:
        raise ValueError(
            f"{path}: onnxruntime disagrees with torch (logits up to {worst:.2g} apart, the same "
            f"class on {same / total:.4%} of pixels)"
        )
    return worst, same / total
