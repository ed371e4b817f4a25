"""What a machine is, as far as the numbers it computes are concerned: the fingerprint.

Two CPUs with one model name can run different kernels: oneDNN and ATen pick theirs from the
instruction sets (AMX, AVX512-BF16, AVX512, AVX2; on Arm SVE, BF16, I8MM), so the same model
rounds differently, and the fast path differs too. A machine is identified here by what selects
its kernels, never by its model name alone:

    of_machine()                  # {"cpu", "vendor", "arch", "isa", "capability", "onednn", ...}
    same_kernels(stored, here)    # (True, "same ...") or (False, "same model name, other ...")

Reads /proc/cpuinfo where there is one (Linux, x86 or Arm); elsewhere (macOS, Windows) the fields
it cannot know are None, and nothing here raises.
"""

from __future__ import annotations

import functools
import os
import platform
import re

import torch

# Flags that select kernels: x86 (as /proc/cpuinfo spells them), then Arm's "Features".
KERNEL_FLAGS = tuple(
    "amx_bf16 amx_tile amx_fp16 avx512_bf16 avx512_fp16 avx512_vnni avx512f avx_vnni avx2 "  # x86
    "sve2 sve bf16 i8mm asimdhp asimd".split()  # Arm
)
# oneDNN and ATen can be told to stop below the CPU's best instruction set; then they pick the
# kernels of a lesser CPU, so the variables are part of the fingerprint.
KERNEL_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
# The fields that must all match (with the torch version) for results to match bit for bit.
KERNEL_FIELDS = ("cpu", "vendor", "arch", "isa", "capability", "onednn", "variables", "gpu")


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        with open("/proc/cpuinfo") as file:
            text = file.read()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields.get("flags") or fields.get("Features"):
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def onednn_version() -> str | None:
    """oneDNN's version as torch was built with it ("3.12.0"), or None."""
    match = re.search(r"(?:MKL-DNN|oneDNN)\D*v?(\d+\.\d+(?:\.\d+)?)", torch.__config__.show())
    return match.group(1) if match else None


def cpu_capability() -> str | None:
    """The instruction set ATen's CPU kernels were dispatched for ("AVX512", "AVX2", ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):
        return None


def of_machine(device: torch.device | str = "cpu") -> dict:
    """The machine as a plain dict: model name, vendor, architecture, kernel-selecting flags,
    ATen's capability, oneDNN's version, the variables that cap them, cores, torch's threads,
    and the GPU when `device` is one."""
    device = torch.device(device)
    cpu = _cpuinfo()  # x86 and Arm name their fields differently
    name = cpu.get("model name") or cpu.get("Model") or platform.processor() or platform.machine()
    flags = cpu.get("flags") or cpu.get("Features")  # None: the instruction sets are unknown here
    info = {
        "cpu": name,
        "vendor": cpu.get("vendor_id") or cpu.get("CPU implementer"),  # Arm's: a code ("0x41")
        "arch": platform.machine(),
        "isa": None if flags is None else [f for f in KERNEL_FLAGS if f in flags.split()],
        "capability": cpu_capability(),
        "onednn": onednn_version(),
        "variables": {k: os.environ[k] for k in KERNEL_VARIABLES if k in os.environ},
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "gpu": None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    elif device.type == "mps":
        info["gpu"] = "Apple MPS"
    return info


def same_kernels(stored: dict, here: dict) -> tuple[bool, str]:
    """Whether two fingerprints run the same kernels (every `KERNEL_FIELDS` entry equal), and
    why not in words: "same model name, other instruction sets (...)". A field the stored
    record lacks (a record written before it existed) counts as different: unknown."""
    if missing := [key for key in KERNEL_FIELDS if key not in stored]:
        return False, f"the stored machine record lacks {', '.join(missing)}: not known to match"
    differ = [key for key in KERNEL_FIELDS if stored[key] != here.get(key)]
    if not differ:
        return True, "same CPU model, instruction sets, kernels and GPU"
    name = "same model name" if stored["cpu"] == here.get("cpu") else "another CPU model"
    shown = "; ".join(f"{_FIELD_WORDS[k]}: stored {stored[k]}, here {here.get(k)}" for k in differ)
    return False, f"{name}, other {', '.join(_FIELD_WORDS[k] for k in differ)} ({shown})"


_FIELD_WORDS = {
    "cpu": "CPU model",
    "vendor": "vendor",
    "arch": "architecture",
    "isa": "instruction sets",
    "capability": "ATen kernels",
    "onednn": "oneDNN version",
    "variables": "kernel variables",
    "gpu": "GPU",
}


def describe(info: dict) -> str:
    """One line of a fingerprint: "Intel(R) Xeon(R) Processor (GenuineIntel; AMX, AVX512-BF16),
    2 cores, 2 threads", with the GPU first when there is one."""
    kind = f" ({kind_of(info)})" if kind_of(info) else ""
    cores = f"{info.get('cores', '?')} cores, {info.get('threads', '?')} threads"
    text = f"{info.get('cpu', '?')}{kind}, {cores}"
    return f"{info['gpu']}; {text}" if info.get("gpu") else text


def kind_of(info: dict) -> str:
    """The machine kind in the words README's tables use: vendor; AMX or not; AVX512-BF16 or
    not ("" when the record does not say)."""
    isa = info.get("isa")
    vendor = info.get("vendor")
    vendor = {"GenuineIntel": "Intel", "AuthenticAMD": "AMD"}.get(vendor, vendor)
    if isa is None:
        return vendor or ""
    words = [vendor] if vendor else []
    if info.get("arch") in ("aarch64", "arm64"):
        words.append("BF16" if "bf16" in isa else "no BF16")
    else:
        words.append("AMX" if "amx_bf16" in isa else "no AMX")
        words.append("AVX512-BF16" if "avx512_bf16" in isa else "no AVX512-BF16")
    if capped := info.get("variables"):
        words.append(", ".join(f"{k}={v}" for k, v in capped.items()))
    return "; ".join(words)
