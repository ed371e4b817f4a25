"""Which path the arithmetic takes: precision (fp32, bf16 or fp16 autocast) and memory format
(contiguous or channels_last), chosen by timing the candidates on this machine.

Instruction-set flags do not say which path is fast: bf16 autocast is twice as fast as fp32 on
a CPU with AMX and slower than fp32 on one with AVX512-BF16 alone. So with `amp="auto"` or
`channels_last="auto"` on a CPU (or Apple's GPU), the kit times a few steps of the actual model
at the actual batch shape in each candidate path, keeps the fastest, and remembers the choice
in a small cache file outside the checkout, keyed by the machine's fingerprint
(`deeplab_kit.training.machine`), its threads, the torch version, the model's configuration, the batch
shape and the mode (training or evaluation). A bf16 candidate must also keep accuracy: its
losses (training) or logits (evaluation) must agree with fp32's on the same batch from the same
weights (`TRAIN_AGREEMENT`, `EVAL_AGREEMENT`).
On CUDA the rule stands: bf16 where the GPU has it, else fp16 with a GradScaler; channels_last.

    choice = choose(key, candidates(device, "auto", "auto"), run_path)
    choice.path          # Path(amp="bf16", channels_last=True)
    choice.line()        # what was chosen and the measured times, for the run's first line
"""

from __future__ import annotations

import hashlib
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path as FilePath

import torch

from deeplab_kit.files import write_json
from deeplab_kit.training import machine
from deeplab_kit.training.config import AMP_CHOICES

CACHE_VARIABLE = "DEEPLAB_KIT_CACHE_DIR"
CACHE_FILE = "fast-paths.json"
# The accuracy guard of a reduced-precision path, as a relative L2 distance from fp32's result
# on the same batch from the same weights: in training, the losses of the first steps (the probe
# trains each path a few steps); in evaluation, the logits. Measured at about 0.1% (training)
# on this project's CPUs; a path that rounds badly lands far outside. (Whole-model gradient
# agreement was tried first and rejected: at initialisation the deep layers' gradients are so
# small that bf16 rounding alone makes them disagree, cosine 0.05, while training agrees.)
TRAIN_AGREEMENT = 0.01
EVAL_AGREEMENT = 0.05


@dataclass(frozen=True)
class Path:
    """One way to run the same arithmetic: autocast dtype ("off", "bf16", "fp16") and layout."""

    amp: str = "off"
    channels_last: bool = False

    def __str__(self) -> str:
        precision = {"off": "fp32", "bf16": "bf16 autocast", "fp16": "fp16 autocast"}[self.amp]
        return f"{precision} + {'channels_last' if self.channels_last else 'contiguous'}"

    @classmethod
    def parse(cls, text: str) -> Path:
        """The path `str(path)` wrote: "bf16 autocast + channels_last" -> Path("bf16", True)."""
        precision, _, layout = str(text).partition(" + ")
        amps = {"fp32": "off", "bf16 autocast": "bf16", "fp16 autocast": "fp16"}
        if precision not in amps or layout not in ("channels_last", "contiguous"):
            raise ValueError(f"not a path: {text!r}")
        return cls(amps[precision], layout == "channels_last")

    @property
    def dtype(self) -> torch.dtype | None:
        return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.amp]

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format


@dataclass
class Choice:
    """The path taken and how it was decided: "given" (explicit settings), "rule" (CUDA),
    "measured" (timed now) or "cached" (timed before on this machine and shape)."""

    path: Path
    how: str
    seconds: dict[str, float] = field(default_factory=dict)  # str(path) -> median s per step
    excluded: dict[str, str] = field(default_factory=dict)  # str(path) -> why it was not timed

    def line(self) -> str:
        """One line for the run's log: the path, and the times it won by."""
        text = f"path: {self.path} ({self.how}"
        if self.seconds:
            times = ", ".join(
                f"{name} {s:.3g} s"
                for name, s in sorted(self.seconds.items(), key=lambda kv: kv[1])
            )
            text += f"; per step: {times}"
        for name, why in self.excluded.items():
            text += f"; {name} not used: {why}"
        return text + ")"

    def to_dict(self) -> dict:
        return {
            "path": asdict(self.path),
            "how": self.how,
            "seconds": self.seconds,
            "excluded": self.excluded,
        }


def check_amp(amp: str) -> str:
    if amp not in AMP_CHOICES:
        raise ValueError(f"amp must be one of {AMP_CHOICES}, got {amp!r}")
    return amp


def check_channels_last(value) -> bool | str:
    if value == "auto" or isinstance(value, bool):
        return value
    raise ValueError(f"channels_last must be true, false or 'auto', got {value!r}")


def cuda_rule(device: torch.device, amp: str, channels_last) -> Path:
    """CUDA's path without timing: bf16 where the GPU has it, else fp16 (with a GradScaler);
    channels_last unless switched off."""
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return Path(amp, True if channels_last == "auto" else channels_last)


def candidates(device: torch.device, amp: str, channels_last) -> list[Path]:
    """The paths worth timing for these settings on `device` (a CPU or Apple's GPU): each
    explicit setting fixes its part; "auto" tries both layouts and, for precision, fp32 and
    bf16 (bf16 only where the CPU has bf16 instructions: emulated, it is never the fast one)."""
    check_amp(amp)
    check_channels_last(channels_last)
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; on the CPU use 'bf16' or 'off'")
    if amp == "auto":
        native = device.type == "mps" or machine.native_bf16()
        precisions = ["off", "bf16"] if native else ["off"]
    else:
        precisions = [amp]
    layouts = [False, True] if channels_last == "auto" else [channels_last]
    return [Path(p, layout) for p in precisions for layout in layouts]


def allowed(path: Path, device: torch.device, amp: str, channels_last) -> bool:
    """Whether `path` is one these settings may take on `device` (a resumed run keeps the path
    it started with unless the settings now exclude it)."""
    amps = {"auto": ("off", "bf16", "fp16") if device.type == "cuda" else ("off", "bf16")}
    return path.amp in amps.get(amp, (amp,)) and channels_last in ("auto", path.channels_last)


def cache_path() -> FilePath:
    """Where chosen paths are remembered: $DEEPLAB_KIT_CACHE_DIR, else the user's cache folder
    (XDG_CACHE_HOME or ~/.cache)/deeplab-kit; never inside the checkout."""
    if os.environ.get(CACHE_VARIABLE):
        return FilePath(os.environ[CACHE_VARIABLE]) / CACHE_FILE
    base = os.environ.get("XDG_CACHE_HOME") or FilePath.home() / ".cache"
    return FilePath(base) / "deeplab-kit" / CACHE_FILE


def cache_key(device: torch.device, **what) -> str:
    """A short hash of everything a timing depends on: the kernels (the fingerprint), torch's
    threads and version, and `what` (model configuration, batch shape, mode, ...)."""
    info = machine.fingerprint(device)
    kernels = {k: info[k] for k in machine.KERNEL_FIELDS}
    data = {
        "kernels": kernels,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device.type,
        **what,
    }
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _read_cache() -> dict:
    try:
        return json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}


def _remember(key: str, choice: Choice, about: dict) -> None:
    entries = _read_cache()
    entries[key] = {**choice.to_dict(), "about": about, "measured": time.time()}
    try:
        write_json(cache_path(), entries)
    except OSError:  # a read-only home: the choice holds for this process, and is timed again
        pass


def choose(
    key: str,
    paths: Sequence[Path],
    run_path: Callable[[Path], tuple[float, torch.Tensor]],
    *,
    tolerance: float = TRAIN_AGREEMENT,
    about: dict | None = None,
) -> Choice:
    """The fastest of `paths` that keeps accuracy: from the cache under `key` when it holds one
    of them, else measured and remembered.

    `run_path(path) -> (seconds per step, signature)` runs the actual model in that path from
    the same weights on the same batch; the signature (the losses of the first steps, or the
    logits) of each bf16 or fp16 path must agree with the fp32 path's within `tolerance`
    (relative L2 distance), or that path is left out with the reason. A path that raises (an op
    without a kernel for it, say, or a loss that is not finite) is left out with the error; at
    least one must run.
    """
    if len(paths) == 1:
        return Choice(paths[0], "given")
    cached = _read_cache().get(key)
    if cached:
        path = Path(**cached["path"])
        if path in paths:
            return Choice(path, "cached", cached.get("seconds", {}), cached.get("excluded", {}))
    seconds, signatures, excluded = {}, {}, {}
    for path in paths:
        try:
            seconds[path], signatures[path] = run_path(path)
        except (RuntimeError, NotImplementedError, FloatingPointError) as error:
            excluded[str(path)] = f"{type(error).__name__}: {str(error).splitlines()[0]}"
    reference = next((signatures[p] for p in signatures if p.amp == "off"), None)
    for path in list(seconds):
        if path.amp != "off" and reference is not None:
            error = relative_error(signatures[path], reference)
            if error > tolerance:
                excluded[str(path)] = f"differs from fp32 by {error:.2%} (guard {tolerance:.0%})"
                del seconds[path]
    if not seconds:
        raise RuntimeError(f"no path runs here: {excluded}")
    fastest = min(seconds, key=seconds.get)
    times = {str(p): round(s, 4) for p, s in seconds.items()}
    choice = Choice(fastest, "measured", times, excluded)
    _remember(key, choice, about or {})
    return choice


def relative_error(signature: torch.Tensor, reference: torch.Tensor) -> float:
    """||signature - reference|| / ||reference||, in float64."""
    a, b = signature.double().flatten(), reference.double().flatten()
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


def median_seconds(
    run: Callable[[], object], device: torch.device, *, budget: float = 1.0
) -> float:
    """Median wall time of `run()` after one warm-up call: at least 2 timed calls, more (up to
    5) while they add up to less than `budget` seconds."""
    run()
    _synchronize(device)
    times: list[float] = []
    while len(times) < 2 or (len(times) < 5 and sum(times) < budget):
        start = time.perf_counter()
        run()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
