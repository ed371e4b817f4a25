import os
import pathlib

import pytest
import torch

from deeplab_kit.config import RunConfig
from deeplab_kit.model import build_model, load_model
from deeplab_kit.runtime.checkpoint import (
    BEST,
    CheckpointError,
    check_config,
    checkpoint_name,
    find_checkpoints,
    load_checkpoint,
    load_latest,
    prune_checkpoints,
    save_checkpoint,
)

TINY = dict(backbone="resnet26", backbone_width=16, aspp_channels=16, num_classes=3)


def resumable(epoch: int, batch: int = 0, **extra) -> dict:
    """A small checkpoint with every key a resume needs."""
    return {
        "model": {"w": torch.full((3,), float(epoch))},
        "optimizer": {},
        "scheduler": {},
        "epoch": epoch,
        "batch": batch,
        "iteration": 0,
        "rng": {},
        "history": [],
        "config": RunConfig.from_dict(TINY).to_dict(),
        **extra,
    }


class RunsCode:
    """Unpickling this would call pathlib.Path.touch(marker): code execution from a file."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_save_is_atomic_and_loads_with_weights_only(tmp_path):
    path = save_checkpoint(resumable(1), tmp_path / "ckpt" / checkpoint_name(1))
    assert path.name == "epoch-0001.pt"
    assert [p.name for p in path.parent.iterdir()] == ["epoch-0001.pt"]  # no temporary file left
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 1 and raw["format"] == "deeplab-kit"
    # replacing keeps the file whole: the new content, never a mix
    save_checkpoint(resumable(2), path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3,), 2.0))


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),  # Python's writer on a full disk
        RuntimeError(  # torch's zip writer on a full disk: it does not say why
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        ),
    ],
)
def test_a_full_disk_is_one_line_with_the_space_and_the_old_file_stays(
    tmp_path, monkeypatch, failure
):
    import deeplab_kit.runtime.checkpoint as checkpoint_module

    path = save_checkpoint(resumable(1), tmp_path / checkpoint_name(1))
    before = path.read_bytes()

    def fills_the_disk(obj, file, *args, **kwargs):
        file.write(b"x" * 2500)
        file.flush()
        raise failure

    monkeypatch.setattr(checkpoint_module.torch, "save", fills_the_disk)
    with pytest.raises(OSError) as raised:
        save_checkpoint(resumable(2), path)
    message = str(raised.value)
    assert message.startswith(f"{path}: could not be written (") and "\n" not in message
    assert "2.5 kB written before it stopped" in message and " free there)" in message
    assert path.read_bytes() == before  # the previous file, whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_another_runtime_error_is_not_taken_for_a_full_disk(tmp_path, monkeypatch):
    import deeplab_kit.runtime.checkpoint as checkpoint_module

    def broken(obj, file, *args, **kwargs):
        raise RuntimeError("cannot pickle this")

    monkeypatch.setattr(checkpoint_module.torch, "save", broken)
    with pytest.raises(RuntimeError, match="cannot pickle this"):
        save_checkpoint(resumable(1), tmp_path / checkpoint_name(1))


def test_newest_is_by_training_progress_and_pruning_keeps_last_k(tmp_path):
    for epoch, batch in [(1, 0), (2, 0), (2, 5), (10, 0), (2, 12)]:
        save_checkpoint(resumable(epoch, batch), tmp_path / checkpoint_name(epoch, batch))
    save_checkpoint({"model": {}, "config": {}}, tmp_path / BEST)
    names = [p.name for p in find_checkpoints(tmp_path)]
    assert names == [
        "epoch-0010.pt",
        "epoch-0002-batch-000012.pt",
        "epoch-0002-batch-000005.pt",
        "epoch-0002.pt",
        "epoch-0001.pt",
    ]
    (tmp_path / ".epoch-0011.pt.tmp-999999").write_bytes(b"half written")  # a killed writer's
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.pt",
        "epoch-0002-batch-000012.pt",
        "epoch-0010.pt",
    ]


def corrupt(path: pathlib.Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "empty":
        path.write_bytes(b"")


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty"])
def test_corrupt_newest_falls_back_with_a_warning_naming_it(tmp_path, how):
    save_checkpoint(resumable(1), tmp_path / checkpoint_name(1))
    newest = save_checkpoint(resumable(2), tmp_path / checkpoint_name(2))
    corrupt(newest, how)
    with pytest.warns(UserWarning, match="epoch-0002.pt: truncated or corrupt"):
        state, path = load_latest(tmp_path)
    assert path.name == "epoch-0001.pt" and state["epoch"] == 1


def test_no_silent_fresh_start_when_no_checkpoint_loads(tmp_path):
    assert load_latest(tmp_path) is None  # nothing there: a fresh run
    for epoch in (1, 2):
        corrupt(save_checkpoint(resumable(epoch), tmp_path / checkpoint_name(epoch)), "truncated")
    with (
        pytest.warns(UserWarning),
        pytest.raises(CheckpointError, match="none of the 2 checkpoints"),
    ):
        load_latest(tmp_path)


def test_tampered_checkpoint_is_refused_and_never_runs_code(tmp_path):
    marker = tmp_path / "code-ran"
    good = save_checkpoint(resumable(1), tmp_path / checkpoint_name(1))
    # The payload is real: a plain (unsafe) load runs it.
    torch.save({"x": RunsCode(marker)}, tmp_path / "probe.pt")
    torch.load(tmp_path / "probe.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()

    tampered = tmp_path / checkpoint_name(2)
    torch.save(
        {**resumable(2), "format": "deeplab-kit", "version": 1, "payload": RunsCode(marker)},
        tampered,
    )
    with pytest.raises(CheckpointError, match=r"epoch-0002.pt: refused: it asks to run getattr"):
        load_checkpoint(tampered)
    with pytest.warns(UserWarning, match="epoch-0002.pt: refused"):
        state, path = load_latest(tmp_path)
    assert path == good and not marker.exists()


def test_not_a_checkpoint_and_missing_keys(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a deeplab-kit checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="missing.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"model": {}, "config": {}}, tmp_path / checkpoint_name(3))  # no optimizer...
    with pytest.warns(UserWarning), pytest.raises(CheckpointError, match="cannot resume from it"):
        load_latest(tmp_path)


def test_config_mismatch_names_the_fields_and_the_file(tmp_path):
    saved = RunConfig.from_recipe("report").to_dict()
    requested = RunConfig.from_recipe("report", atrous_rates=(12, 16, 24), lr=1e-3, epochs=300)
    with pytest.raises(CheckpointError) as error:
        check_config(saved, requested, tmp_path / "epoch-0020.pt")
    message = str(error.value)
    assert "epoch-0020.pt" in message
    assert "atrous_rates: checkpoint [8, 12, 16], requested [12, 16, 24]" in message
    assert "lr: checkpoint 0.0001, requested 0.001" in message
    assert "epochs" not in message  # more epochs, another session length: the same run
    check_config(saved, RunConfig.from_recipe("report", epochs=300, session_epochs=5), "x")


def test_load_model_rebuilds_from_the_config_it_carries(tmp_path):
    config = RunConfig.from_dict({**TINY, "atrous_rates": (1, 2)})
    model = build_model(config.model)
    path = save_checkpoint(
        {"model": model.state_dict(), "config": config.to_dict()}, tmp_path / BEST
    )
    loaded = load_model(path)
    assert loaded.config == model.config and not loaded.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
