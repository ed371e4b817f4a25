"""What every benchmark prints first: the command that ran and the machine it ran on."""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from deeplab_kit.runtime import fingerprint


def print_header(title: str, *extra: str, versions: dict[str, str] | None = None) -> None:
    """`# title`, the command, the machine (its kind: vendor, AMX or not, AVX512-BF16 or not),
    the software (plus `versions`, e.g. {"torchmetrics": ...}), then any extra lines."""
    import torchvision

    print(f"# {title}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(f"# machine: {fingerprint.describe(fingerprint.of_machine())}; {platform.platform()}")
    print(f"# kernels: ATen {fingerprint.cpu_capability()}, oneDNN {fingerprint.onednn_version()}")
    if torch.cuda.is_available():
        print(f"# gpu: {torch.cuda.get_device_name()}")
    software = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        **(versions or {}),
    }
    print("# " + ", ".join(f"{name} {version}" for name, version in software.items()))
    for line in extra:
        print(f"# {line}")


def interleaved_medians(functions: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each function, called in turn in every round so that a busy
    machine slows all of them alike."""
    for _ in range(warmup):
        for function in functions.values():
            function()
    times: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}
