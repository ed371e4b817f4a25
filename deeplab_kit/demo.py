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
from deeplab_kit.data import VOCDataset, make_synthetic_voc
from deeplab_kit.engine import RunResult, _transforms, train, write_tables

# The synthetic dataset the demo trains on (see make_synthetic_voc).
DEMO_DATA = dict(num_train=200, num_val=50, size=128, seed=0)


def run_demo(
    out_dir: str | Path = "runs/demo",
    data_root: str | Path = "data/synthetic",
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
    if config is None:
        config = RunConfig.from_recipe("demo")
    config = config.replace(data_root=str(data_root))
    result = train(config, out_dir, progress=progress)
    if result.finished and result.metrics is not None:
        write_tables(out_dir, result.metrics)
        plot_history(result.history, out_dir / "loss_curve.png")
        plot_predictions(result.model, config, out_dir / "predictions.png")
    if progress:
        miou = result.metrics["miou"] if result.metrics else float("nan")
        print(
            f"demo: mIoU {miou:.3f} on {config.val_split} in {time.monotonic() - started:.0f} s; see {out_dir}"
        )
    return result


# --- figures (minimal; to be replaced by deeplab_kit.viz) ---------------------------------


def plot_history(history: list[dict], path: Path) -> None:
    """Train and val loss per epoch, each session on its own shaded band."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, axis = plt.subplots(figsize=(7, 4))
    for session in sorted({row["session"] for row in history}):
        inside = [row["epoch"] for row in history if row["session"] == session]
        axis.axvspan(
            min(inside) - 1, max(inside), alpha=0.08 + 0.08 * (session % 2), color="gray", lw=0
        )
        axis.text((min(inside) - 1 + max(inside)) / 2, 1.0, f"session {session}", ha="center", va="bottom", transform=axis.get_xaxis_transform(), fontsize=8)  # fmt: skip
    axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="train loss")
    axis.plot(epochs, [row["val_loss"] for row in history], "s-", label="val loss")
    axis.set(xlabel="epoch", ylabel="cross-entropy", xlim=(0, max(epochs)))
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_predictions(model, config: RunConfig, path: Path, count: int = 4) -> None:
    """Rows of image | truth | prediction for the first `count` validation images."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from deeplab_kit.voc import IMAGENET_MEAN, IMAGENET_STD, VOC_PALETTE

    dataset = VOCDataset(
        config.data_root,
        split=config.val_split,
        transforms=_transforms(config.val_transforms, config.image_size),
    )
    device = next(model.parameters()).device
    model.eval()
    figure, axes = plt.subplots(count, 3, figsize=(6, 2 * count), squeeze=False)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for row, index in enumerate(range(min(count, len(dataset)))):
        image, mask = dataset[index]
        with torch.inference_mode():
            prediction = model(image[None].to(device))["out"].argmax(1)[0].cpu()
        shown = (image * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()
        for column, (picture, title) in enumerate(
            [
                (shown, "image"),
                (VOC_PALETTE[mask.numpy()], "truth"),
                (VOC_PALETTE[prediction.numpy()], "prediction"),
            ]
        ):
            axes[row, column].imshow(picture)
            axes[row, column].set_axis_off()
            if row == 0:
                axes[row, column].set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
