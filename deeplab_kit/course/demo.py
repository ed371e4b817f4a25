"""The demo: the whole pipeline on the generated VOC-format dataset, on a laptop CPU, in minutes.

`run_demo(out_dir)` generates the synthetic dataset if absent, trains the `demo` recipe, and
leaves a run folder with metrics.json, history.csv, the metrics tables (metrics.md,
metrics.csv, per_class.csv), loss_curve.png and predictions.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from deeplab_kit.config import RunConfig
from deeplab_kit.course.figures import plot_history, plot_predictions
from deeplab_kit.data.synthetic import DEFAULT_ROOT, make_synthetic_voc
from deeplab_kit.data.transforms import transforms_for
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.files import atomic_write
from deeplab_kit.runtime.run_files import write_tables
from deeplab_kit.training.loop import RunResult, train

# The synthetic dataset the demo trains on (see make_synthetic_voc).
DEMO_DATA = dict(num_train=3000, num_val=100, size=96, seed=0)


def run_demo(
    out_dir: str | Path = "runs/demo",
    data_root: str | Path = DEFAULT_ROOT,
    *,
    config: RunConfig | None = None,
    data: dict | None = None,
    progress: bool = True,
) -> RunResult:
    """Generate the data if absent, train (or resume) the demo run, write its figures/tables."""
    started = time.monotonic()
    data_root, out_dir = Path(data_root), Path(out_dir)
    if not (data_root / "VOCdevkit" / "VOC2012").is_dir():
        make_synthetic_voc(data_root, **{**DEMO_DATA, **(data or {})})
    config = (config or RunConfig.from_recipe("demo")).replace(data_root=str(data_root))
    if config.cache_dir is None:  # decode and resize once: about 2 s an epoch less on 2 cores
        config = config.replace(cache_dir=str(data_root / "cache"))
    result = train(config, out_dir, progress=progress)
    if result.finished and result.metrics is not None:
        write_tables(out_dir, result.metrics)
        save_figures(result, config, out_dir)
    if progress:
        miou = result.metrics["miou"] if result.metrics else float("nan")
        print(
            f"demo: mIoU {miou:.3f} on {config.val_split} in {time.monotonic() - started:.0f} s; see {out_dir}"
        )
    return result


def save_figure(fig, path: Path) -> None:
    """A figure as a PNG at 100 dpi, written atomically."""
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=100))


def save_figures(result: RunResult, config: RunConfig, out_dir: Path, count: int = 4) -> None:
    """loss_curve.png (sessions shaded) and predictions.png (image | truth | prediction)."""
    save_figure(plot_history(out_dir), out_dir / "loss_curve.png")
    dataset = VOCDataset(
        config.data_root,
        split=config.val_split,
        transforms=transforms_for(config.val_transforms, config.image_size),
    )
    images, truths = zip(*(dataset[i] for i in range(min(count, len(dataset)))), strict=True)
    model = result.model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        predictions = model(torch.stack(images).to(device))["out"].argmax(1).cpu()  # (N, H, W)
    save_figure(plot_predictions(images, truths, predictions), out_dir / "predictions.png")
