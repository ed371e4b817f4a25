"""TensorBoard: a run's curves and prediction read back from its event files, and a resumed run
that continues them without a gap or a repeat."""

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from deeplab_kit.cli import main
from deeplab_kit.training.loop import train
from deeplab_kit.training.tensorboard import FOLDER, Board
from tests.conftest import tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")


def events(run):
    accumulator = EventAccumulator(str(run / FOLDER), size_guidance={"scalars": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def test_a_run_in_two_sessions_writes_one_curve(synthetic_root, tmp_path):
    data = str(synthetic_root)
    config = tiny_config("demo", data_root=data, epochs=2, session_epochs=1, tensorboard=True)
    train(config, tmp_path, progress=False)
    train(config, tmp_path, progress=False)  # the second session
    board = events(tmp_path)
    history = (tmp_path / "history.csv").read_text().splitlines()[1:]
    for tag in ("loss/train", "loss/val", "miou/val", "lr"):
        assert [e.step for e in board.Scalars(tag)] == [1, 2], tag  # no gap, no repeat
    miou = [float(line.split(",")[4]) for line in history]
    assert [e.value for e in board.Scalars("miou/val")] == pytest.approx(miou)
    assert any(tag.startswith("iou/") for tag in board.Tags()["scalars"])
    [image] = board.Tags()["images"]
    assert [e.step for e in board.Images(image)] == [1, 2]
    assert board.Images(image)[0].width == 3 * 32  # image | truth | prediction


def test_an_epoch_written_before_a_kill_is_replaced_on_resume(tmp_path):
    row = {"train_loss": 1.0, "val_loss": 1.0, "miou": 0.1, "lr": 0.01}
    board = Board(tmp_path)
    for epoch in (1, 2, 3):  # epoch 3 reached TensorBoard, its checkpoint never did
        board.epoch({**row, "epoch": epoch, "miou": 0.1 * epoch}, {})
    board.close()
    resumed = Board(tmp_path, resume_epoch=2)  # the newest checkpoint: after epoch 2
    resumed.epoch({**row, "epoch": 3, "miou": 0.35}, {})
    resumed.close()
    values = [(e.step, round(e.value, 6)) for e in events(tmp_path).Scalars("miou/val")]
    assert values == [(1, 0.1), (2, 0.2), (3, 0.35)]


def test_the_command_line_switch(synthetic_root, tmp_path):
    options = "--recipe demo --epochs 1 --image-size 32 --batch-size 2 --backbone-width 8"
    argv = ["train", "--data", str(synthetic_root), "--out", str(tmp_path), "--tensorboard"]
    argv += (options + " --aspp-channels 8 --device cpu --quiet").split()
    assert main(argv) == 0
    assert list((tmp_path / FOLDER).glob("events.out.tfevents.*"))
