"""What the notebooks need besides the library: profiles, data and run folders, Colab helpers.

A notebook's parameters cell reads its profile from the environment variable
`DEEPLAB_KIT_PROFILE` (in Colab, the first cell's form sets it), so one notebook runs in four
ways without editing a cell:

- `quick` (the default; what CI runs): CPU, small generated VOC-format datasets, small models
  and budgets of seconds. It shows every code path, not a converged result.
- `cpu`: a laptop CPU reproduces the stored results at their own scale (the demo run in
  03-04, the whole atrous-rate ablation in 02), minutes to an hour; the profile says how long.
- `full`: a GPU and PASCAL VOC 2012, the recipes' own models and budgets (hours). Where a
  notebook needs VOC or a GPU that is not there, it stops with a `ResourceMissing` error that
  says what is missing and how to get it. `DEEPLAB_KIT_DATA` names the folder holding
  VOCdevkit/ (default: data/ of the checkout).
- `rehearsal`: the full profile's code paths (its recipes, VOC's splits, ResNet-50, run folders
  on Drive, the evaluation protocols, the paper's inference table) on any device and any
  VOC-format tree, however small, with budgets cut to a few steps and sizes as small as still
  exercise each path: to rehearse a Colab session before spending one.

    profile = Profile.from_env()                  # DEEPLAB_KIT_PROFILE=quick|cpu|full|rehearsal
    root = prepare_data(profile)                  # synthetic set, or VOC (stops if absent)
    config = profile.config("report")             # a RunConfig sized for the profile
    run = profile.run_folder("report")            # on Google Drive in Colab when mounted

Colab, Google Drive and the repository's address are `deeplab_kit.course.colab`'s; stored results are
read through `deeplab_kit.course.results`, quoted numbers come from `deeplab_kit.course.quoted_numbers`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from deeplab_kit.backbone import IMAGENET_WEIGHTS
from deeplab_kit.config import RunConfig, flat
from deeplab_kit.course import results
from deeplab_kit.course.ablation import ABLATION_DATA, ERF_IMAGES, SEEDS
from deeplab_kit.course.colab import drive_folder, home, mount_drive
from deeplab_kit.course.demo import DEMO_DATA
from deeplab_kit.course.going_deeper import GOING_DEEPER_DATA
from deeplab_kit.course.going_deeper import SEEDS as GOING_DEEPER_SEEDS
from deeplab_kit.data.classes import VOC_CLASSES
from deeplab_kit.data.download import DownloadError
from deeplab_kit.data.download import download as fetch
from deeplab_kit.data.synthetic import make_synthetic_voc, render
from deeplab_kit.data.voc import locate_voc, sbd_folder
from deeplab_kit.evaluate import INFERENCE_SETTINGS
from deeplab_kit.model import load_model
from deeplab_kit.runtime import fingerprint
from deeplab_kit.runtime.checkpoint import find_checkpoints
from deeplab_kit.runtime.device import resolve_device
from deeplab_kit.training.loop import train

PROFILE_VARIABLE = "DEEPLAB_KIT_PROFILE"
DATA_VARIABLE = "DEEPLAB_KIT_DATA"
PROFILES = ("quick", "cpu", "full", "rehearsal")
DEFAULT_PROFILE = "quick"

# The quick profile: the demo recipe's small model (a 16-wide resnet26, 2M parameters) on a
# small synthetic set at 96 px; budgets of seconds on a 2-core CPU.
QUICK_DATA = dict(num_train=48, num_val=16, size=96, seed=0)
QUICK_BUDGET = dict(epochs=4, session_epochs=2, ablation_epochs=1, batch_size=8, eval_batch_size=16)
# The quick ablation keeps the stored ablation's geometry (128 px at output stride 8: a 16 x 16
# map), on a handful of images.
QUICK_ABLATION_DATA = {**ABLATION_DATA, "num_train": 16, "num_val": 8}
QUICK_ERF_IMAGES = 4
# A from-scratch model hardly moves in 4 short epochs at the report's 1e-4: quick runs start from
# at least this learning rate, so that their loss curves show something.
QUICK_MIN_LR = 1e-3
# Tiny models gain little from a second CPU thread (about 1.3x on an idle 2-core machine), and
# two threads collapse (OpenMP waits, 10x slower and worse) while another process keeps a core
# busy: the quick profile uses one.
QUICK_THREADS = 1
QUICK_MODEL = dict(
    backbone="resnet26",
    backbone_width=16,
    aspp_channels=64,
    aspp_dropout=0.0,
    multi_grid=None,
    extra_blocks=0,
    aux_loss=False,
    pretrained_backbone=False,
    freeze_backbone=False,
)
# The cpu profile trains the stored demo run in two sessions (03), as the stored one was made.
CPU_SESSION_EPOCHS = 5
FULL_ABLATION_EPOCHS = 20  # one Colab session per rate setting and seed
FULL_GOING_DEEPER_EPOCHS = 10  # per setting, one seed: the notebook estimates the time first
# The quick going-deeper: the stored geometry (136 px, maps of 17 down to 1), a few images.
QUICK_GOING_DEEPER_DATA = {**GOING_DEEPER_DATA, "num_train": 16, "num_val": 4}
# The rehearsal: the full profile's recipes with their models, cut to two one-epoch sessions
# (so that resuming runs too) on small inputs, one seed, two scales for multi-scale inference.
REHEARSAL = dict(epochs=2, session_epochs=1, image_size=64, scales=(0.5, 1.0), erf_images=2)


# Each profile's budgets (None: the recipe's own): the training run's epochs and session length,
# the ablation's epochs and seeds, the images per effective receptive field, torch's threads.
BUDGETS = {
    "quick": dict(
        epochs=QUICK_BUDGET["epochs"],
        session_epochs=QUICK_BUDGET["session_epochs"],
        ablation_epochs=QUICK_BUDGET["ablation_epochs"],
        ablation_seeds=(0,),
        erf_images=QUICK_ERF_IMAGES,
        threads=QUICK_THREADS,
    ),
    "cpu": dict(
        epochs=None,
        session_epochs=CPU_SESSION_EPOCHS,
        ablation_epochs=None,
        ablation_seeds=SEEDS,
        erf_images=ERF_IMAGES,
        threads=None,
    ),
    "full": dict(
        epochs=None,
        session_epochs=None,
        ablation_epochs=FULL_ABLATION_EPOCHS,
        ablation_seeds=SEEDS,
        erf_images=ERF_IMAGES,
        threads=None,
    ),
    "rehearsal": dict(
        epochs=REHEARSAL["epochs"],
        session_epochs=REHEARSAL["session_epochs"],
        ablation_epochs=1,
        ablation_seeds=(0,),
        erf_images=REHEARSAL["erf_images"],
        threads=None,
    ),
}


def _profile_name(environ: Mapping[str, str]) -> str:
    raw = environ.get(PROFILE_VARIABLE, "")
    name = raw.strip().lower() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(
            f"{PROFILE_VARIABLE}={raw!r} is not a profile; use 'quick' (CPU, synthetic data, "
            "tiny budgets), 'cpu' (a CPU reproduces the stored results), 'full' (GPU, PASCAL "
            "VOC 2012) or 'rehearsal' (the full profile's code, a few steps, any device)"
        )
    return name


class ResourceMissing(RuntimeError):
    """The profile needs something this machine lacks (VOC, a GPU, a trained run, weights).

    In Jupyter it shows as its message alone, without a traceback: it is an instruction, not
    a bug.
    """

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [f"{type(self).__name__}: {self}"]


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
        environ = os.environ if environ is None else environ
        name = _profile_name(environ)
        base = home(environ)
        drive = mount_drive() if (mount and name in ("full", "rehearsal")) else drive_folder()
        runs = (drive or base) / "runs"
        data = environ.get(DATA_VARIABLE)
        voc = Path(data).expanduser().resolve() if data else base / "data"
        synthetic = name in ("quick", "cpu")
        suffix = "-quick" if name == "quick" else ""
        device = {"full": "cuda", "rehearsal": str(resolve_device("auto"))}.get(name, "cpu")
        profile = cls(
            name=name,
            device=device,
            home=base,
            data_root=base / "data" / f"synthetic{suffix}" if synthetic else voc,
            runs_dir=runs if name == "full" else runs / name,
            cache_dir=base / "data" / "cache",
            synthetic=synthetic,
            on_drive=drive is not None,
            ablation_root=base / "data" / f"synthetic-ablation{suffix}" if synthetic else voc,
            progress=name in ("cpu", "full"),
            **BUDGETS[name],
        )
        return profile._apply_threads()

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
        kind = {
            "quick": "CPU, synthetic data, tiny budgets",
            "cpu": "CPU, synthetic data, the stored results' own budgets",
            "full": "GPU, PASCAL VOC 2012",
            "rehearsal": "the full profile's code, any device and VOC-format tree, a few steps",
        }[self.name]
        threads = f", {self.threads} thread{'s' * (self.threads > 1)}" if self.threads else ""
        missing = " (none visible here: training cells will stop)" * (
            self.device == "cuda" and not torch.cuda.is_available()
        )
        lines = [
            f"profile {self.name!r}: {kind}",
            f"  device       {self.device}{threads}{missing}",
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
            ),
        ]
        if self.name == "cpu":
            lines.append(f"  takes        {stored_durations()}")
        return "\n".join(lines)

    # --- what the profile needs -----------------------------------------------------------

    def require_gpu(self) -> str:
        """The device to train on; in the full profile, stop here when there is no GPU (the
        rehearsal runs on whatever device there is)."""
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

        if self.name == "full":
            return RunConfig.from_recipe(
                recipe, data_root=str(self.data_root), device=self.device, **overrides
            )
        if self.name == "rehearsal":
            return self._rehearsed(RunConfig.from_recipe(recipe), **overrides)
        base = RunConfig.from_recipe(recipe)
        if self.name == "cpu" and not base.pretrained_weights:
            stored = RunConfig.from_recipe(
                "demo",
                data_root=str(self.data_root),
                cache_dir=str(self.data_root / "cache"),
                session_epochs=self.session_epochs,
            )
            return stored.replace(**overrides)
        epochs = self.epochs or base.epochs
        quick = dict(
            data_root=str(self.data_root),
            device=self.device,
            train_split="train",
            image_size=self.data_size(),
            num_workers=0,
            epochs=epochs,
            lr=max(base.lr, QUICK_MIN_LR),
            batch_size=QUICK_BUDGET["batch_size"],
            eval_batch_size=QUICK_BUDGET["eval_batch_size"],
            session_epochs=self.session_epochs if base.session_epochs else None,
            lr_steps=tuple(_scaled_epoch(step, base.epochs, epochs) for step in base.lr_steps),
        )
        if not base.pretrained_weights:
            quick.update(QUICK_MODEL)
        return base.replace(**{**quick, **overrides})

    def _rehearsed(self, config: RunConfig, **overrides) -> RunConfig:
        """The full profile's `config`, cut for a rehearsal: two one-epoch sessions, small
        inputs, batches no larger than the splits, two scales, no downloads (a pretrained
        backbone only if torch has it cached), train instead of trainaug without SBD."""
        root = locate_voc(self.data_root) or self.data_root
        split = config.train_split
        if split == "trainaug" and sbd_folder(root) is None:
            print("rehearsal: no SBD here, so the paper's trainaug split is rehearsed with train")
            split = "train"
        count = _split_size(root, "train" if split == "trainaug" else split)
        scales = REHEARSAL["scales"] if tuple(config.eval_scales) != (1.0,) else (1.0,)
        pretrained = config.model.pretrained_backbone and _imagenet_weights_cached(
            config.model.backbone
        )
        cut = dict(
            data_root=str(root),
            device=self.device,
            train_split=split,
            epochs=REHEARSAL["epochs"],
            session_epochs=REHEARSAL["session_epochs"],
            image_size=REHEARSAL["image_size"],
            batch_size=max(1, min(config.batch_size, count)),
            accumulation=1,
            eval_batch_size=max(1, min(config.eval_batch_size or config.batch_size, 4)),
            eval_scales=scales,
            lr_steps=tuple(
                _scaled_epoch(s, config.epochs, REHEARSAL["epochs"]) for s in config.lr_steps
            ),
            pretrained_backbone=pretrained,
            num_workers=0,
        )
        return config.replace(**{**cut, **overrides})  # a caller's overrides win

    def data_size(self) -> int:
        """The side of the generated images of `data_root` (quick and cpu profiles)."""

        return (QUICK_DATA if self.name == "quick" else DEMO_DATA)["size"]

    def ablation_config(self):
        """The base configuration of the ASPP ablation (03): the `ablation` recipe on the
        generated 128-pixel set (quick: a few images and one epoch; cpu: exactly the stored
        ablation's, at its swept learning rate), or the `report` recipe on VOC (full;
        rehearsal: cut), all with ASPP on a 16 x 16 map."""

        if self.name in ("full", "rehearsal"):
            config = RunConfig.from_recipe(
                "report",
                data_root=str(self.data_root),
                device=self.device,
                epochs=self.ablation_epochs,
                session_epochs=None,
                lr_steps=(),
            )
            if self.name == "rehearsal":
                config = self._rehearsed(config, session_epochs=None, epochs=1, image_size=128)
            return config
        config = RunConfig.from_recipe(
            "ablation",
            data_root=str(self.ablation_root),
            device=self.device,
            cache_dir=str(self.ablation_root / "cache"),
        )
        if self.name == "quick":
            config = config.replace(
                epochs=self.ablation_epochs, batch_size=8, eval_batch_size=8, cache_dir=None
            )
        else:  # cpu: the stored ablation's own, at the learning rate its sweep chose
            config = config.replace(lr=results.stored_ablation_lr() or config.lr)
        return config

    def prepare_ablation_data(self) -> Path:
        """The ablation's data, generated if absent (quick, cpu) or VOC (full, rehearsal; see
        `prepare_data`)."""
        if not self.synthetic:
            return prepare_data(self)

        data = QUICK_ABLATION_DATA if self.name == "quick" else ABLATION_DATA
        return make_synthetic_voc(self.ablation_root, **data)

    def inference_settings(self) -> tuple:
        """The paper's Table 5 settings (OS16, OS8, + multi-scale, + flip); the quick profile
        and the rehearsal average two scales instead of six."""
        if self.name in ("quick", "rehearsal"):
            scales = REHEARSAL["scales"]
            return tuple(
                (n, s, scales if len(sc) > 1 else sc, f) for n, s, sc, f in INFERENCE_SETTINGS
            )
        return INFERENCE_SETTINGS

    # --- the going-deeper experiment (02) ---------------------------------------------------

    def going_deeper_config(self) -> RunConfig:
        """The base configuration of the going-deeper experiment (02): the `going-deeper`
        recipe at its 136-pixel geometry (quick: a few generated images, one epoch; cpu: the
        stored result's own), or on VOC with ImageNet ResNet-50, the paper's crops and
        evaluation on whole images (full; rehearsal: cut as everything else)."""
        if self.synthetic:
            config = RunConfig.from_recipe(
                "going-deeper",
                data_root=str(self.home / "data" / self._going_deeper_folder()),
                device=self.device,
                cache_dir=str(self.home / "data" / self._going_deeper_folder() / "cache"),
            )
            if self.name == "quick":
                config = config.replace(epochs=1, batch_size=8, eval_batch_size=8, cache_dir=None)
            return config
        full = RunConfig.from_recipe(
            "going-deeper",
            data_root=str(self.data_root),
            device=self.device,
            backbone="resnet50",
            backbone_width=64,
            pretrained_backbone=True,
            train_transforms="paper-train",
            val_transforms="paper-eval",
            image_size=321,
            batch_size=8,
            epochs=FULL_GOING_DEEPER_EPOCHS,
            cache_dir=None,
        )
        if self.name == "rehearsal":  # resized validation: whole images through block7 at OS8
            return self._rehearsed(full, val_transforms="report")  # take minutes a CPU lacks
        return full

    def going_deeper_seeds(self) -> tuple[int, ...]:
        return GOING_DEEPER_SEEDS if self.name == "cpu" else (0,)

    def prepare_going_deeper_data(self) -> Path:
        """The experiment's data: generated (quick, cpu) or VOC (full, rehearsal)."""
        if not self.synthetic:
            return prepare_data(self)
        data = QUICK_GOING_DEEPER_DATA if self.name == "quick" else GOING_DEEPER_DATA
        return make_synthetic_voc(self.home / "data" / self._going_deeper_folder(), **data)

    def _going_deeper_folder(self) -> str:
        return "synthetic-going-deeper" + ("-quick" if self.name == "quick" else "")

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
    """How long the cpu profile's notebooks take, from the stored results' provenance (what they
    reproduce) and the machine that made them: 02 and 03 make the two experiments, 04 trains the
    demo run twice (in two sessions, then once more in one, to compare the weights)."""
    parts, machines = [], set()
    for name, notebook, times in (
        ("going-deeper", "02", 1),
        ("ablation", "03", 1),
        ("demo", "04", 2),
    ):
        path = results.results_dir() / name / "provenance.json"
        if path.is_file():
            record = json.loads(path.read_text())
            parts.append(f"{notebook}: about {times * record['seconds'] / 60:.0f} min")
            machines.add(fingerprint.kind_of(record.get("machine", {})) or "?")
    if not parts:
        return "as long as the stored results took (see `python -m deeplab_kit results list`)"
    return "; ".join(parts) + f" (as on the machine that made them: {', '.join(sorted(machines))})"


def _split_size(root: Path, split: str) -> int:
    """How many images a VOC split file lists (0 when there is none)."""
    path = Path(root) / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation" / f"{split}.txt"
    return len(path.read_text().split()) if path.is_file() else 0


def _imagenet_weights_cached(backbone: str) -> bool:
    """Whether torchvision's ImageNet weights for `backbone` are in torch's cache already."""
    weights = IMAGENET_WEIGHTS.get(backbone)
    if weights is None:
        return False
    return (Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]).is_file()


def _scaled_epoch(epoch: int, total: int, new_total: int) -> int:
    """The epoch at the same place in a run of `new_total` epochs (never the first or past the
    last, so that a scheduled step still happens inside the shorter run)."""
    return min(new_total - 1, max(1, round(epoch * new_total / total)))


# --- data ---------------------------------------------------------------------------------


def prepare_data(profile: Profile, *, download: bool = False, sbd: bool = False) -> Path:
    """The data root for this profile, ready to read.

    quick, cpu: generate the synthetic set (seconds to a minute; kept and reused). full: PASCAL
    VOC 2012 already on disk at `profile.data_root` ($DEEPLAB_KIT_DATA), or in a VOCdevkit,
    VOC2012 or extracted-archive folder there (`data.locate_voc`); only when there is none,
    downloaded there with `download=True` (and SBD, for the paper's trainaug split, with
    `sbd=True`, unless it is there; its failure only warns). When VOC cannot be had, stop
    with a `ResourceMissing` that says how to get it or point to it.
    """

    if profile.synthetic:
        data = QUICK_DATA if profile.name == "quick" else DEMO_DATA
        return make_synthetic_voc(profile.data_root, **data)
    root = locate_voc(profile.data_root)
    if profile.name == "rehearsal":  # any VOC-format tree; nothing is downloaded
        download = False
        if sbd and root is not None and sbd_folder(root) is None:
            print(
                "rehearsal: no SBD in this tree (the paper's trainaug split needs it); going on without it"
            )
    if root is None and download:
        try:
            fetch("voc", profile.data_root)
        except DownloadError as error:
            raise ResourceMissing(
                f"the full profile needs PASCAL VOC 2012 and there is none in "
                f"{profile.data_root}, and it could not be downloaded.\n{error}\nIf you have "
                f"VOC elsewhere, set {DATA_VARIABLE} to the folder holding VOCdevkit/ (in Colab: "
                f"%env {DATA_VARIABLE}=/content/drive/MyDrive/VOC); or run with "
                f"{PROFILE_VARIABLE}=quick (synthetic data)."
            ) from None
        root = locate_voc(profile.data_root)
    if root is None:
        raise ResourceMissing(
            f"the full profile needs PASCAL VOC 2012 in {profile.data_root}/VOCdevkit/VOC2012 "
            f"and it is not there. Set {DATA_VARIABLE} to the folder holding VOCdevkit/ if you "
            f"have it elsewhere; get it with 01_data.ipynb (it downloads it) or `python -m "
            f"deeplab_kit download voc --root {profile.data_root}`; or run with "
            f"{PROFILE_VARIABLE}=quick (synthetic data)."
        )
    if sbd and download and sbd_folder(root) is None:
        try:
            fetch("sbd", root)
        except DownloadError as error:
            print(f"SBD not available ({str(error).splitlines()[0]}); 'trainaug' needs it.")
    return root


def example_image(
    size: int = 513, classes: Sequence[str] = ("person", "dog"), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A generated picture at any size, with its mask, for figures that need no dataset (the
    atrous taps of notebook 02): uint8 (size, size, 3) RGB and (size, size) labels."""

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

    run = Path(run)
    if not find_checkpoints(run / "checkpoints"):
        if profile.name == "full" or config is None:
            raise ResourceMissing(
                f"no trained model in {run}: train it first (04_training_sessions.ipynb, or "
                f"`python -m deeplab_kit train --out {run} ...`)"
            )

        train(config, run, progress=profile.progress)
    return load_model(find_checkpoints(run / "checkpoints")[0])


# A generated validation set at another size than the quick and cpu profiles' models see (the
# report preset resizes it), so that the two protocols score different masks.
PROTOCOL_DATA = dict(num_train=1, num_val=24, size=160, seed=1)


def protocol_data(profile: Profile) -> Path:
    """Data to compare the scoring protocols on (`evaluate.protocol_table`): VOC (full), or a
    generated set of `PROTOCOL_DATA['size']`-pixel images that the models' preset resizes."""
    if not profile.synthetic:
        return prepare_data(profile)

    return make_synthetic_voc(profile.home / "data" / "synthetic-protocol", **PROTOCOL_DATA)


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
            f"and the {profile.name} profile downloads nothing: the pretrained comparison is "
            "skipped."
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
    "backbone",
    "backbone_width",
    "output_stride",
    "atrous_rates",
    "decoder",
    "image_size",
    "optimizer",
    "lr",
    "schedule",
    "lr_steps",
    "lr_gamma",
    "batch_size",
    "epochs",
    "session_epochs",
    "device",
)


def config_table(configs: Mapping, fields: Sequence[str] = CONFIG_FIELDS) -> pd.DataFrame:
    """Some RunConfigs side by side: one row per field, one column per named config."""
    columns = {}
    for name, config in configs.items():
        values = flat(config)
        columns[name] = [_cell(values[field]) for field in fields]
    return pd.DataFrame(columns, index=pd.Index(list(fields), name="field"))


def _cell(value) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


def lr_step_note(config: RunConfig) -> str:
    """One line on what this run's learning-rate schedule does, so that an empty table of
    steps reads as an answer, not as a failure."""
    if config.schedule == "step" and config.lr_steps:
        epochs = ", ".join(str(e + 1) for e in config.lr_steps)
        return f"the {config.recipe} recipe multiplies the learning rate by {config.lr_gamma} from epoch {epochs}"
    return (
        f"the {config.recipe} recipe has no step: its learning rate follows a {config.schedule} "
        "schedule, so no epoch below marks one"
    )
