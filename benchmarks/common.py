"""What every benchmark prints first: the command that ran and the machine it ran on."""

from __future__ import annotations

import platform
import statistics
import sys
import time

import torch

from deeplab_kit.provenance import cpu_name


def print_header(title: str, *extra: str) -> None:
    """`# title`, the command, the machine, the software, then any extra lines."""
    print(f"# {title}")
    print(f"# command: python {' '.join(sys.argv)}")
    print(
        f"# machine: {cpu_name()}, {torch.get_num_threads()} torch threads, {platform.platform()}"
    )
    if torch.cuda.is_available():
        print(f"# gpu: {torch.cuda.get_device_name()}")
    import torchvision

    print(
        f"# python {platform.python_version()}, torch {torch.__version__}, torchvision {torchvision.__version__}"
    )
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
