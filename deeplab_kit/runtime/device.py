"""Where a run computes: the device ("auto": CUDA, else Apple's GPU, else the CPU), autocast,
determinism, and what to say when an op has no kernel on Apple's GPU. Which precision and
memory format a run takes is `deeplab_kit.runtime.arithmetic`'s choice.
"""

from __future__ import annotations

import contextlib
import os
from contextlib import contextmanager

import torch

MPS_FALLBACK = "PYTORCH_ENABLE_MPS_FALLBACK"


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend and backend.is_available())


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """ "auto" is the CUDA GPU when there is one, else Apple's GPU (mps), else the CPU; anything
    else is passed to torch ("cpu", "cuda:1", "mps")."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    return torch.device(name)


def mps_missing_kernel(error: BaseException) -> str | None:
    """For an error raised on Apple's GPU by an op that has no MPS kernel, one line saying which
    op and the two ways on; None for any other error."""
    text = str(error)
    if "MPS" not in text or not isinstance(error, (NotImplementedError, RuntimeError)):
        return None
    op = text.split("'")[1] if text.count("'") >= 2 else "an operator"
    return (
        f"{op} has no kernel on Apple's GPU (mps) in torch {torch.__version__}: run with "
        f"--device cpu, or set {MPS_FALLBACK}=1 to run just that op on the CPU (PyTorch's "
        "documented fallback, slower)"
    )


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def determinism(enabled: bool, device: torch.device):
    """With config.deterministic: deterministic cuDNN/cuBLAS kernels for the run, restored after."""
    if not enabled:
        yield
        return
    algorithms = torch.are_deterministic_algorithms_enabled()
    cudnn = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(algorithms)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
