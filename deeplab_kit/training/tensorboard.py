"""TensorBoard for a run: losses, learning rate, mIoU and per-class IoU per epoch, and one
validation image's prediction, under the run folder (`RUN/tensorboard`).

    board = Board(run_dir, resume_epoch=4)        # a resumed run: the same curves go on
    board.epoch(row, scores, image, truth, prediction)
    %tensorboard --logdir runs                     # in Colab or Jupyter

The step of every value is the epoch. A run's epochs are written before its checkpoint, and a
resumed run first drops whatever was written for epochs after its checkpoint (TensorBoard's
`purge_step`), so a run that was killed and resumed shows each epoch once, none missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

from deeplab_kit.data.classes import IGNORE_INDEX, VOC, Classes
from deeplab_kit.data.transforms import IMAGENET_MEAN, IMAGENET_STD

FOLDER = "tensorboard"


class Board:
    """The run's TensorBoard writer (rank 0 only)."""

    def __init__(
        self, run_dir: str | Path, classes: Classes = VOC, *, resume_epoch: int = 0
    ) -> None:
        self.folder = Path(run_dir) / FOLDER
        self.classes = classes
        purge = resume_epoch + 1 if resume_epoch else None
        self.writer = SummaryWriter(log_dir=str(self.folder), purge_step=purge)

    def epoch(self, row: dict, scores: dict, image=None, truth=None, prediction=None) -> None:
        """One epoch's row of history.csv, its scores (`ConfusionMatrix.compute()`), and,
        when given, one validation image (3, H, W) with its truth and prediction (H, W)."""
        step = int(row["epoch"])
        write = self.writer.add_scalar
        write("loss/train", float(row["train_loss"]), step)
        write("loss/val", float(row["val_loss"]), step)
        write("miou/val", float(row["miou"]), step)
        write("lr", float(row["lr"]), step)
        if (iou := scores.get("iou")) is not None:
            for name, value in zip(self.classes.names, iou, strict=True):
                if not np.isnan(float(value)):
                    write(f"iou/{name}", float(value), step)
        if image is not None:
            strip = _strip(image, truth, prediction, self.classes.palette)
            self.writer.add_image("val/image | truth | prediction", strip, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _strip(image, truth, prediction, palette: np.ndarray) -> np.ndarray:
    """image | truth | prediction side by side, uint8 (H, 3W, 3)."""
    image = torch.as_tensor(image).cpu()
    if image.dtype == torch.uint8:
        rgb = image.permute(1, 2, 0).numpy()
    else:  # normalised floats back to colours
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        rgb = (image.float().permute(1, 2, 0) * std + mean).clamp(0, 1).mul(255).byte().numpy()
    return np.concatenate([rgb, _colour(truth, palette), _colour(prediction, palette)], axis=1)


def _colour(labels, palette: np.ndarray) -> np.ndarray:
    labels = torch.as_tensor(labels).cpu().numpy().astype(np.int64)
    return palette[np.where((labels >= 0) & (labels < 256), labels, IGNORE_INDEX)]
