"""Checkpoints: one plain dict per file, written atomically, loaded with weights_only=True.

A run folder's `checkpoints/` holds `epoch-0004.pt` (4 epochs done) and, with step
checkpoints, `epoch-0004-batch-000120.pt` (4 epochs and 120 batches of the 5th done), the last
`keep_last` of them, plus `best.pt` (model and config only) from the epoch of the best val mIoU.

A checkpoint is a dict of tensors and plain data (so `torch.load(..., weights_only=True)`
reads it and never runs code from the file):
    format, version, model, optimizer, scheduler, scaler, epoch, batch, iteration, session,
    best_miou, partial (the unfinished epoch's loss sum and seconds), rng, config
    (RunConfig.to_dict()), arithmetic (the precision and memory layout it trained in, as
    `runtime.arithmetic.Arithmetic`'s fields; checkpoints written before the name call it
    "path"), history (one dict per finished epoch), reason (why it was written: epoch, step,
    session time)
`best.pt` holds format, version, model, config, arithmetic, epoch and miou: enough to evaluate it.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from deeplab_kit.config import TRAINING_FIELDS, ModelConfig, RunConfig, field_names, flat
from deeplab_kit.files import atomic_write

FORMAT = "deeplab-kit"
VERSION = 1
BEST = "best.pt"
RESUME_KEYS = ("model", "optimizer", "scheduler", "epoch", "batch", "iteration", "rng", "history")
# Config fields added after checkpoints existed, with the behaviour of the code before them.
FORMER_BEHAVIOUR = {"aux_lr_factor": 1.0}
_NAME = re.compile(r"^epoch-(\d{4,})(?:-batch-(\d{6,}))?\.pt$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, refused, or from another configuration."""


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """`epoch` finished epochs plus `batch` batches of the next one."""
    return f"epoch-{epoch:04d}.pt" if batch == 0 else f"epoch-{epoch:04d}-batch-{batch:06d}.pt"


def find_checkpoints(folder: str | Path) -> list[Path]:
    """The resumable checkpoints in `folder`, newest (furthest in training) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    matches = [(_NAME.match(path.name), path) for path in folder.iterdir()]
    found = [((int(m[1]), int(m[2] or 0)), path) for m, path in matches if m]
    return [path for _, path in sorted(found, reverse=True)]


# --- writing -------------------------------------------------------------------------------


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write `state` to `path` atomically (`deeplab_kit.files.atomic_write`): a crash or a failed write
    leaves either the old file or the new one."""
    return atomic_write(
        path, lambda file: torch.save({"format": FORMAT, "version": VERSION, **state}, file)
    )


def prune_checkpoints(folder: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` resumable checkpoints (and stale temporary files
    of killed writers); best.pt is never touched. Returns what was deleted."""
    folder = Path(folder)
    removed = find_checkpoints(folder)[keep_last:]
    own = f".tmp-{os.getpid()}"  # this process's own write in progress
    removed += [p for p in folder.glob(".*.pt.tmp-*") if not p.name.endswith(own)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# --- random states ---------------------------------------------------------------------


def rng_state() -> dict:
    """The global torch, CUDA, numpy and python random states, as checkpoint-safe plain data."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": position,
            "has_gauss": has_gauss,
            "gauss": gauss,
        },
        "python": {"version": version, "state": list(python_state), "gauss": python_gauss},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])
    numpy = state["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["gauss"]))
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))


# --- reading -------------------------------------------------------------------------------


def load_checkpoint(path: str | Path, *, map_location="cpu") -> dict:
    """Read and check one checkpoint. Raises CheckpointError naming the file and the problem:
    missing, truncated or corrupt, refused by weights_only (it holds objects that could run
    code), or not a deeplab-kit checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # truncated zip, bad bytes, or objects weights_only refuses
        raise CheckpointError(f"{path}: {_load_problem(error)}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a deeplab-kit checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {state.get('version')!r}; this deeplab-kit reads {VERSION}"
        )
    if missing := [key for key in ("model", "config") if key not in state]:
        raise CheckpointError(f"{path}: incomplete checkpoint, no {missing}")
    return state


def _load_problem(error: Exception) -> str:
    """What torch.load's error means, in one line (never torch's advice to load the file with
    weights_only=False: that would run whatever code the file holds)."""
    text = str(error)
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if isinstance(error, pickle.UnpicklingError) and refused:
        return (
            f"refused: it asks to run {refused[1]}, which weights_only loading does not allow "
            "(not written by deeplab-kit, or tampered with)"
        )
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        return "truncated or corrupt: its bytes are not a PyTorch file (or another format)"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"truncated or corrupt ({type(error).__name__}: {first})"


class Latest(NamedTuple):
    """The checkpoint a run resumes from: its contents and where it was read."""

    state: dict
    path: Path


def load_latest(folder: str | Path, *, map_location="cpu") -> Latest | None:
    """The newest checkpoint in `folder` that loads and can resume a run, with its path.

    An unusable newest file falls back to the previous one with a warning that names it.
    None when the folder holds no checkpoints; a CheckpointError when it holds some but none
    loads (never a silent fresh start).
    """
    candidates = find_checkpoints(folder)
    problems = []
    for path in candidates:
        try:
            state = load_checkpoint(path, map_location=map_location)
            if missing := [key for key in RESUME_KEYS if key not in state]:
                raise CheckpointError(f"{path}: cannot resume from it, no {missing}")
        except CheckpointError as error:
            problems.append(str(error))
            warnings.warn(f"skipping checkpoint {error}; trying the previous one", stacklevel=2)
            continue
        return Latest(state, path)
    if candidates:
        raise CheckpointError(
            f"none of the {len(candidates)} checkpoints in {folder} can be loaded, so the run "
            f"cannot resume; not starting from scratch over them (move them away to do that):\n  "
            + "\n  ".join(problems)
        )
    return None


def check_config(saved: dict, requested: RunConfig, path: str | Path) -> None:
    """Raise CheckpointError naming every setting where the checkpoint's run (`saved`, a
    RunConfig dict, nested or in the older flat form) differs from `requested` in its network
    or its optimisation."""
    # A field the saved run predates: the value the code ran with before the field existed.
    saved, requested = flat(RunConfig.from_dict({**FORMER_BEHAVIOUR, **saved})), flat(requested)
    names = [n for n in field_names(ModelConfig) if n != "pretrained_backbone"]
    names += TRAINING_FIELDS
    if not requested["aux_loss"]:  # the aux settings do nothing without the aux head
        names = [name for name in names if name not in ("aux_weight", "aux_lr_factor")]
    if differ := [name for name in names if saved[name] != requested[name]]:
        lines = [
            f"{name}: checkpoint {saved[name]!r}, requested {requested[name]!r}" for name in differ
        ]
        raise CheckpointError(
            f"{path} was saved by a run with another configuration:\n  "
            + "\n  ".join(lines)
            + "\nPass the checkpoint's values to resume it, or use a new output folder."
        )


def saved_arithmetic(state: dict) -> dict | None:
    """The arithmetic fields a checkpoint trained in (None when it does not say)."""
    return state.get("arithmetic") or state.get("path")
