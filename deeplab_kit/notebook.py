"""What the notebooks need besides the library: profiles, data and run folders, Colab helpers.

A notebook's parameters cell reads its profile from the environment variable
`DEEPLAB_KIT_PROFILE`, so one notebook runs in three ways without editing a cell:

- `quick` (the default; what CI runs): CPU, small generated VOC-format datasets, small models
  and budgets of seconds. It shows every code path, not a converged result.
- `cpu`: a laptop CPU reproduces the stored results at their own scale (the demo run in
  03-04, the whole atrous-rate ablation in 02), minutes to an hour; the profile says how long.
- `full`: a GPU and PASCAL VOC 2012, the recipes' own models and budgets (hours). Where a
  notebook needs VOC or a GPU that is not there, it stops with a `ResourceMissing` error that
  says what is missing and how to get it. `DEEPLAB_KIT_DATA` names the folder holding
  VOCdevkit/ (default: data/ of the checkout).

    profile = Profile.from_env()                  # DEEPLAB_KIT_PROFILE=quick|cpu|full
    root = prepare_data(profile)                  # synthetic set, or VOC (stops if absent)
    config = profile.config("report")             # a RunConfig sized for the profile
    run = profile.run_folder("report")            # on Google Drive in Colab when mounted

In Colab the kit is installed from `REPOSITORY` by each notebook's first cell (which repeats the
address, because it runs before the kit is importable; tests check that the two agree).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeplab_kit.voc import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES

# The one place the repository's address is written (notebooks' install cells and README's
# Colab badges repeat it; `check_repository_links` and tests/test_notebook.py keep them equal).
REPOSITORY = "https://github.com/deeplab-kit/deeplab-kit"
BRANCH = "main"
NOTEBOOKS = (
    "01_data.ipynb",
    "02_aspp_atrous_rates.ipynb",
    "03_training_sessions.ipynb",
    "04_report.ipynb",
)

PROFILE_VARIABLE = "DEEPLAB_KIT_PROFILE"
DATA_VARIABLE = "DEEPLAB_KIT_DATA"
PROFILES = ("quick", "cpu", "full")
DEFAULT_PROFILE = "quick"

COLAB_MODULE = "google.colab"
DRIVE_MOUNT = Path("/content/drive")  # where Colab mounts Google Drive
DRIVE_FOLDER = "deeplab-kit"  # run folders go to MyDrive/deeplab-kit/runs

# The quick profile: the demo recipe's small model (a 16-wide resnet26, 2M parameters) on a
# small synthetic set at 96 px; budgets of seconds on a 2-core CPU.
QUICK_DATA = dict(num_train=48, num_val=16, size=96, seed=0)
QUICK_BUDGET = dict(epochs=4, session_epochs=2, ablation_epochs=1, batch_size=8, eval_batch_size=16)
# The quick ablation keeps the stored ablation's geometry (128 px at output stride 8: a 16 x 16
# map), on a handful of images.
QUICK_ABLATION_DATA = dict(num_train=16, num_val=8, size=128, seed=0)
QUICK_ERF_IMAGES = 4
# A from-scratch model hardly moves in 4 short epochs at the report's 1e-4: quick runs start from
# at least this learning rate, so that their loss curves show something.
QUICK_MIN_LR = 1e-3
# Tiny models gain little from a second CPU thread (about 1.3x on an idle 2-core machine), and
# two threads collapse (OpenMP waits, 10x slower and worse) while another process keeps a core
# busy: the quick profile uses one.
QUICK_THREADS = 1
QUICK_MODEL = dict(
    backbone="resnet26", backbone_width=16, aspp_channels=64, aspp_dropout=0.0, multi_grid=None,
    extra_blocks=0, aux_loss=False, pretrained_backbone=False, freeze_backbone=False,
)  # fmt: skip
# The cpu profile trains the stored demo run in two sessions (03), as the stored one was made.
CPU_SESSION_EPOCHS = 5
FULL_ABLATION_EPOCHS = 20  # one Colab session per rate setting and seed


class ResourceMissing(RuntimeError):
    """The profile needs something this machine lacks (VOC, a GPU, a trained run, weights).

    In Jupyter it shows as its message alone, without a traceback: it is an instruction, not
    a bug.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [f"{type(self).__name__}: {self}"]


# --- Colab and Google Drive ---------------------------------------------------------------


def in_colab() -> bool:
    """Whether this runs in Google Colab (its module is imported in every Colab kernel)."""
    return COLAB_MODULE in sys.modules


def drive_folder() -> Path | None:
    """The kit's folder on Google Drive when Drive is mounted in Colab, else None."""
    my_drive = DRIVE_MOUNT / "MyDrive"
    if in_colab() and my_drive.is_dir():
        return my_drive / DRIVE_FOLDER
    return None


def mount_drive() -> Path | None:
    """Mount Google Drive in Colab (Colab asks for permission) and return the kit's folder on
    it; outside Colab, or if mounting fails, None (run folders then stay on the local disk)."""
    if not in_colab():
        return None
    if drive_folder() is None:
        try:
            from google.colab import drive

            drive.mount(str(DRIVE_MOUNT))
        except Exception as error:  # a refused permission must not stop the notebook
            print(f"Google Drive not mounted ({error}); run folders stay on this machine.")
    return drive_folder()


def _checkout_at_or_above(folder: Path) -> Path | None:
    for candidate in (folder, *folder.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "deeplab_kit").is_dir():
            return candidate
    return None


def checkout() -> Path | None:
    """The repository checkout the notebook runs in (found from the working directory, where
    Jupyter starts a notebook's kernel, or from the kit's own files in an editable install);
    None in Colab, where the kit is pip-installed without its notebooks."""
    return _checkout_at_or_above(Path.cwd().resolve()) or _checkout_at_or_above(
        Path(__file__).resolve().parents[1]
    )


def home(environ: Mapping[str, str] | None = None) -> Path:
    """The folder under which data/ and runs/ go: $DEEPLAB_KIT_HOME, else the repository
    checkout the notebook runs in (from the working directory), else the working directory
    (/content in Colab)."""
    environ = os.environ if environ is None else environ
    if environ.get("DEEPLAB_KIT_HOME"):
        return Path(environ["DEEPLAB_KIT_HOME"]).expanduser().resolve()
    here = Path.cwd().resolve()
    return _checkout_at_or_above(here) or here


# --- profiles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """Where a notebook's data and runs live, on which device, with which budgets.

    Build it with `Profile.from_env()`. Budgets that are None mean "the recipe's own".
    """

    name: str  # "quick", "cpu" or "full"
    device: str  # "cpu" (quick, cpu) or "cuda" (full)
    home: Path  # the folder data/ and runs/ are under (shown paths are relative to it)
    data_root: Path  # the folder holding VOCdevkit/VOC2012 (generated unless full)
    runs_dir: Path  # run folders; on Google Drive in Colab when it is mounted
    cache_dir: Path  # decoded-image caches
    synthetic: bool  # a generated VOC-format set instead of VOC 2012
    on_drive: bool
    epochs: int | None  # a training run's length (03, 04)
    session_epochs: int | None  # epochs per session (03)
    ablation_root: Path  # the atrous-rate ablation's data (02)
    ablation_epochs: int | None  # epochs per rate setting and seed (02)
    ablation_seeds: tuple[int, ...]  # seeds per rate setting (02)
    erf_images: int  # validation images per effective receptive field (02)
    threads: int | None  # torch's CPU threads (None: torch's default)
    progress: bool  # progress bars (off in quick mode: CI logs and stable outputs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, mount: bool = True) -> Profile:
        """The profile named by $DEEPLAB_KIT_PROFILE ("quick" if unset).

        Also read: $DEEPLAB_KIT_DATA (the folder holding VOCdevkit, full profile) and
        $DEEPLAB_KIT_HOME (see `home`). In Colab with the full profile, Google Drive is mounted
        (with `mount`) so that run folders outlive the session. The quick profile also sets
        torch's CPU threads to `QUICK_THREADS`, for the kernel the notebook runs in.
        """
        from deeplab_kit.ablation import ERF_IMAGES, SEEDS

        environ = os.environ if environ is None else environ
        raw = environ.get(PROFILE_VARIABLE, "")
        name = raw.strip().lower() or DEFAULT_PROFILE
        if name not in PROFILES:
            raise ValueError(
                f"{PROFILE_VARIABLE}={raw!r} is not a profile; use 'quick' (CPU, synthetic data, "
                "tiny budgets), 'cpu' (a CPU reproduces the stored results) or 'full' (GPU, "
                "PASCAL VOC 2012)"
            )
        base = home(environ)
        drive = mount_drive() if (mount and name == "full") else drive_folder()
        runs = (drive or base) / "runs"
        common = dict(home=base, cache_dir=base / "data" / "cache", on_drive=drive is not None)
        if name == "quick":
            return cls(
                name=name, device="cpu", data_root=base / "data" / "synthetic-quick",
                runs_dir=runs / "quick", synthetic=True, epochs=QUICK_BUDGET["epochs"],
                session_epochs=QUICK_BUDGET["session_epochs"],
                ablation_root=base / "data" / "synthetic-ablation-quick",
                ablation_epochs=QUICK_BUDGET["ablation_epochs"], ablation_seeds=(0,),
                erf_images=QUICK_ERF_IMAGES, threads=QUICK_THREADS, progress=False, **common,
            )._apply_threads()  # fmt: skip
        if name == "cpu":
            return cls(
                name=name, device="cpu", data_root=base / "data" / "synthetic",
                runs_dir=runs / "cpu", synthetic=True, epochs=None,
                session_epochs=CPU_SESSION_EPOCHS,
                ablation_root=base / "data" / "synthetic-ablation", ablation_epochs=None,
                ablation_seeds=SEEDS, erf_images=ERF_IMAGES, threads=None, progress=True, **common,
            )  # fmt: skip
        data = environ.get(DATA_VARIABLE)
        data_root = Path(data).expanduser().resolve() if data else base / "data"
        return cls(
            name=name, device="cuda", data_root=data_root, runs_dir=runs, synthetic=False,
            epochs=None, session_epochs=None, ablation_root=data_root,
            ablation_epochs=FULL_ABLATION_EPOCHS, ablation_seeds=SEEDS, erf_images=ERF_IMAGES,
            threads=None, progress=True, **common,
        )  # fmt: skip

    def _apply_threads(self) -> Profile:
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        return self

    def shown(self, path: Path) -> str:
        """A path as the notebooks print it: relative to `home` when under it (a notebook's
        stored outputs show no machine's own folders)."""
        try:
            return str(Path(path).relative_to(self.home))
        except ValueError:
            return str(path)

    def __repr__(self) -> str:
        kind = {"quick": "CPU, synthetic data, tiny budgets",
                "cpu": "CPU, synthetic data, the stored results' own budgets",
                "full": "GPU, PASCAL VOC 2012"}[self.name]  # fmt: skip
        threads = f", {self.threads} thread{'s' * (self.threads > 1)}" if self.threads else ""
        lines = [
            f"profile {self.name!r}: {kind}",
            f"  device       {self.device}{threads}",
            f"  data         {self.shown(self.data_root)}",
            f"  runs         {self.shown(self.runs_dir)}" + ("  (Google Drive)" * self.on_drive),
            "  training     "
            + (f"{self.epochs} epochs" if self.epochs else "the recipes' epochs")
            + (f", {self.session_epochs} per session" if self.session_epochs else ""),
            f"  ablation     {len(self.ablation_seeds)} seed(s) per rate setting, "
            + (
                f"{self.ablation_epochs} epoch(s) each"
                if self.ablation_epochs
                else "the stored ablation's epochs"
            ),  # fmt: skip
        ]
        if self.name == "cpu":
            lines.append(f"  takes        {stored_durations()}")
        return "\n".join(lines)

    # --- what the profile needs -----------------------------------------------------------

    def require_gpu(self) -> str:
        """The device to train on; in the full profile, stop here when there is no GPU."""
        if self.name == "full" and not torch.cuda.is_available():
            raise ResourceMissing(
                "the full profile trains on a GPU and torch sees none here. In Colab: Runtime > "
                "Change runtime type > GPU. Or run this notebook with "
                f"{PROFILE_VARIABLE}=quick (CPU, synthetic data, seconds) or =cpu (the stored "
                "results, on this CPU)."
            )
        return self.device

    # --- run configurations and folders ---------------------------------------------------

    def config(self, recipe: str, **overrides):
        """`RunConfig.from_recipe(recipe)` for this profile's data, device and budgets.

        full: the recipe as it is, on `data_root`. cpu: the stored demo run's configuration
        (the demo recipe) in place of a recipe that needs VOC, in sessions of
        `CPU_SESSION_EPOCHS`. quick: the recipe's optimiser, schedule, rates and output stride
        on the demo's small model at 96 px, `epochs` long, with a learning rate of at least
        `QUICK_MIN_LR`; a scheduled step of the learning rate keeps its place in the run (the
        report's step at epoch 100 of 200 comes at epoch 2 of 4). Recipes that load
        torchvision's weights keep their model.
        """
        from deeplab_kit.config import RunConfig

        if self.name == "full":
            return RunConfig.from_recipe(
                recipe, data_root=str(self.data_root), device=self.device, **overrides
            )
        base = RunConfig.from_recipe(recipe)
        if self.name == "cpu" and not base.pretrained_weights:
            stored = RunConfig.from_recipe(
                "demo", data_root=str(self.data_root), cache_dir=str(self.data_root / "cache"),
                session_epochs=self.session_epochs,
            )  # fmt: skip
            return stored.replace(**overrides)
        epochs = self.epochs or base.epochs
        quick = dict(
            data_root=str(self.data_root), device=self.device, train_split="train",
            image_size=self.data_size(), num_workers=0, epochs=epochs,
            lr=max(base.lr, QUICK_MIN_LR),
            batch_size=QUICK_BUDGET["batch_size"], eval_batch_size=QUICK_BUDGET["eval_batch_size"],
            session_epochs=self.session_epochs if base.session_epochs else None,
            lr_steps=tuple(_scaled_epoch(step, base.epochs, epochs) for step in base.lr_steps),
        )  # fmt: skip
        if not base.pretrained_weights:
            quick.update(QUICK_MODEL)
        return base.replace(**{**quick, **overrides})

    def data_size(self) -> int:
        """The side of the generated images of `data_root` (quick and cpu profiles)."""
        from deeplab_kit.demo import DEMO_DATA

        return (QUICK_DATA if self.name == "quick" else DEMO_DATA)["size"]

    def ablation_config(self):
        """The base configuration of the atrous-rate ablation (02): the `ablation` recipe on
        the generated 128-pixel set (quick: a few images and one epoch; cpu: exactly the
        stored ablation's), or the `report` recipe on VOC (full), both with ASPP on a 16 x 16
        map."""
        from deeplab_kit.config import RunConfig

        if self.name == "full":
            return RunConfig.from_recipe(
                "report", data_root=str(self.data_root), device=self.device,
                epochs=self.ablation_epochs, session_epochs=None, lr_steps=(),
            )  # fmt: skip
        config = RunConfig.from_recipe(
            "ablation", data_root=str(self.ablation_root), device=self.device,
            cache_dir=str(self.ablation_root / "cache"),
        )  # fmt: skip
        if self.name == "quick":
            config = config.replace(epochs=self.ablation_epochs, batch_size=8, eval_batch_size=8,
                                    cache_dir=None)  # fmt: skip
        return config

    def prepare_ablation_data(self) -> Path:
        """The ablation's data, generated if absent (quick, cpu) or VOC (full; see
        `prepare_data`)."""
        if self.name == "full":
            return prepare_data(self)
        from deeplab_kit.ablation import ABLATION_DATA
        from deeplab_kit.synthetic import make_synthetic_voc

        data = QUICK_ABLATION_DATA if self.name == "quick" else ABLATION_DATA
        return make_synthetic_voc(self.ablation_root, **data)

    def run_folder(self, name: str, *, fresh: bool = False) -> Path:
        """The run folder `name` under `runs_dir` (train() creates it).

        With `fresh=True` the quick profile deletes its previous run of that name first (a
        quick run only demonstrates the code path, and a notebook re-run should show the same
        thing); the other profiles never delete a run: the same cell resumes it instead.
        """
        if not re.fullmatch(r"\w[\w.-]*", name):  # no separators, no "..": stays in runs_dir
            raise ValueError(f"run name {name!r}: use letters, digits, '.', '-' and '_' only")
        folder = self.runs_dir / name
        if fresh and self.name == "quick" and folder.exists():
            shutil.rmtree(folder)
        return folder


def stored_durations() -> str:
    """How long the stored results took to make, from their provenance: what the cpu profile
    will take on a similar machine."""
    parts = []
    for name, notebooks in (("demo", "03-04"), ("ablation", "02")):
        path = results_dir() / name / "provenance.json"
        if path.is_file():
            record = json.loads(path.read_text())
            parts.append(f"{notebooks}: about {record['seconds'] / 60:.0f} min")
    if not parts:
        return "as long as the stored results took (see `python -m deeplab_kit results list`)"
    return "; ".join(parts) + " on a 2-core CPU, as the stored results took"


def _scaled_epoch(epoch: int, total: int, new_total: int) -> int:
    """The epoch at the same place in a run of `new_total` epochs (never the first or past the
    last, so that a scheduled step still happens inside the shorter run)."""
    return min(new_total - 1, max(1, round(epoch * new_total / total)))


# --- data ---------------------------------------------------------------------------------


def voc_ready(root: str | os.PathLike) -> bool:
    """Whether `root` holds VOC 2012's segmentation part (its train and val lists)."""
    splits = Path(root) / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    return (splits / "train.txt").is_file() and (splits / "val.txt").is_file()


def prepare_data(profile: Profile, *, download: bool = False, sbd: bool = False) -> Path:
    """The data root for this profile, ready to read.

    quick: generate the small synthetic set (seconds; kept and reused). full: PASCAL VOC 2012
    in `profile.data_root`, downloaded there first with `download=True` (and SBD, for the
    paper's trainaug split, with `sbd=True`; its failure only warns). When VOC is not there
    and cannot be had, stop with a `ResourceMissing` that says how to get it.
    """
    root = profile.data_root
    if profile.synthetic:
        from deeplab_kit.demo import DEMO_DATA
        from deeplab_kit.synthetic import make_synthetic_voc

        return make_synthetic_voc(root, **(QUICK_DATA if profile.name == "quick" else DEMO_DATA))
    if not voc_ready(root) and download:
        from deeplab_kit.download import DownloadError
        from deeplab_kit.download import download as fetch

        try:
            fetch("voc", root)
        except DownloadError as error:
            raise ResourceMissing(
                f"the full profile needs PASCAL VOC 2012 in {root} and it could not be "
                f"downloaded.\n{error}\nOr run with {PROFILE_VARIABLE}=quick (synthetic data)."
            ) from None
    if not voc_ready(root):
        raise ResourceMissing(
            f"the full profile needs PASCAL VOC 2012 in {root}/VOCdevkit/VOC2012 and it is not "
            f"there. Get it with 01_data.ipynb (it downloads it) or `python -m deeplab_kit "
            f"download voc --root {root}`, point DEEPLAB_KIT_DATA at a copy, or run with "
            f"{PROFILE_VARIABLE}=quick (synthetic data)."
        )
    if sbd and download:
        from deeplab_kit.download import DownloadError
        from deeplab_kit.download import download as fetch

        try:
            fetch("sbd", root)
        except DownloadError as error:
            print(f"SBD not available ({str(error).splitlines()[0]}); 'trainaug' needs it.")
    return root


def class_statistics(masks: Iterable, num_classes: int = NUM_CLASSES) -> pd.DataFrame:
    """Pixels per class over some (H, W) masks: the class imbalance in one table.

    One row per class and one for void (255, VOC's unlabelled border band): pixels, share of
    the labelled pixels (void excluded, %), share of all pixels (%), and in how many images it
    appears.
    """
    pixels = np.zeros(num_classes + 1, dtype=np.int64)  # the last entry counts void
    images = np.zeros(num_classes + 1, dtype=np.int64)
    for k, mask in enumerate(masks):
        labels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).ravel()
        labels = labels.astype(np.int64)
        bad = (labels >= num_classes) & (labels != IGNORE_INDEX) | (labels < 0)
        if bad.any():
            raise ValueError(f"mask {k}: labels {np.unique(labels[bad])[:8].tolist()} out of range")
        counts = np.bincount(np.where(labels == IGNORE_INDEX, num_classes, labels),
                             minlength=num_classes + 1)  # fmt: skip
        pixels += counts
        images += counts > 0
    labelled = pixels[:num_classes].sum()
    names = VOC_CLASSES if num_classes == len(VOC_CLASSES) else [str(c) for c in range(num_classes)]
    return pd.DataFrame(
        {
            "pixels": pixels,
            "% of labelled": np.append(100 * pixels[:num_classes] / max(labelled, 1), np.nan),
            "% of all": 100 * pixels / max(pixels.sum(), 1),
            "images": images,
        },
        index=pd.Index([*names, f"void ({IGNORE_INDEX})"], name="class"),
    )


def example_image(
    size: int = 513, classes: Sequence[str] = ("person", "dog"), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A generated picture at any size, with its mask, for figures that need no dataset (the
    atrous taps of notebook 02): uint8 (size, size, 3) RGB and (size, size) labels."""
    from deeplab_kit.synthetic import render

    unknown = [name for name in classes if name not in VOC_CLASSES[1:]]
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; choose from {list(VOC_CLASSES[1:])}")
    labels = [VOC_CLASSES.index(name) for name in classes]
    return render(np.random.default_rng([seed, size]), size, labels)


# --- trained models -----------------------------------------------------------------------


def trained_model(profile: Profile, run: str | os.PathLike, config=None):
    """The newest model in run folder `run`, in eval mode on the CPU.

    When the folder holds no checkpoint yet: in the quick profile, train `config` there first
    (seconds); in the full profile, stop with a `ResourceMissing` (train it in notebook 03).
    """
    from deeplab_kit.checkpoint import find_checkpoints, load_model

    run = Path(run)
    if not find_checkpoints(run / "checkpoints"):
        if profile.name == "full" or config is None:
            raise ResourceMissing(
                f"no trained model in {run}: train it first (03_training_sessions.ipynb, or "
                f"`python -m deeplab_kit train --out {run} ...`)"
            )
        from deeplab_kit.engine import train

        train(config, run, progress=profile.progress)
    return load_model(find_checkpoints(run / "checkpoints")[0])


def evaluate_runs(runs: Mapping[str, str | os.PathLike], data_root, *, device: str = "cpu") -> dict:
    """{name: ConfusionMatrix on the val split} for each run folder that holds a trained model,
    scored as its run's validation was (`engine.evaluate_checkpoint`); a run without one is
    left out with a message."""
    from deeplab_kit.checkpoint import find_checkpoints
    from deeplab_kit.engine import evaluate_checkpoint
    from deeplab_kit.runs import read_confusion

    scores = {}
    for name, run in runs.items():
        if not find_checkpoints(Path(run) / "checkpoints"):
            print(f"{name}: no trained model in {run}; left out")
            continue
        metrics = evaluate_checkpoint(run, data_root, device=device, progress=False)
        scores[name] = read_confusion(metrics)
    return scores


def table1(models: Mapping) -> pd.DataFrame:
    """The report's Table 1 for `models` ({name: ConfusionMatrix or scores}), beside the
    report's own numbers and the paper's mIoU, both as columns marked "(quoted)". Precision,
    recall and F1 are weighted averages (see `metrics.report_table` for why); the paper
    reports no precision, recall or F1."""
    from deeplab_kit.metrics import report_table

    table = report_table(models, quoted=True)
    paper = QUOTED_MIOU.loc[QUOTED_MIOU["source"] == "paper", "mIoU (%)"].item()
    table["paper ResNet-101 (quoted)"] = [np.nan, np.nan, np.nan, paper]
    return table


def pretrained_weights_file() -> Path:
    """Where torch keeps torchvision's DeepLabv3-ResNet50 COCO_WITH_VOC_LABELS_V1 weights."""
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    url = DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def pretrained_weights(profile: Profile) -> Path | None:
    """torchvision's DeepLabv3-ResNet50 weights (the report's "Pretrained" model) if they can
    be had: already in torch's cache, or, in the full profile only, downloaded (160 MB).
    None otherwise, with a message that says why."""
    path = pretrained_weights_file()
    if path.is_file():
        return path
    if profile.name != "full":
        print(
            f"torchvision's DeepLabv3-ResNet50 weights ({path.name}) are not in torch's cache, "
            "and the quick profile downloads nothing: the pretrained comparison is skipped."
        )
        return None
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    try:
        torch.hub.load_state_dict_from_url(
            DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1.url, map_location="cpu"
        )
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        print(
            f"torchvision's DeepLabv3-ResNet50 weights could not be downloaded ({error}): the "
            f"pretrained comparison is skipped. Put the file at {path} to use it."
        )
        return None
    return path if path.is_file() else None


# --- tables -------------------------------------------------------------------------------

CONFIG_FIELDS = (
    "backbone", "backbone_width", "output_stride", "atrous_rates", "decoder", "image_size",
    "optimizer", "lr", "schedule", "lr_steps", "lr_gamma", "batch_size", "epochs",
    "session_epochs", "device",
)  # fmt: skip


def config_table(configs: Mapping, fields: Sequence[str] = CONFIG_FIELDS) -> pd.DataFrame:
    """Some RunConfigs side by side: one row per field, one column per named config."""
    columns = {}
    for name, config in configs.items():
        values = config.to_dict()
        columns[name] = [_cell(values[field]) for field in fields]
    return pd.DataFrame(columns, index=pd.Index(list(fields), name="field"))


def _cell(value) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


# --- quoted numbers -------------------------------------------------------------------------

# Numbers from the report and the paper, with their sources (/work/shared/reference_numbers.md
# in the project's notes); shown only as quoted reference rows, never as results of the kit.
QUOTED_MIOU = pd.DataFrame(
    [
        ("paper", "paper", "ResNet-101, OS16, multi-grid (1, 2, 4), ASPP + image pooling",
         (6, 12, 18), 77.21, "VOC 2012 val", "Chen et al. 2017, as quoted by public sources"),
        ("report", "report", "the report's simplified ResNet-50 DeepLabv3, OS16, 256x256",
         (8, 12, 16), 54.81695735, "VOC 2012 val", "the report's Table 1 (MyModel)"),
        ("report", None, "torchvision's DeepLabv3-ResNet50 (COCO weights), frozen backbone",
         (12, 24, 36), 64.648292905, "VOC 2012 val", "the report's Table 1 (Pretrained)"),
        ("torchvision", None, "deeplabv3_resnet50 COCO_WITH_VOC_LABELS_V1, OS8",
         (12, 24, 36), 66.4, "COCO val2017, the 20 VOC classes (not VOC val)",
         "torchvision's model documentation"),
    ],
    columns=["source", "setting", "model", "rates", "mIoU (%)", "measured on", "quoted from"],
)  # fmt: skip
"""Quoted mIoU numbers; "setting" names the ablation setting (deeplab_kit.ablation.SETTINGS)
whose rates and data (VOC val) they share, where one does."""


def quoted_bars(quoted: pd.DataFrame = QUOTED_MIOU) -> dict[str, float]:
    """The quoted mIoU (%) of the rows that match an ablation setting, keyed as
    `ablation.percent` keys the measured ones ("paper (6, 12, 18)"), for `viz.plot_ablation`."""
    rows = quoted.dropna(subset=["setting"])
    return {
        f"{row['setting']} {tuple(row['rates'])}": float(row["mIoU (%)"])
        for _, row in rows.iterrows()
    }


# --- stored results ------------------------------------------------------------------------


def results_dir() -> Path:
    """notebooks/results of the repository checkout (see `checkout`); in Colab, a local folder
    that `stored` fills from the repository."""
    found = checkout()
    return found / "notebooks" / "results" if found else Path.cwd() / "results"


def stored(relative: str) -> Path:
    """A stored result file (notebooks/results/<relative>), read from the checkout; in Colab,
    where the kit is pip-installed without the notebooks, fetched from the repository first."""
    path = results_dir() / relative
    if path.is_file():
        return path
    if not in_colab():
        raise FileNotFoundError(f"{path}: stored result not found (it comes with the repository)")
    url = f"{raw_url()}/notebooks/results/{relative}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        urllib.request.urlretrieve(url, path)
    except (urllib.error.URLError, OSError) as error:
        raise FileNotFoundError(f"{url}: could not fetch the stored result ({error})") from None
    return path


def read_stored_json(relative: str) -> dict:
    return json.loads(stored(relative).read_text())


# --- the repository's address ------------------------------------------------------------


def _owner_repo(address: str = REPOSITORY) -> str:
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+?)(\.git)?/?", address)
    if not match:
        raise ValueError(f"{address!r} is not a https://github.com/OWNER/REPO address")
    return match[1]


def raw_url(address: str = REPOSITORY, branch: str = BRANCH) -> str:
    return f"https://raw.githubusercontent.com/{_owner_repo(address)}/{branch}"


def colab_url(notebook: str, address: str = REPOSITORY, branch: str = BRANCH) -> str:
    """The link that opens notebooks/<notebook> of the repository in Colab."""
    path = f"{_owner_repo(address)}/blob/{branch}/notebooks/{notebook}"
    return f"https://colab.research.google.com/github/{path}"


COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
NOTEBOOK_TOPICS = {
    "01_data.ipynb": "VOC 2012 or the generated set, the 21 classes, class imbalance, "
    "preprocessing, the cache",
    "02_aspp_atrous_rates.ipynb": "atrous convolution and ASPP with sliders; the rate ablation",
    "03_training_sessions.ipynb": "training in sessions that resume, one loss curve, the lr step",
    "04_report.ipynb": "the report's Table 1, per-class IoU, confusion, predictions, micro vs macro",
}


def badge_table() -> str:
    """README's notebook table: one row per notebook with its "Open in Colab" badge."""
    lines = ["| notebook | what it covers | |", "|---|---|---|"]
    for name in NOTEBOOKS:
        badge = f"[![Open In Colab]({COLAB_BADGE})]({colab_url(name)})"
        lines.append(f"| [{name}](notebooks/{name}) | {NOTEBOOK_TOPICS[name]} | {badge} |")
    return "\n".join(lines) + "\n"


_INSTALL = re.compile(r"git\+(https://github\.com/[\w.-]+/[\w.-]+?)(?:\.git)?[\"'@\s]")
_COLAB_LINK = re.compile(
    r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/([\w.-]+)/(\S+?\.ipynb)"
)


def install_address(notebook: str | os.PathLike) -> str | None:
    """The address a notebook's first code cell pip-installs the kit from (None if none)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    code = next((c for c in cells if c["cell_type"] == "code"), None)
    if code is None:
        return None
    source = "".join(code["source"])
    if f'"{COLAB_MODULE}" in sys.modules' not in source:
        return None
    match = _INSTALL.search(source + "\n")
    return match[1] if match else None


def check_repository_links(
    readme: str | None = None, notebooks_dir: str | os.PathLike | None = None
) -> list[str]:
    """Everything that disagrees with `REPOSITORY`: notebooks whose first cell does not install
    the kit from it only in Colab, and README "Open in Colab" links (if `readme`, its text, is
    given) that point elsewhere or at a missing notebook. An empty list: all agree."""
    notebooks_dir = Path(notebooks_dir) if notebooks_dir else results_dir().parent
    problems = []
    for name in NOTEBOOKS:
        path = notebooks_dir / name
        if not path.is_file():
            problems.append(f"{path}: notebook missing")
            continue
        address = install_address(path)
        if address is None:
            problems.append(f"{path}: first code cell does not pip-install git+<address> in Colab")
        elif address.rstrip("/") != REPOSITORY:
            problems.append(f"{path}: installs from {address}, not {REPOSITORY}")
    if readme is not None:
        links = _COLAB_LINK.findall(readme)
        for owner_repo, branch, target in links:
            if owner_repo != _owner_repo() or branch != BRANCH:
                problems.append(
                    f"README: Colab link to {owner_repo}@{branch}, not {_owner_repo()}@{BRANCH}"
                )
            if not (notebooks_dir.parent / target).is_file():
                problems.append(f"README: Colab link to {target}, which does not exist")
        linked = {Path(target).name for _, _, target in links}
        if links:
            problems += [
                f"README: no Colab badge for {name}" for name in NOTEBOOKS if name not in linked
            ]
    return problems
