"""The machine fingerprint: what selects the kernels, read safely wherever the kit runs."""

import pytest
import torch

from deeplab_kit.runtime import fingerprint
from deeplab_kit.runtime.arithmetic import fast_bf16

XEON_AMX = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile
"""
XEON_NO_AMX = XEON_AMX.replace(" amx_bf16 amx_tile", "")
GRAVITON = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid sve bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


@pytest.fixture
def cpuinfo(monkeypatch, tmp_path):
    """Pretend /proc/cpuinfo says `text` (None: there is none, as on macOS)."""

    def pretend(text):
        real_open = open

        def fake_open(path, *args, **kwargs):
            if str(path) == "/proc/cpuinfo":
                if text is None:
                    raise FileNotFoundError(path)
                path = tmp_path / "cpuinfo"
                path.write_text(text)
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", fake_open)
        fingerprint._cpuinfo.cache_clear()
        return fingerprint.of_machine()

    yield pretend
    fingerprint._cpuinfo.cache_clear()


def test_an_x86_fingerprint_holds_the_kernel_flags(cpuinfo):
    info = cpuinfo(XEON_AMX)
    assert info["cpu"] == "Intel(R) Xeon(R) Processor" and info["vendor"] == "GenuineIntel"
    assert info["isa"] == ["amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx512f", "avx2"]
    assert info["capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["onednn"] and info["threads"] == torch.get_num_threads()
    assert fingerprint.kind_of(info) == "Intel; AMX; AVX512-BF16"


def test_same_model_name_other_instruction_sets_is_not_the_same_machine(cpuinfo):
    amx, no_amx = cpuinfo(XEON_AMX), cpuinfo(XEON_NO_AMX)
    same, why = fingerprint.same_kernels(amx, no_amx)
    assert not same
    assert why.startswith("same model name, other instruction sets")
    assert "amx_bf16" in why
    assert fingerprint.same_kernels(amx, dict(amx)) == (
        True,
        "same CPU model, instruction sets, kernels and GPU",
    )
    assert fingerprint.kind_of(no_amx) == "Intel; no AMX; AVX512-BF16"


def test_a_capped_onednn_is_another_machine(cpuinfo, monkeypatch):
    plain = cpuinfo(XEON_AMX)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    capped = fingerprint.of_machine()
    same, why = fingerprint.same_kernels(plain, capped)
    assert not same and "kernel variables" in why
    assert not fast_bf16(capped)  # oneDNN told to stop below its bf16 kernels


def test_a_record_without_the_kernel_fields_is_not_known_to_match(cpuinfo):
    old = {"cpu": "Intel(R) Xeon(R) Processor", "cores": 2, "threads": 2}
    same, why = fingerprint.same_kernels(old, cpuinfo(XEON_AMX))
    assert not same and "lacks" in why


def test_arm_and_a_missing_cpuinfo_never_crash(cpuinfo):
    arm = cpuinfo(GRAVITON)
    assert arm["vendor"] == "0x41"
    assert arm["isa"] == ["sve", "bf16", "i8mm", "asimdhp", "asimd"]
    assert not fast_bf16(arm)  # not measured on Arm: fp32, the safe choice
    mac = cpuinfo(None)
    assert mac["isa"] is None and mac["vendor"] is None and mac["cpu"]
    assert not fast_bf16(mac)
    assert fingerprint.describe(mac)  # one line, whatever is unknown
