"""The atrous-rate ablation: one model trained once per set of ASPP rates, everything else equal.

    table = run_ablation(SETTINGS, RunConfig.from_recipe("demo", data_root=...), "runs/ablation")
    python -m deeplab_kit ablation --out runs/ablation [--recipe demo] [--epochs N]

Each setting trains in its own run folder (out_dir/<setting>/, resumable like any run), and the
table gets one row per setting: the rates asked for, the rates the trained model really has
(read back from its modules with `model.describe`), the feature map the rates act on, the share
of the 3x3 weights that fall inside it (`atrous.valid_share`), and the validation scores.
`out_dir/ablation.csv` holds the table and `out_dir/ablation.json` the table with what produced
it (command, machine, seconds), which is what notebook 02 shows as its stored result.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from deeplab_kit.atrous import feature_size, valid_share
from deeplab_kit.model import describe

# The five settings of notebook 02: label -> ASPP rates.
SETTINGS: dict[str, tuple[int, int, int]] = {
    "no atrous": (1, 1, 1),  # three plain 3x3 convolutions
    "paper": (6, 12, 18),  # DeepLabv3 at output stride 16
    "report": (8, 12, 16),  # the report's model
    "report variant": (12, 16, 24),  # the report's other try, which "did not yield" better
    "OS8 rates": (12, 24, 36),  # the paper's rates doubled for output stride 8 (torchvision's)
}
COLUMNS = (
    "setting", "rates", "model rates", "feature map", "valid weights", "valid per branch",
    "miou", "pixel_accuracy", "epochs", "train seconds", "finished",
)  # fmt: skip


def setting_folder(label: str) -> str:
    """A folder name for a setting label: "report variant" -> "report-variant"."""
    slug = re.sub(r"[^\w.]+", "-", label.strip().lower()).strip("-")
    if not slug:
        raise ValueError(f"setting label {label!r} gives an empty folder name")
    return slug


def rate_geometry(image_size: int, output_stride: int, rates: Sequence[int]) -> dict:
    """The feature map the ASPP rates act on for a square input, and the share of each 3x3
    branch's weights that read it rather than its zero padding (mean over the branches too)."""
    size = feature_size(int(image_size), int(output_stride))
    shares = [valid_share(size, int(rate)) for rate in rates]
    return {
        "feature map": f"{size}x{size}",
        "valid weights": sum(shares) / len(shares),
        "valid per branch": " / ".join(f"{share:.0%}" for share in shares),
    }


def run_ablation(
    settings: Mapping[str, Sequence[int]],
    base_config,
    out_dir: str | os.PathLike,
    *,
    train_set=None,
    val_set=None,
    progress: bool = False,
    keep_checkpoints: bool = True,
    command: str | None = None,
) -> pd.DataFrame:
    """Train `base_config` once per setting (its `atrous_rates` replaced) and tabulate.

    Args:
        settings: label -> ASPP rates, e.g. `SETTINGS`.
        base_config: a `RunConfig`; only `atrous_rates` changes between settings.
        out_dir: one run folder per setting is made under it, plus ablation.csv/.json.
        train_set, val_set: datasets to use instead of `base_config.data_root`'s.
        progress: progress bars and per-epoch lines of the engine.
        keep_checkpoints: False deletes a setting's checkpoints once it has finished (its
            history.csv, metrics.json and config.json stay); a later call with the same
            configuration then reuses its row untrained (another configuration is an error).
        command: how this was started, recorded in ablation.json (default: sys.argv).

    A setting's run resumes where an earlier call stopped (as `train` does); the table's
    "finished" says whether all its epochs are done (False when a session limit ended it).
    Returns the table: one row per setting, in the order given.
    """
    from deeplab_kit.checkpoint import check_config
    from deeplab_kit.engine import build_run_model, train
    from deeplab_kit.runs import read_metrics

    if not settings:
        raise ValueError("no settings to run")
    out_dir = Path(out_dir)
    folders = [setting_folder(label) for label in settings]
    if len(set(folders)) != len(folders):
        raise ValueError(f"setting labels must give distinct folder names, got {folders}")
    started = time.monotonic()
    rows = []
    for (label, rates), folder in zip(settings.items(), folders, strict=True):
        config = base_config.replace(atrous_rates=tuple(int(r) for r in rates))
        run = out_dir / folder
        if _finished_without_checkpoints(run, config):
            # Pruned earlier: the scores are on disk; the rates come from the architecture.
            check_config(json.loads((run / "config.json").read_text()), config.to_dict(), run)
            model = build_run_model(config, pretrained=False)
            history = pd.read_csv(run / "history.csv").to_dict("records")
            metrics, finished = read_metrics(run), True
        else:
            result = train(config, run, progress=progress, train_set=train_set, val_set=val_set)
            model, history, metrics = result.model, result.history, result.metrics
            finished = result.finished
            if finished and not keep_checkpoints:  # keep the config, to check a later reuse
                (run / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
                shutil.rmtree(run / "checkpoints", ignore_errors=True)
        info = describe(model)  # what the trained network really is
        rows.append(
            {
                "setting": label,
                "rates": tuple(int(r) for r in rates),
                "model rates": tuple(info["atrous_rates"]),
                **rate_geometry(config.image_size, info["output_stride"], info["atrous_rates"]),
                "miou": (metrics or {}).get("miou"),
                "pixel_accuracy": (metrics or {}).get("pixel_accuracy"),
                "epochs": len(history),
                "train seconds": round(sum(float(row["seconds"]) for row in history), 1),
                "finished": finished,
            }
        )
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "ablation.csv", index=False)
    record = {
        "command": command or "python -m deeplab_kit " + shlex.join(sys.argv[1:]),
        "machine": machine(base_config.device),
        "seconds": round(time.monotonic() - started, 1),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": base_config.to_dict(),
        "rows": table.to_dict("records"),
    }
    (out_dir / "ablation.json").write_text(json.dumps(record, indent=2, default=_plain) + "\n")
    return table


def _plain(value):
    """numpy scalars and tuples as JSON (exact: floats keep every digit)."""
    return value.item() if hasattr(value, "item") else list(value)


def _finished_without_checkpoints(run: Path, config) -> bool:
    """A setting that finished earlier and whose checkpoints were then deleted."""
    from deeplab_kit.checkpoint import find_checkpoints

    if find_checkpoints(run / "checkpoints") or not (run / "metrics.json").is_file():
        return False
    if not (run / "config.json").is_file():
        raise FileNotFoundError(
            f"{run}: a finished setting without checkpoints or config.json; its configuration "
            "cannot be checked, so use a new output folder"
        )
    history = pd.read_csv(run / "history.csv") if (run / "history.csv").is_file() else None
    return history is not None and len(history) >= config.epochs


def read_ablation(path: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """An ablation.json (or the folder holding it): the table and what produced it."""
    path = Path(path)
    path = path / "ablation.json" if path.is_dir() else path
    try:
        record = json.loads(path.read_text())
        table = pd.DataFrame(record["rows"], columns=list(COLUMNS))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no ablation results here") from None
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path}: not an ablation.json written by run_ablation ({error})"
        ) from None
    for column in ("rates", "model rates"):
        table[column] = table[column].map(tuple)
    return table, {k: v for k, v in record.items() if k != "rows"}


def machine(device: str = "auto") -> str:
    """One line about where a result was measured: CPU model and cores, GPU, torch version."""
    from deeplab_kit.device import resolve_device

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            names = [
                line.split(":", 1)[1].strip() for line in file if line.startswith("model name")
            ]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    where = f"{cpu}, {os.cpu_count()} cores"
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        where = f"{torch.cuda.get_device_name(resolved)}; {where}"
    return f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def percent(table: pd.DataFrame, column: str = "miou") -> dict[str, float]:
    """{setting label with its rates: the column in %}, as `viz.plot_ablation` takes it."""
    return {
        f"{row.setting} {tuple(row.rates)}": 100.0 * float(getattr(row, column))
        for row in table.itertuples()
    }
