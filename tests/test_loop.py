"""The engine on CPU at toy scale: the train step, sessions, exact resume, kills, NaN, DDP."""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from deeplab_kit.config import MODEL_PRESETS, RunConfig
from deeplab_kit.course.figures import read_history
from deeplab_kit.data.transforms import normalize
from deeplab_kit.model import build_model
from deeplab_kit.runtime.arithmetic import Arithmetic
from deeplab_kit.runtime.checkpoint import CheckpointError, find_checkpoints, load_checkpoint
from deeplab_kit.runtime.distributed import Context
from deeplab_kit.training import build, loop
from deeplab_kit.training.build import build_run_model, run_loaders
from deeplab_kit.training.loop import TrainingDiverged, train
from deeplab_kit.training.schedule import make_scheduler
from deeplab_kit.training.step import TrainStep
from tests.conftest import tiny_config

FP32_CL, BF16_CL = Arithmetic("off", True), Arithmetic("bf16", True)

ROOT = Path(__file__).resolve().parents[1]
# conftest's tiny run with 3 classes and 4 epochs: on 4 images of 32 px in batches of 2, 2 steps
# an epoch. Dropout (p=0.5 in ASPP) is active.
RUN = dict(num_classes=3, atrous_rates=(1, 2), lr=1e-3, epochs=4)


def tiny(**overrides) -> RunConfig:
    return tiny_config(**{**RUN, **overrides})


TINY_MODEL = tiny().model


class Squares(Dataset):
    """A toy segmentation set in memory: a bright square of class 1 or 2 on noise."""

    def __init__(self, count: int, size: int = 32, offset: int = 0, nan: bool = False) -> None:
        self.count, self.size, self.offset, self.nan = count, size, offset, nan

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        generator = torch.Generator().manual_seed(1000 * self.offset + index)
        label = int(torch.randint(1, 3, (1,), generator=generator))
        y, x = torch.randint(0, self.size // 2, (2,), generator=generator).tolist()
        mask = torch.zeros(self.size, self.size, dtype=torch.int64)  # (H, W)
        mask[y : y + self.size // 2, x : x + self.size // 2] = label
        image = 0.3 * torch.randn(3, self.size, self.size, generator=generator)  # (3, H, W)
        image[label - 1] += 2.0 * (mask == label)
        if self.nan:
            image[:] = float("nan")
        return image, mask


DATA = dict(train_set=Squares(4), val_set=Squares(2, offset=1))


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: 4 epochs in one session, no step checkpoints."""
    out = tmp_path_factory.mktemp("uninterrupted")
    return train(tiny(), out, progress=False, **DATA)


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    for name, tensor in state_a.items():
        assert torch.equal(tensor, state_b[name]), f"{name} differs"


# --- the train step ------------------------------------------------------------------------


def test_train_step_adds_the_aux_loss_at_torchvisions_weight():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, aux_loss=True)
    images, targets = Squares(2)[0][0][None].repeat(2, 1, 1, 1), torch.randint(0, 3, (2, 32, 32))
    criterion = nn.CrossEntropyLoss()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        outputs = model(images)
        expected = criterion(outputs["out"], targets) + 0.5 * criterion(outputs["aux"], targets)
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.1), device="cpu")
    assert not step.scaler.is_enabled()  # no GradScaler on a CPU
    with torch.random.fork_rng():
        torch.manual_seed(1)  # the same dropout masks
        loss = step(images, targets)
    torch.testing.assert_close(loss, expected.detach())
    assert any(not torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))


def test_the_train_step_computes_in_the_arithmetic_it_is_given():
    torch.manual_seed(0)
    model = build_model(TINY_MODEL)
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    targets = torch.randint(0, 3, (2, 32, 32))
    seen = []
    model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    step = TrainStep(model, torch.optim.Adam(model.parameters()), device="cpu", arithmetic=BF16_CL)
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    before = model.state_dict()["classifier.4.weight"].clone()
    loss = step(images, targets)
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32  # the loss in fp32
    assert not torch.equal(before, model.state_dict()["classifier.4.weight"])


def test_a_run_decides_its_arithmetic_once_and_records_it(tmp_path, monkeypatch):
    decided = []

    def rule(device, amp="auto", channels_last="auto"):
        decided.append((amp, channels_last))
        return FP32_CL

    monkeypatch.setattr(build, "choose", rule)
    result = train(
        tiny(amp="auto", channels_last="auto", epochs=2), tmp_path, progress=False, **DATA
    )
    assert decided == [("auto", "auto")]  # once, before training
    assert [row["arithmetic"] for row in result.history] == [str(FP32_CL)] * 2
    saved = load_checkpoint(tmp_path / "checkpoints" / "epoch-0002.pt")
    assert saved["arithmetic"] == {"amp": "off", "channels_last": True}
    assert read_history(tmp_path / "history.csv")["arithmetic"].tolist() == [str(FP32_CL)] * 2


def test_the_aux_head_learns_at_its_own_rate():
    from deeplab_kit.training.schedule import make_optimizer

    model = build_model(TINY_MODEL, aux_loss=True)
    config = tiny(aux_loss=True, lr=0.01, aux_lr_factor=10.0)
    main, aux = make_optimizer(model, config).param_groups
    assert (main["lr"], aux["lr"]) == (0.01, pytest.approx(0.1))
    assert {id(p) for p in aux["params"]} == {id(p) for p in model.aux_classifier.parameters()}
    assert len(main["params"]) + len(aux["params"]) == len(list(model.parameters()))
    without = build_model(TINY_MODEL)
    assert len(make_optimizer(without, config).param_groups) == 1


class Pixelwise(nn.Module):
    """A model without batch norm: accumulated gradients then equal a big batch's exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, images):
        return {"out": self.conv(images)}


def test_accumulation_steps_every_k_batches_with_the_big_batch_gradient():
    images, targets = torch.randn(4, 3, 8, 8), torch.randint(0, 3, (4, 8, 8))
    torch.manual_seed(0)
    big, small = Pixelwise(), Pixelwise()
    small.load_state_dict(big.state_dict())
    step_big = TrainStep(big, torch.optim.SGD(big.parameters(), lr=0.5), device="cpu")
    step_small = TrainStep(
        small, torch.optim.SGD(small.parameters(), lr=0.5), device="cpu", accumulation=2
    )
    initial = small.conv.weight.detach().clone()
    step_small(images[:2], targets[:2])
    assert torch.equal(small.conv.weight, initial)  # gradients only gathered so far
    step_small(images[2:], targets[2:])
    step_big(images, targets)
    torch.testing.assert_close(small.conv.weight, big.conv.weight)
    assert small.conv.weight.grad is None  # cleared after the optimiser step


def test_a_uint8_batch_is_normalised_on_the_device_exactly_as_the_loader_would():
    images = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    targets = torch.randint(0, 3, (2, 8, 8))
    torch.manual_seed(0)
    from_uint8, from_float = Pixelwise(), Pixelwise()
    from_float.load_state_dict(from_uint8.state_dict())
    losses = [
        TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.5), device="cpu")(batch, targets)
        for model, batch in ((from_uint8, images), (from_float, normalize(images)))
    ]
    assert torch.equal(losses[0], losses[1])
    assert torch.equal(from_uint8.conv.weight, from_float.conv.weight)
    assert not torch.equal(from_uint8.conv.weight, Pixelwise().conv.weight)  # it did train


def test_fixed_size_presets_load_uint8_and_padding_presets_load_floats(synthetic_root):
    context = Context(rank=0, world_size=1, device=torch.device("cpu"))
    dtypes = {}
    for train_preset, val_preset in (("report", "report"), ("paper-train", "paper-eval")):
        run = tiny(
            data_root=str(synthetic_root),
            num_classes=21,  # the generated set's classes
            train_transforms=train_preset,
            val_transforms=val_preset,
        )
        for loader in run_loaders(run, context):
            images, masks = next(iter(loader))
            dtypes[loader.dataset.transforms.name] = (images.dtype, masks.dtype)
    assert dtypes["report"] == (torch.uint8, torch.int64)  # a quarter of the bytes
    # A crop pads small images, and pad_collate pads uneven batches: exactly 0 as floats, so
    # these stay normalised on the CPU.
    assert dtypes["paper-train"] == dtypes["paper-eval"] == (torch.float32, torch.int64)


def test_a_nan_loss_raises_before_any_update():
    model = Pixelwise()
    before = model.conv.weight.detach().clone()
    step = TrainStep(model, torch.optim.SGD(model.parameters(), lr=0.5), device="cpu")
    with pytest.raises(FloatingPointError, match="nan"):
        step(torch.full((2, 3, 8, 8), float("nan")), torch.zeros(2, 8, 8, dtype=torch.int64))
    assert torch.equal(model.conv.weight, before) and model.conv.weight.grad is None


def test_schedules_step_the_report_way_and_decay_the_paper_way():
    def lrs(config, per_epoch=5):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=config.lr)
        scheduler = make_scheduler(optimizer, config, per_epoch)
        values = []
        for _ in range(config.epochs * per_epoch):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    report = lrs(RunConfig.from_recipe("report", epochs=4, lr_steps=(2,)))
    assert report[:10] == [1e-4] * 10 and report[10:] == pytest.approx([1e-5] * 10)
    paper = lrs(RunConfig.from_recipe("paper", epochs=2), per_epoch=10)
    assert paper[0] == 0.007 and paper[10] == pytest.approx(0.007 * 0.5**0.9)
    assert all(a > b for a, b in zip(paper[:-1], paper[1:], strict=True))
    assert paper[-1] < 0.007 * 0.1
    warm = lrs(RunConfig(lr=1.0, epochs=2, schedule="cosine", warmup_epochs=1), per_epoch=4)
    ramp, cosine = [0.25, 0.5, 0.75, 1.0], [0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert warm == pytest.approx(ramp + cosine)  # up over 1 epoch, then half a cosine down


# --- sessions and exact resume -------------------------------------------------------------


def test_two_sessions_give_the_weights_of_one(uninterrupted, tmp_path):
    config = tiny(session_epochs=2)
    first = train(config, tmp_path, progress=False, **DATA)
    assert not first.finished and [r["epoch"] for r in first.history] == [1, 2]
    second = train(config, tmp_path, progress=False, **DATA)
    assert second.finished
    assert_same_weights(second.model, uninterrupted.model)
    history = read_history(tmp_path / "history.csv").to_dict("records")
    assert [(r["epoch"], r["session"]) for r in history] == [(1, 1), (2, 1), (3, 2), (4, 2)]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in uninterrupted.history]
    assert 0.0 <= history[-1]["miou"] <= 1.0
    # every checkpoint loads with weights_only=True; keep_last=2 plus best.pt are kept
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best.pt", "epoch-0003.pt", "epoch-0004.pt"]
    for name in names:
        torch.load(tmp_path / "checkpoints" / name, weights_only=True)
    # a finished run run again does nothing
    again = train(config, tmp_path, progress=False, **DATA)
    assert again.finished and len(read_history(tmp_path / "history.csv").to_dict("records")) == 4


def test_corrupt_newest_falls_back_to_a_mid_epoch_checkpoint_and_ends_the_same(
    uninterrupted, tmp_path
):
    config = tiny(checkpoint_every=1, session_epochs=2)
    train(config, tmp_path, progress=False, **DATA)
    kept = [p.name for p in find_checkpoints(tmp_path / "checkpoints")]
    assert kept == ["epoch-0002.pt", "epoch-0001-batch-000001.pt"]  # keep_last=2
    newest = tmp_path / "checkpoints" / "epoch-0002.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as by a full disk
    with pytest.warns(UserWarning, match="epoch-0002.pt: truncated or corrupt"):
        resumed = train(config.replace(session_epochs=None), tmp_path, progress=False, **DATA)
    assert resumed.finished
    assert_same_weights(resumed.model, uninterrupted.model)
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in uninterrupted.history
    ]
    assert [r["session"] for r in resumed.history] == [1, 2, 2, 2]


def test_session_minutes_end_mid_epoch_with_a_checkpoint_and_resume_exactly(
    uninterrupted, tmp_path
):
    config = tiny(session_minutes=1e-9)  # time is up after the first step
    first = train(config, tmp_path, progress=False, **DATA)
    assert not first.finished and first.history == []
    assert [p.name for p in find_checkpoints(tmp_path / "checkpoints")] == [
        "epoch-0000-batch-000001.pt"
    ]
    resumed = train(config.replace(session_minutes=None), tmp_path, progress=False, **DATA)
    assert_same_weights(resumed.model, uninterrupted.model)
    assert [r["session"] for r in resumed.history] == [2, 2, 2, 2]


def test_resuming_with_another_model_is_a_clear_error(tmp_path):
    train(tiny().replace(epochs=1), tmp_path, progress=False, **DATA)
    with pytest.raises(
        CheckpointError,
        match=r"epoch-0001.pt(.|\n)*atrous_rates: checkpoint \[1, 2\], requested \[2, 3\]",
    ):
        train(tiny(atrous_rates=(2, 3)), tmp_path, progress=False, **DATA)


def test_no_fresh_start_over_a_run_whose_checkpoints_are_gone(tmp_path):
    train(tiny().replace(epochs=1), tmp_path, progress=False, **DATA)
    shutil.rmtree(tmp_path / "checkpoints")
    with pytest.raises(CheckpointError, match="history.csv but no checkpoint"):
        train(tiny(), tmp_path, progress=False, **DATA)


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    config = tiny(checkpoint_every=1)
    train(config.replace(epochs=1), tmp_path, progress=False, **DATA)
    good = load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    broken = dict(DATA, train_set=Squares(4, nan=True))
    with pytest.raises(
        TrainingDiverged, match=r"loss is nan at epoch 2, batch 1(.|\n)*epoch-0001.pt, is kept"
    ):
        train(config, tmp_path, progress=False, **broken)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # none added
    kept = load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")
    for name, tensor in good["model"].items():
        assert torch.equal(kept["model"][name], tensor)
    assert len(read_history(tmp_path / "history.csv").to_dict("records")) == 1


# --- a process killed at any moment --------------------------------------------------------

CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from deeplab_kit.config import RunConfig
from deeplab_kit.training.loop import train
train(RunConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def test_sigkill_mid_epoch_then_rerun_gives_the_same_weights(synthetic_root, tmp_path):
    # the real data path, and this machine's arithmetic (bf16 autocast where it is the rule)
    run = tiny(num_classes=21, amp="auto", data_root=str(synthetic_root), checkpoint_every=1)
    reference = train(run.replace(checkpoint_every=0), tmp_path / "reference", progress=False)

    out = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(run.to_dict()), str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:  # killed as soon as its first mid-epoch checkpoint is there: while it trains on
        ready = out / "checkpoints" / "epoch-0001-batch-000001.pt"
        deadline = time.monotonic() + 120  # only a guard against a child that never gets there
        while not ready.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL  # it was killed, not finished
    finally:
        if child.poll() is None:
            child.kill()
    done = find_checkpoints(out / "checkpoints")
    assert done and done[0].name < "epoch-0004.pt"

    resumed = train(run, out, progress=False)
    assert resumed.finished
    assert_same_weights(resumed.model, reference.model)
    assert [r["train_loss"] for r in resumed.history] == [
        r["train_loss"] for r in reference.history
    ]


# --- the pretrained recipe -----------------------------------------------------------------


def test_pretrained_recipe_loads_torchvision_weights_with_a_new_classifier(tmp_path):
    torch.manual_seed(1)
    source = build_model(**MODEL_PRESETS["torchvision"])  # torchvision's layout, with the aux head
    torch.save(source.state_dict(), tmp_path / "deeplabv3_resnet50_coco.pth")
    config = RunConfig.from_recipe(
        "pretrained", pretrained_weights=str(tmp_path / "deeplabv3_resnet50_coco.pth")
    )
    model = build_run_model(config)
    weights = source.state_dict()
    assert torch.equal(
        model.state_dict()["backbone.layer4.2.conv3.weight"],
        weights["backbone.layer4.2.conv3.weight"],
    )
    assert torch.equal(
        model.state_dict()["classifier.0.project.0.weight"],
        weights["classifier.0.project.0.weight"],
    )
    assert not torch.equal(
        model.state_dict()["classifier.4.weight"], weights["classifier.4.weight"]
    )  # new
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.aux_classifier is None


def test_pretrained_recipe_offline_fails_with_the_clear_message(monkeypatch):
    from torchvision.models._api import WeightsEnum

    def offline(self, *args, **kwargs):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match="Offline\\? Download deeplabv3_resnet50_coco"):
        build_run_model(RunConfig.from_recipe("pretrained"))


# --- DDP: two CPU processes (gloo) ---------------------------------------------------------


def test_ddp_two_processes_train_and_resume(synthetic_root, tmp_path):
    def torchrun(out, *options):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "deeplab_kit",
            "train",
            "--recipe",
            "demo",
            "--data",
            str(synthetic_root),
            "--out",
            str(out),
            "--epochs",
            "2",
            "--quiet",
            "--backbone",
            "resnet26",
            "--backbone-width",
            "16",
            "--aspp-channels",
            "16",
            "--atrous-rates",
            "1,2",
            "--image-size",
            "32",
            "--batch-size",
            "2",
            "--device",
            "cpu",
            *options,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        # its own process group, so that a hang is cleaned up with torchrun's workers too
        launcher = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = launcher.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(launcher.pid, signal.SIGKILL)
            raise
        assert launcher.returncode == 0, output[-3000:]
        return read_history(out / "history.csv").to_dict("records")

    # 4 images, 2 processes with 2 each: 1 step an epoch, gradients averaged over both
    assert [r["session"] for r in torchrun(tmp_path / "sessions", "--session-epochs", "1")] == [1]
    history = torchrun(tmp_path / "sessions", "--session-epochs", "1")
    assert [(r["epoch"], r["session"]) for r in history] == [(1, 1), (2, 2)]
    torchrun(tmp_path / "one")
    resumed = load_checkpoint(tmp_path / "sessions" / "checkpoints" / "epoch-0002.pt")["model"]
    one_session = load_checkpoint(tmp_path / "one" / "checkpoints" / "epoch-0002.pt")["model"]
    for name, tensor in one_session.items():
        assert torch.equal(resumed[name], tensor), name


# --- no lost work: output folders, failed writes, schedules, weights -----------------------


def test_an_unwritable_output_folder_fails_before_any_work(tmp_path, monkeypatch):
    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the output folder was checked")

    monkeypatch.setattr("deeplab_kit.training.loop.run_loaders", no_data)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(NotADirectoryError, match=r"file: is a file, not a folder"):
        train(tiny(), blocker, progress=False, **DATA)
    with pytest.raises(OSError, match=r"file/run: cannot write there \(Not a directory\)"):
        train(tiny(), blocker / "run", progress=False, **DATA)


def test_a_failed_write_keeps_the_newest_good_checkpoint_and_says_so(tmp_path, monkeypatch):
    import deeplab_kit.runtime.checkpoint as checkpoint_module

    real_save = torch.save

    def full_disk(obj, file, *args, **kwargs):
        if obj.get("epoch") == 2 and "optimizer" in obj:  # the second epoch's checkpoint
            file.write(b"x" * 3000)  # part of it reached the disk
            file.flush()
            raise OSError(28, "No space left on device")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    with pytest.raises(OSError) as raised:
        train(tiny(), tmp_path, progress=False, **DATA)
    message = str(raised.value)
    assert "epoch-0002.pt: could not be written (No space left on device: " in message
    # the space: what was written before it stopped, what is left there
    assert re.search(r"3\.0 kB written before it stopped, [\d.]+ [kMG]?B free there", message)
    assert "epoch-0001.pt, is kept" in message and "\n" not in message
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "best.pt",
        "epoch-0001.pt",
    ]
    assert load_checkpoint(tmp_path / "checkpoints" / "epoch-0001.pt")["epoch"] == 1
    resumed = train(tiny(), tmp_path, progress=False, **DATA)  # the next session resumes
    assert [row["session"] for row in resumed.history] == [1, 2, 2, 2]  # from epoch 2 on


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    class Poisoning(TrainStep):
        def __call__(self, images, targets):
            loss = super().__call__(images, targets)
            with torch.no_grad():
                next(self.model.parameters())[0] = float("nan")
            return loss  # a finite loss: only the weights tell

    monkeypatch.setattr(loop, "TrainStep", Poisoning)
    stepwise = tiny(checkpoint_every=1)  # a checkpoint after each step
    with pytest.raises(TrainingDiverged, match="weight backbone.conv1.weight is NaN"):
        train(stepwise, tmp_path, progress=False, **DATA)
    assert not find_checkpoints(tmp_path / "checkpoints")


def test_changing_epochs_is_refused_for_a_cosine_run_unless_extended(tmp_path):
    config = tiny(epochs=2, schedule="cosine")
    train(config, tmp_path, progress=False, **DATA)
    longer = config.replace(epochs=4)
    with pytest.raises(CheckpointError, match=r"planned for 2 epochs.*--extend") as refused:
        train(longer, tmp_path, progress=False, **DATA)
    assert "\n" not in str(refused.value)
    with pytest.warns(UserWarning, match="extended from 2 to 4 epochs"):
        result = train(longer, tmp_path, progress=False, extend=True, **DATA)
    assert result.finished and [row["epochs"] for row in result.history] == [2, 2, 4, 4]
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["epochs"].tolist() == [2, 2, 4, 4]  # the extension, recorded


def test_a_step_schedule_run_extends(tmp_path):
    config = tiny(epochs=2, schedule="step", lr_steps=(1,))
    train(config, tmp_path, progress=False, **DATA)
    with pytest.warns(UserWarning, match="extended from 2 to 3 epochs"):
        result = train(config.replace(epochs=3), tmp_path, progress=False, **DATA)
    assert len(result.history) == 3 and result.history[-1]["lr"] == pytest.approx(1e-4)


def test_silent_oddities_are_said(tmp_path, synthetic_root):
    late = tiny(epochs=1, schedule="step", lr_steps=(100,))
    with pytest.warns(UserWarning, match=r"lr_steps \[100\] lie at or past the run's last epoch"):
        train(late, tmp_path / "late", progress=False, **DATA)
    same = tiny(epochs=1, data_root=str(synthetic_root), val_split="train", num_classes=21)
    with pytest.warns(UserWarning, match="4 of the 4 validation images are also training"):
        train(same, tmp_path / "same", progress=False)
    small = tiny(batch_size=8)
    with pytest.raises(ValueError, match=r"has 4 images: at batch_size=8 .* 0 full batch"):
        train(small, tmp_path / "small", progress=False, **DATA)
