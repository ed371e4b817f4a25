"""Which arithmetic a run computes in: precision (fp32, or bf16 / fp16 autocast) and memory
layout (contiguous or channels_last), decided once, before training or evaluating, by a rule
from the device and the CPU's instruction sets.

    arithmetic = choose("cpu")                      # Arithmetic(amp="bf16", channels_last=True) on AMX
    str(arithmetic)                                 # "bf16 autocast + channels_last"
    Arithmetic.parse("fp32 + channels_last")        # back from what a history or record wrote

The rule, measured (benchmarks/bench_speed.py prints every candidate's time beside torchvision's
plain step; README's performance section has the tables):
- CUDA: bf16 autocast where the GPU has it, else fp16 with a GradScaler; channels_last.
- A CPU with AMX (Intel Xeon): bf16 + channels_last (2.5x fp32 there).
- An AMD CPU with AVX512-BF16 (EPYC): bf16 + channels_last (1.8x fp32 + channels_last on
  DeepLabv3-ResNet50, and the fastest of the four paths for the kit's small models too).
- Any other CPU, Intel's AVX512-BF16 without AMX included (bf16 there is slower than fp32):
  fp32 + channels_last. Apple's GPU: fp32, contiguous.
`amp` and `channels_last` given explicitly override the rule; "auto" takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deeplab_kit.config import AMP_CHOICES
from deeplab_kit.runtime import fingerprint


@dataclass(frozen=True)
class Arithmetic:
    """One way to compute the same network: autocast dtype ("off", "bf16", "fp16") and layout."""

    amp: str = "off"
    channels_last: bool = False

    def __str__(self) -> str:
        precision = {"off": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.amp]
        return f"{precision} + {'channels_last' if self.channels_last else 'contiguous'}"

    @classmethod
    def parse(cls, text: str) -> Arithmetic:
        """What `str` wrote: "bf16 autocast + channels_last" -> Arithmetic("bf16", True)."""
        precision, _, layout = str(text).partition(" + ")
        amps = {"fp32": "off", "bf16 autocast": "bf16", "fp16 autocast": "fp16"}
        if precision not in amps or layout not in ("channels_last", "contiguous"):
            raise ValueError(f"not an arithmetic: {text!r}")
        return cls(amps[precision], layout == "channels_last")

    @property
    def dtype(self) -> torch.dtype | None:
        return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


FP32 = Arithmetic()  # fp32, contiguous: what plain PyTorch computes in


def choose(
    device: torch.device | str, amp: str = "auto", channels_last: bool | str = "auto"
) -> Arithmetic:
    """The arithmetic for `device`: the explicit settings where given, the rule (module
    docstring) where "auto"."""
    device = torch.device(device)
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; on the CPU use 'bf16' or 'off'")
    if channels_last != "auto" and not isinstance(channels_last, bool):
        raise ValueError(f"channels_last must be true, false or 'auto', got {channels_last!r}")
    rule = rule_for(device)
    return Arithmetic(
        rule.amp if amp == "auto" else amp,
        rule.channels_last if channels_last == "auto" else channels_last,
    )


def rule_for(device: torch.device) -> Arithmetic:
    if device.type == "cuda":
        return Arithmetic("bf16" if torch.cuda.is_bf16_supported() else "fp16", True)
    if device.type == "mps":
        return Arithmetic("off", False)
    return Arithmetic("bf16" if fast_bf16(fingerprint.of_machine()) else "off", True)


def fast_bf16(info: dict) -> bool:
    """Whether bf16 autocast is the fast path on this CPU: AMX, or AMD's AVX512-BF16 (measured
    faster than fp32 there; on Intel's AVX512-BF16 without AMX it is slower), unless oneDNN was
    told to stop below its bf16 kernels."""
    isa = set(info.get("isa") or [])
    variables = info.get("variables") or {}
    limit = (variables.get("ONEDNN_MAX_CPU_ISA") or variables.get("DNNL_MAX_CPU_ISA") or "").upper()
    if limit and limit != "ALL" and "BF16" not in limit and "AMX" not in limit:
        return False
    if limit and "AMX" not in limit and limit != "ALL":
        isa -= {"amx_bf16"}  # capped below AMX: oneDNN runs the AVX512-BF16 kernels
    return "amx_bf16" in isa or ("avx512_bf16" in isa and info.get("vendor") == "AuthenticAMD")


def allowed(arithmetic: Arithmetic, device: torch.device, amp: str, channels_last) -> bool:
    """Whether `arithmetic` is one these settings may take on `device` (a resumed run keeps the
    arithmetic it started with unless the settings now exclude it or the device lacks it)."""
    amps = ("off", "bf16", "fp16") if device.type == "cuda" else ("off", "bf16")
    precision = arithmetic.amp in amps and amp in ("auto", arithmetic.amp)
    return precision and channels_last in ("auto", arithmetic.channels_last)
