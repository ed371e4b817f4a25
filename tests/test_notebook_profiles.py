"""Notebook support: profiles, Colab/Drive paths, the full profile's stops, and the repository
address the notebooks install from (the notebooks themselves: test_course.py)."""

import sys
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from deeplab_kit.config import RunConfig
from deeplab_kit.course import colab, notebook_profiles
from deeplab_kit.course.notebook_profiles import Profile, ResourceMissing
from deeplab_kit.data.voc import class_statistics, voc_ready

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"


@pytest.fixture(autouse=True)
def restore_threads():
    """The quick profile sets torch's CPU threads (for the notebook's kernel): restore them."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_colab(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A Colab kernel: google.colab importable, Drive mounted (by drive.mount) under tmp_path."""
    mounts = []

    def mount(path):
        mounts.append(path)
        (Path(path) / "MyDrive").mkdir(parents=True)

    fake = types.ModuleType("google.colab")
    fake.drive = types.SimpleNamespace(mount=mount)
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", fake)
    monkeypatch.setattr(colab, "DRIVE_MOUNT", tmp_path / "drive")
    return mounts


def env(tmp_path, **values):
    return {"DEEPLAB_KIT_HOME": str(tmp_path), **values}


# --- profiles -------------------------------------------------------------------------------


def test_quick_is_the_default_profile(tmp_path, no_colab):
    for environ in (
        env(tmp_path),
        env(tmp_path, DEEPLAB_KIT_PROFILE=""),
        env(tmp_path, DEEPLAB_KIT_PROFILE=" Quick "),
    ):
        profile = Profile.from_env(environ)
        assert profile.name == "quick" and profile.device == "cpu" and profile.synthetic
        assert profile.data_root == tmp_path / "data" / "synthetic-quick"
        assert profile.runs_dir == tmp_path / "runs" / "quick"
        assert profile.epochs == notebook_profiles.QUICK_BUDGET["epochs"] and not profile.progress
        assert torch.get_num_threads() == profile.threads == notebook_profiles.QUICK_THREADS


def test_full_profile_reads_voc_location(tmp_path, no_colab):
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    assert (profile.name, profile.device, profile.synthetic) == ("full", "cuda", False)
    assert profile.data_root == tmp_path / "data" and profile.runs_dir == tmp_path / "runs"
    assert profile.epochs is None and profile.progress
    voc = tmp_path / "elsewhere"
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="FULL", DEEPLAB_KIT_DATA=str(voc)))
    assert profile.data_root == voc


def test_unknown_profile_is_a_clear_error(tmp_path, no_colab):
    with pytest.raises(ValueError, match=r"DEEPLAB_KIT_PROFILE='fast'.*'quick'.*'full'"):
        Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="fast"))


def test_home_is_the_checkout_the_notebook_runs_in(tmp_path, monkeypatch):
    (tmp_path / "repo" / "deeplab_kit").mkdir(parents=True)
    (tmp_path / "repo" / "pyproject.toml").write_text("")
    (tmp_path / "repo" / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "notebooks")
    assert colab.home({}) == tmp_path / "repo"
    monkeypatch.chdir(tmp_path)
    assert colab.home({}) == tmp_path  # no checkout above: the working directory
    assert colab.home({"DEEPLAB_KIT_HOME": str(tmp_path / "x")}) == tmp_path / "x"


# --- Colab and Google Drive ------------------------------------------------------------------


def test_outside_colab_nothing_is_mounted(tmp_path, no_colab, monkeypatch):
    monkeypatch.setattr(colab, "DRIVE_MOUNT", tmp_path / "drive")
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)  # even if such a folder exists
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    assert not profile.on_drive and profile.runs_dir == tmp_path / "runs"
    assert colab.mount_drive() is None


def test_full_profile_in_colab_mounts_drive_and_runs_there(tmp_path, fake_colab):
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    assert fake_colab == [str(tmp_path / "drive")]
    assert profile.on_drive
    assert profile.runs_dir == tmp_path / "drive" / "MyDrive" / "deeplab-kit" / "runs"
    assert profile.data_root == tmp_path / "data"  # data stays on the fast local disk
    Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    assert len(fake_colab) == 1  # already mounted: not asked again


def test_quick_profile_in_colab_uses_drive_only_when_mounted(tmp_path, fake_colab):
    profile = Profile.from_env(env(tmp_path))
    assert fake_colab == [] and not profile.on_drive  # quick never asks for Drive
    (tmp_path / "drive" / "MyDrive").mkdir(parents=True)
    profile = Profile.from_env(env(tmp_path))
    assert profile.runs_dir == tmp_path / "drive" / "MyDrive" / "deeplab-kit" / "runs" / "quick"


def test_a_refused_mount_keeps_runs_local(tmp_path, fake_colab, monkeypatch, capsys):
    def refuse(path):
        raise RuntimeError("permission denied")

    monkeypatch.setattr(sys.modules["google.colab"].drive, "mount", refuse)
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    assert not profile.on_drive and profile.runs_dir == tmp_path / "runs"
    assert "permission denied" in capsys.readouterr().out


# --- configurations and run folders ---------------------------------------------------------


def test_quick_config_keeps_the_recipe_and_shrinks_the_budget(tmp_path, no_colab):
    profile = Profile.from_env(env(tmp_path))
    config = profile.config("report")
    recipe = RunConfig.from_recipe("report")
    assert (config.optimizer, config.schedule) == (recipe.optimizer, "step")
    assert config.lr == max(recipe.lr, notebook_profiles.QUICK_MIN_LR)
    assert (
        config.model.atrous_rates == recipe.model.atrous_rates and config.model.output_stride == 16
    )
    assert (config.model.backbone, config.model.backbone_width) == ("resnet26", 16)
    assert config.epochs == 4 and config.session_epochs == 2
    assert config.lr_steps == (2,)  # 100 of 200 epochs -> 2 of 4: the step keeps its place
    assert config.data_root == str(profile.data_root) and config.device == "cpu"
    demo = profile.config("demo")
    assert demo.session_epochs is None  # no sessions where the recipe has none
    assert demo.lr == RunConfig.from_recipe("demo").lr  # already above the quick minimum
    assert profile.config("report", epochs=6).epochs == 6
    paper = profile.config("paper")
    assert paper.model.multi_grid is None and not paper.model.pretrained_backbone
    assert paper.train_split == "train"
    pretrained = profile.config("pretrained")  # torchvision's weights need torchvision's model
    assert pretrained.model.backbone == "resnet50" and pretrained.pretrained_weights


def test_full_config_is_the_recipe_on_voc(tmp_path, no_colab):
    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))
    expected = RunConfig.from_recipe("report", data_root=str(tmp_path / "data"), device="cuda")
    assert profile.config("report") == expected


def test_run_folder_is_fresh_only_in_quick_mode(tmp_path, no_colab):
    for name in ("quick", "full"):
        profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE=name))
        run = profile.run_folder("report")
        (run / "checkpoints").mkdir(parents=True)
        assert profile.run_folder("report") == run and run.exists()
        profile.run_folder("report", fresh=True)
        assert run.exists() == (name == "full")  # a full run is resumed, never deleted
    for bad in ("../elsewhere", "..", "a/b", ""):
        with pytest.raises(ValueError, match="run name"):
            profile.run_folder(bad, fresh=True)
    assert (tmp_path / "runs").is_dir()


# --- the full profile stops where it needs VOC or a GPU ----------------------------------------


@pytest.fixture
def full(tmp_path, no_colab):
    return Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="full"))


def test_full_profile_without_voc_stops_with_instructions(full):
    with pytest.raises(ResourceMissing, match=r"VOCdevkit/VOC2012.*download voc") as error:
        notebook_profiles.prepare_data(full)
    # In Jupyter it shows as its message alone, not as a traceback.
    assert error.value._render_traceback_() == [f"ResourceMissing: {error.value}"]


def test_full_profile_download_failure_stops_with_its_reason(full, monkeypatch):
    from deeplab_kit.data import download

    def offline(name, root):
        raise download.DownloadError(f"could not get {name}: host unreachable")

    monkeypatch.setattr(notebook_profiles, "fetch", offline)
    with pytest.raises(ResourceMissing, match="could not get voc: host unreachable"):
        notebook_profiles.prepare_data(full, download=True, sbd=True)


def test_full_profile_with_voc_needs_no_download(full, monkeypatch, capsys):
    from deeplab_kit.data import download

    splits = full.data_root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("a\n")
    (splits / "val.txt").write_text("b\n")

    def only_sbd_fails(name, root):
        assert name == "sbd", "VOC is there: it must not be downloaded again"
        raise download.DownloadError("sbd unreachable")

    monkeypatch.setattr(notebook_profiles, "fetch", only_sbd_fails)
    assert notebook_profiles.prepare_data(full, download=True, sbd=True) == full.data_root
    assert "SBD not available (sbd unreachable)" in capsys.readouterr().out


def test_full_profile_without_gpu_stops(full, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ResourceMissing, match="GPU"):
        full.require_gpu()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert full.require_gpu() == "cuda"


def test_full_profile_needs_a_trained_run(full):
    with pytest.raises(ResourceMissing, match="no trained model in .*05_training_sessions"):
        notebook_profiles.trained_model(full, full.run_folder("report"), full.config("report"))


def test_pretrained_weights_are_skipped_with_a_message(full, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    quick = Profile.from_env(env(tmp_path))
    assert notebook_profiles.pretrained_weights(quick) is None
    assert "the quick profile downloads nothing" in capsys.readouterr().out

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    assert notebook_profiles.pretrained_weights(full) is None
    assert "could not be downloaded" in capsys.readouterr().out
    cached = notebook_profiles.pretrained_weights_file()
    assert cached.parent == tmp_path / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    assert notebook_profiles.pretrained_weights(quick) == cached


def test_quick_profile_generates_its_data(tmp_path, no_colab, monkeypatch):
    monkeypatch.setattr(
        notebook_profiles, "QUICK_DATA", dict(num_train=3, num_val=2, size=32, seed=0)
    )
    profile = Profile.from_env(env(tmp_path))
    root = notebook_profiles.prepare_data(profile)
    assert root == profile.data_root and voc_ready(root)
    lists = root / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    assert len((lists / "train.txt").read_text().split()) == 3


# --- small helpers ----------------------------------------------------------------------------


def test_class_statistics_counts_by_hand():
    masks = [np.array([[0, 0], [1, 255]]), torch.tensor([[1, 1], [2, 2]])]
    stats = class_statistics(masks, num_classes=3)
    assert stats["pixels"].tolist() == [2, 3, 2, 1]
    assert stats["images"].tolist() == [1, 2, 1, 1]
    assert stats["% of labelled"].iloc[:3].tolist() == pytest.approx([200 / 7, 300 / 7, 200 / 7])
    assert np.isnan(stats["% of labelled"].iloc[3])  # void is not a labelled pixel
    assert stats["% of all"].iloc[3] == pytest.approx(100 / 8)
    with pytest.raises(ValueError, match=r"mask 0: labels \[7\]"):
        class_statistics([np.array([[7, 0]])], num_classes=3)


def test_config_table_puts_configs_side_by_side():
    table = notebook_profiles.config_table(
        {"a": RunConfig.from_recipe("report"), "b": RunConfig.from_recipe("demo")},
        fields=("atrous_rates", "lr"),
    )
    assert table.loc["atrous_rates"].tolist() == ["(8, 12, 16)", "(1, 2, 3)"]
    assert table.loc["lr", "a"] == "0.0001"


# --- one repository address ------------------------------------------------------------------


def test_every_notebook_installs_the_kit_from_the_one_address():
    assert colab.check_repository_links(notebooks_dir=NOTEBOOKS) == []
    for name in colab.NOTEBOOKS:
        assert colab.install_address(NOTEBOOKS / name) == colab.REPOSITORY


def test_readme_badges_point_at_the_repository():
    readme = (ROOT / "README.md").read_text()
    if "colab.research.google.com/github/" not in readme:
        pytest.skip("README has no Open-in-Colab badges yet")
    assert colab.check_repository_links(readme, NOTEBOOKS) == []


def test_link_check_finds_disagreements(tmp_path):
    good = colab.badge_table()
    assert colab.check_repository_links(good, NOTEBOOKS) == []
    other = good.replace("deeplab-kit/deeplab-kit/blob", "someone/fork/blob", 1)
    assert any("someone/fork" in p for p in colab.check_repository_links(other, NOTEBOOKS))
    missing = good.replace("06_report.ipynb", "08_missing.ipynb")
    problems = colab.check_repository_links(missing, NOTEBOOKS)
    assert any("08_missing.ipynb, which does not exist" in p for p in problems)
    assert any("no Colab badge for 06_report.ipynb" in p for p in problems)
    for name in colab.NOTEBOOKS:  # notebooks that install from elsewhere
        text = (NOTEBOOKS / name).read_text().replace("deeplab-kit/deeplab-kit", "someone/fork")
        (tmp_path / name).write_text(text)
    problems = colab.check_repository_links(notebooks_dir=tmp_path)
    assert len(problems) == len(colab.NOTEBOOKS) and all(
        "installs from https://github.com/someone/fork" in p for p in problems
    )


# --- VOC already on disk, the cpu profile, paths as shown ---------------------------------------


def test_full_profile_finds_voc_extracted_one_level_down(full, monkeypatch):

    splits = full.data_root / "VOCtrainval" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    splits.mkdir(parents=True)
    (splits / "train.txt").write_text("a\n")
    (splits / "val.txt").write_text("b\n")

    def no_download(name, root):
        raise AssertionError("VOC is on disk: nothing may be downloaded")

    monkeypatch.setattr(notebook_profiles, "fetch", no_download)
    assert notebook_profiles.prepare_data(full, download=True) == full.data_root / "VOCtrainval"


def test_a_missing_voc_says_how_to_point_at_one(full):
    with pytest.raises(
        ResourceMissing, match="Set DEEPLAB_KIT_DATA to the folder holding VOCdevkit"
    ):
        notebook_profiles.prepare_data(full)


def test_cpu_profile_reproduces_the_stored_results_configurations(tmp_path, no_colab):
    from deeplab_kit.course import results
    from deeplab_kit.runtime.arithmetic import choose

    profile = Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE="cpu"))
    assert (profile.device, profile.synthetic, profile.threads) == ("cpu", True, None)
    paths = dict(data_root=None, cache_dir=None)
    demo = results.demo_config().replace(
        **paths, session_epochs=notebook_profiles.CPU_SESSION_EPOCHS
    )
    assert profile.config("report").replace(**paths) == demo  # the stored demo run, in sessions
    arithmetic = choose(torch.device("cpu"))
    for name in ("going-deeper", "cascaded-blocks", "ablation"):
        stored = results.experiment_config(name, arithmetic)
        if name == "ablation":
            stored = stored.replace(lr=results.stored_ablation_lr() or stored.lr)
        assert profile.experiment_config(name).replace(**paths) == stored.replace(
            **paths, device="cpu"
        )
        assert profile.experiment_config(name).data_root.startswith(str(tmp_path / "data"))
        assert profile.experiment_labels(name) is None and profile.experiment_seeds(name) is None
    shown = repr(profile)
    assert str(tmp_path) not in shown and "data/synthetic" in shown


def test_each_profile_trains_its_share_of_the_experiments(tmp_path, no_colab):
    from deeplab_kit.course import ablation, going_deeper

    quick, full, complete = (
        Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE=name))
        for name in ("quick", "full", "complete")
    )
    for name in ("going-deeper", "cascaded-blocks", "ablation"):
        assert quick.experiment_labels(name) is None and quick.experiment_seeds(name) == (0,)
        assert quick.experiment_config(name).epochs == 1
        student = full.experiment_labels(name)
        assert full.experiment_seeds(name) == (0,) and student
        assert complete.experiment_labels(name) is None and complete.experiment_seeds(name) is None
        base = full.experiment_config(name)
        assert base.data_root == str(tmp_path / "data") and base.device == "cuda"
        assert base.epochs == notebook_profiles.FULL_EXPERIMENT_EPOCHS
        settings = (
            ablation.configs(base)
            if name == "ablation"
            else going_deeper.DESIGNS[name].configs(base)
        )
        assert set(student) <= set(settings)  # the student's settings are the design's
    deeper = full.experiment_config("going-deeper")
    assert (deeper.model.backbone, deeper.model.pretrained_backbone) == ("resnet50", True)
    assert (deeper.val_transforms, deeper.image_size) == ("paper-eval", 321)
    assert full.experiment_config("ablation").model.backbone == "resnet50"


def test_the_cost_is_estimated_before_an_experiment_trains(tmp_path, no_colab, monkeypatch):
    from deeplab_kit.course import experiments

    timed = []

    def one_second(config, steps=2):
        timed.append(config.model.output_stride)
        return 1.0

    monkeypatch.setattr(experiments, "seconds_per_step", one_second)
    quick = Profile.from_env(env(tmp_path))
    monkeypatch.setattr(notebook_profiles, "QUICK_EXPERIMENT_DATA", dict(num_train=8, num_val=2))
    base = quick.experiment_config("going-deeper")
    quick.experiment_data("going-deeper")
    estimate = quick.experiment_estimate("going-deeper", base)
    assert timed == [8, 16, 32, 64, 128, 256]  # every setting the quick profile trains, timed
    # one epoch of 8 images in batches of 8: one step of one second, one run each
    assert estimate["minutes"].tolist() == [round(1 / 60, 1)] * 6
    assert estimate["runs"].tolist() == [1] * 6


def test_profiles_show_paths_relative_to_the_checkout(tmp_path, no_colab):
    for name in ("quick", "cpu", "full"):
        shown = repr(Profile.from_env(env(tmp_path, DEEPLAB_KIT_PROFILE=name)))
        assert str(tmp_path) not in shown, shown
