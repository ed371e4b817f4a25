"""The fast path: chosen by timing, cached per machine and shape, guarded for accuracy; and the
device "auto" picks."""

import pytest
import torch

from deeplab_kit.training import device as device_module
from deeplab_kit.training import fastpath, machine
from deeplab_kit.training.fastpath import Path

CPU = torch.device("cpu")
FP32, FP32_CL = Path("off", False), Path("off", True)
BF16, BF16_CL = Path("bf16", False), Path("bf16", True)
SECONDS = {FP32: 5.6, FP32_CL: 4.7, BF16: 6.4, BF16_CL: 5.9}  # a CPU where bf16 is slow
LOSSES = torch.tensor([3.10, 3.05, 3.01])


class Timings:
    """A stand-in for the real probe: each path's seconds and losses, and which were run."""

    def __init__(self, seconds=SECONDS, losses=None):
        self.seconds, self.losses, self.ran = seconds, losses or {}, []

    def __call__(self, path):
        self.ran.append(path)
        return self.seconds[path], self.losses.get(path, LOSSES)


def key(**what):
    return fastpath.cache_key(CPU, mode="train", shape=[4, 3, 256, 256], model={"a": 1}, **what)


def test_the_fastest_candidate_is_chosen_cached_and_reused():
    timings = Timings()
    paths = [FP32, FP32_CL, BF16, BF16_CL]
    choice = fastpath.choose(key(), paths, timings)
    assert choice.path == FP32_CL and choice.how == "measured"
    assert timings.ran == paths
    assert choice.seconds["fp32 + channels_last"] == 4.7
    assert "fp32 + channels_last (measured; per step: fp32 + channels_last 4.7 s" in choice.line()
    again = fastpath.choose(key(), paths, Timings())
    assert again.path == FP32_CL and again.how == "cached"
    assert fastpath.cache_path().is_file()

    faster_bf16 = Timings({FP32: 4.4, FP32_CL: 3.9, BF16: 2.5, BF16_CL: 1.9})
    assert fastpath.choose(key(optimizer="sgd"), paths, faster_bf16).path == BF16_CL


def test_the_choice_is_timed_again_for_another_machine_torch_shape_or_model(monkeypatch):
    base = key()
    assert key() == base
    assert fastpath.cache_key(CPU, mode="train", shape=[8, 3, 256, 256], model={"a": 1}) != base
    assert fastpath.cache_key(CPU, mode="train", shape=[4, 3, 256, 256], model={"a": 2}) != base
    assert fastpath.cache_key(CPU, mode="eval", shape=[4, 3, 256, 256], model={"a": 1}) != base
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert key() != base
    monkeypatch.undo()
    real = machine.fingerprint()
    monkeypatch.setattr(machine, "fingerprint", lambda device="cpu": {**real, "isa": ["avx2"]})
    assert key() != base
    monkeypatch.undo()
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(max(1, torch_threads - 1) if torch_threads > 1 else 2)
    try:
        assert key() != base
    finally:
        torch.set_num_threads(torch_threads)


def test_a_bf16_path_that_loses_accuracy_is_left_out():
    drifting = {BF16_CL: LOSSES * 1.05}  # 5% off fp32's losses
    fast_bf16 = {FP32: 4.4, FP32_CL: 3.9, BF16: 2.5, BF16_CL: 1.9}
    choice = fastpath.choose(
        key(guard=1), [FP32, FP32_CL, BF16, BF16_CL], Timings(fast_bf16, drifting)
    )
    assert choice.path == BF16  # the fastest path that keeps accuracy
    assert "differs from fp32 by 5.00%" in choice.excluded["bf16 autocast + channels_last"]


def test_a_path_that_cannot_run_is_left_out_with_its_error():
    def run(path):
        if path.amp == "bf16":
            raise NotImplementedError("no kernel for 'aten::conv' with bfloat16 here")
        return SECONDS[path], LOSSES

    choice = fastpath.choose(key(broken=1), [FP32, FP32_CL, BF16], run)
    assert choice.path == FP32_CL
    assert "NotImplementedError: no kernel" in choice.excluded["bf16 autocast + contiguous"]


def test_explicit_settings_are_not_timed():
    assert fastpath.candidates(CPU, "off", False) == [FP32]
    choice = fastpath.choose(key(), [FP32], Timings())
    assert choice.how == "given"
    assert fastpath.candidates(CPU, "off", "auto") == [FP32, FP32_CL]
    with pytest.raises(ValueError, match="fp16' needs a CUDA device"):
        fastpath.candidates(CPU, "fp16", "auto")


def test_bf16_is_timed_only_where_the_cpu_has_bf16_instructions(monkeypatch):
    monkeypatch.setattr(machine, "native_bf16", lambda info=None: False)
    assert fastpath.candidates(CPU, "auto", "auto") == [FP32, FP32_CL]
    monkeypatch.setattr(machine, "native_bf16", lambda info=None: True)
    assert fastpath.candidates(CPU, "auto", "auto") == [FP32, FP32_CL, BF16, BF16_CL]


def test_cuda_keeps_its_rule(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert fastpath.cuda_rule(torch.device("cuda"), "auto", "auto") == Path("fp16", True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert fastpath.cuda_rule(torch.device("cuda"), "auto", False) == Path("bf16", False)


def test_a_path_reads_back_from_its_label():
    for path in (FP32, FP32_CL, BF16, BF16_CL, Path("fp16", True)):
        assert Path.parse(str(path)) == path
    with pytest.raises(ValueError, match="not a path"):
        Path.parse("bf16")


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
