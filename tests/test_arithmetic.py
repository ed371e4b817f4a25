"""The arithmetic a run computes in: the rule by device and instruction sets, explicit
settings over it, what a resumed run may keep; and the device "auto" picks."""

import pytest
import torch

from deeplab_kit.runtime import arithmetic, fingerprint
from deeplab_kit.runtime import device as device_module
from deeplab_kit.runtime.arithmetic import Arithmetic, allowed, choose, fast_bf16

CPU = torch.device("cpu")
FP32, FP32_CL = Arithmetic("off", False), Arithmetic("off", True)
BF16, BF16_CL = Arithmetic("bf16", False), Arithmetic("bf16", True)
INTEL_AMX = {"vendor": "GenuineIntel", "isa": ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f"]}
INTEL_NO_AMX = {"vendor": "GenuineIntel", "isa": ["avx512_bf16", "avx512f"]}
AMD_BF16 = {"vendor": "AuthenticAMD", "isa": ["avx512_bf16", "avx512f", "avx2"]}
NO_BF16 = {"vendor": "GenuineIntel", "isa": ["avx2"]}


@pytest.mark.parametrize(
    "machine,fast",
    [(INTEL_AMX, True), (INTEL_NO_AMX, False), (AMD_BF16, True), (NO_BF16, False), ({}, False)],
)
def test_bf16_is_the_rule_where_it_was_measured_faster(monkeypatch, machine, fast):
    assert fast_bf16(machine) is fast
    monkeypatch.setattr(fingerprint, "of_machine", lambda device="cpu": machine)
    assert choose(CPU) == (BF16_CL if fast else FP32_CL)


def test_a_cap_on_onednn_is_the_lesser_cpus_rule():
    capped = {**INTEL_AMX, "variables": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}}
    assert not fast_bf16(capped)  # AMX off: Intel's AVX512-BF16, slower than fp32 there
    assert not fast_bf16({**AMD_BF16, "variables": {"ONEDNN_MAX_CPU_ISA": "AVX2"}})
    assert fast_bf16({**INTEL_AMX, "variables": {"ONEDNN_MAX_CPU_ISA": "ALL"}})


def test_explicit_settings_win_over_the_rule(monkeypatch):
    monkeypatch.setattr(fingerprint, "of_machine", lambda device="cpu": AMD_BF16)
    assert choose(CPU, "off", "auto") == FP32_CL
    assert choose(CPU, "auto", False) == BF16
    assert choose(CPU, "bf16", True) == BF16_CL
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        choose(CPU, "fp16")
    with pytest.raises(ValueError, match="amp must be one of"):
        choose(CPU, "half")


def test_cuda_takes_bf16_where_the_gpu_has_it_else_fp16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert choose("cuda") == Arithmetic("fp16", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert choose("cuda", "auto", False) == BF16
    assert arithmetic.rule_for(torch.device("mps")) == FP32


def test_a_resumed_run_keeps_its_arithmetic_unless_the_settings_exclude_it():
    assert allowed(BF16_CL, CPU, "auto", "auto") and allowed(BF16_CL, CPU, "bf16", True)
    assert not allowed(BF16_CL, CPU, "off", "auto") and not allowed(BF16_CL, CPU, "auto", False)
    assert not allowed(Arithmetic("fp16", True), CPU, "auto", "auto")  # trained on a GPU


def test_an_arithmetic_reads_back_from_its_label():
    for value in (FP32, FP32_CL, BF16, BF16_CL, Arithmetic("fp16", True)):
        assert Arithmetic.parse(str(value)) == value
    assert str(BF16_CL) == "bf16 autocast + channels_last"
    with pytest.raises(ValueError, match="not an arithmetic"):
        Arithmetic.parse("bf16")


@pytest.mark.parametrize(
    "cuda,mps,expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")]
)
def test_auto_device_is_cuda_else_mps_else_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(device_module, "mps_available", lambda: mps)
    assert device_module.resolve_device("auto").type == expected
    assert device_module.resolve_device("cpu").type == "cpu"


def test_an_op_without_an_mps_kernel_is_one_line_with_the_ways_on():
    error = NotImplementedError(
        "The operator 'aten::_foo' is not currently implemented for the MPS device."
    )
    line = device_module.mps_missing_kernel(error)
    assert line.startswith("aten::_foo has no kernel on Apple's GPU (mps)")
    assert "--device cpu" in line and "PYTORCH_ENABLE_MPS_FALLBACK=1" in line
    assert device_module.mps_missing_kernel(ValueError("MPS")) is None
    assert device_module.mps_missing_kernel(RuntimeError("a shape mismatch")) is None
