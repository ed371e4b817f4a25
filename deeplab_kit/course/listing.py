"""The code being taught, on the page: a class's or function's source as the library has it
(printed from the installed package, so a notebook can never drift from the code), and the shapes
of what flows through a module.

    show(ASPP)                                  # the ASPP module's source, with its file and line
    shapes(model.classifier.aspp, features)     # each part's output shape, in the order it runs
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pandas as pd
import torch
from torch import nn


def show(obj) -> None:
    """Print `obj`'s source (a class, a function or a method) headed by where it lives."""
    lines, start = inspect.getsourcelines(obj)
    path = Path(inspect.getsourcefile(obj))
    parts = path.with_suffix("").parts
    module = ".".join(parts[parts.index("deeplab_kit") :]) if "deeplab_kit" in parts else path.name
    print(f"# {module}, line {start}")
    print("".join(lines).rstrip())


def shapes(module: nn.Module, *inputs, depth: int = 1) -> pd.DataFrame:
    """Run `module` on `inputs` (no gradients, eval mode, its mode restored after) and list each
    of its parts down to `depth` levels in the order they ran: name, type, output shape."""
    rows, hooks = [], []
    for name, part in module.named_modules():
        if name and name.count(".") + 1 <= depth:
            hooks.append(part.register_forward_hook(_recorder(rows, name)))
    was_training = module.training
    try:
        with torch.no_grad():
            module.eval()(*inputs)
    finally:
        module.train(was_training)
        for hook in hooks:
            hook.remove()
    return pd.DataFrame(rows, columns=["part", "type", "output shape"]).set_index("part")


def _recorder(rows: list, name: str):
    def record(part, args, output) -> None:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        rows.append((name, type(part).__name__, str(shape)))

    return record
