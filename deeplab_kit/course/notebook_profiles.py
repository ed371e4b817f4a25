"""What the notebooks need besides the library: profiles, data and run folders, Colab helpers.

A notebook's parameters cell reads its profile from the environment variable
`DEEPLAB_KIT_PROFILE` (in Colab, the first cell's form sets it), so one notebook runs in five
ways without editing a cell (`course.plan` says what each costs, per notebook):

- `quick` (the default; what CI runs): CPU, small generated VOC-format datasets, small models
  and budgets of seconds. It shows every code path, not a converged result.
- `cpu`: a laptop CPU reproduces the stored results at their own scale (the experiments of
  notebooks 03 and 04, the demo run of 05), an hour or more each; the profile says how long.
- `full`: a GPU and PASCAL VOC 2012, sized for a student's Colab: the recipes' own models, one
  seed and the few settings that carry each experiment's lesson (`STUDENT_SETTINGS`). Without
  VOC or a GPU a notebook stops with a `ResourceMissing` that says how to get it.
  `DEEPLAB_KIT_DATA` names the folder holding VOCdevkit/ (default: data/ of the checkout).
- `complete`: as `full`, with every setting of each experiment and the stored designs' seeds
  (days of GPU time: a class's, or a lab's, not one student's).
- `rehearsal`: the full profile's code paths (its recipes, VOC's splits, ResNet-50, run folders
  on Drive, the evaluation protocols, the paper's inference table) on any device and any
  VOC-format tree, however small, with budgets cut to a few steps and sizes as small as still
  exercise each path: to rehearse a Colab session before spending one.

    profile = Profile.from_env()                  # DEEPLAB_KIT_PROFILE=quick|cpu|full|...
    root = prepare_data(profile)                  # synthetic set, or VOC (stops if absent)
    config = profile.config("report")             # a RunConfig sized for the profile
    run = profile.run_folder("report")            # on Google Drive in Colab when mounted

Colab, Google Drive and the repository's address are `course.colab`'s; stored results are read
through `course.results`, quoted numbers come from `course.quoted_numbers`.
"""

from __future__ import annotations

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
from deeplab_kit.course import experiments, results
from deeplab_kit.course.ablation import ERF_IMAGES
from deeplab_kit.course.colab import drive_folder, home, mount_drive
from deeplab_kit.course.demo import DEMO_DATA
from deeplab_kit.course.going_deeper import label
from deeplab_kit.data.classes import VOC_CLASSES
from deeplab_kit.data.download import DownloadError
from deeplab_kit.data.download import download as fetch
from deeplab_kit.data.synthetic import make_rgb_mask_set, make_synthetic_voc, render
from deeplab_kit.data.voc import locate_voc, sbd_folder
from deeplab_kit.evaluate import INFERENCE_SETTINGS
from deeplab_kit.model import load_model
from deeplab_kit.runtime.arithmetic import choose
from deeplab_kit.runtime.checkpoint import find_checkpoints
from deeplab_kit.runtime.device import resolve_device
from deeplab_kit.training.loop import train

PROFILE_VARIABLE = "DEEPLAB_KIT_PROFILE"
DATA_VARIABLE = "DEEPLAB_KIT_DATA"
PROFILES = ("quick", "cpu", "full", "complete", "rehearsal")
DEFAULT_PROFILE = "quick"

# The quick profile: the demo recipe's small model (a 16-wide resnet26, 2M parameters) on a
# small synthetic set at 96 px; budgets of seconds on a 2-core CPU.
QUICK_DATA = dict(num_train=48, num_val=16, size=96, seed=0)
QUICK_BUDGET = dict(epochs=4, session_epochs=2, batch_size=8, eval_batch_size=16)
# The quick experiments keep the stored ones' geometry (image sizes, maps), on a few images.
QUICK_EXPERIMENT_DATA = dict(num_train=16, num_val=4, num_tune=0)
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
# The cpu profile trains the stored demo run in two sessions (notebook 05).
CPU_SESSION_EPOCHS = 5
# The experiments on VOC (full, complete): 20 epochs a run (one Colab session); going deeper
# with ImageNet ResNet-50 and its three cascaded blocks on the paper's crops (321 px: a 21 x 21
# map at output stride 16, 41 x 41 at 8), scored on whole images.
FULL_EXPERIMENT_EPOCHS = 20
FULL_GOING_DEEPER = dict(
    backbone="resnet50",
    backbone_width=64,
    pretrained_backbone=True,
    train_transforms="paper-train",
    val_transforms="paper-eval",
    image_size=321,
    batch_size=8,
    epochs=FULL_EXPERIMENT_EPOCHS,
    cache_dir=None,
)
# What the full profile trains of each experiment, one seed each: the settings that carry its
# lesson (the complete profile trains every setting with the stored design's seeds).
STUDENT_SETTINGS = {
    "going-deeper": (label(7, 8), label(7, 16), label(7, 32)),
    "cascaded-blocks": (label(4, 16), label(7, 16)),
    "ablation": ("dilated / paper", "undilated / paper", "undilated / rate 1"),
}
# Notebook 07's generated example of a dataset of your own (RGB masks, four classes).
OWN_EXAMPLE_DATA = dict(num_train=48, num_val=16, size=96, seed=0)
# The rehearsal: the full profile's recipes with their models, cut to two one-epoch sessions
# (so that resuming runs too) on small inputs, one seed, two scales for multi-scale inference.
REHEARSAL = dict(epochs=2, session_epochs=1, image_size=64, scales=(0.5, 1.0), erf_images=2)
# Each profile's budgets (None: the recipe's own): the training run's epochs and session length,
# the images per effective receptive field, torch's threads.
_RECIPES = dict(epochs=None, session_epochs=None, erf_images=ERF_IMAGES, threads=None)
BUDGETS = {
    "quick": dict(
        epochs=QUICK_BUDGET["epochs"],
        session_epochs=QUICK_BUDGET["session_epochs"],
        erf_images=QUICK_ERF_IMAGES,
        threads=QUICK_THREADS,
    ),
    "cpu": {**_RECIPES, "session_epochs": CPU_SESSION_EPOCHS},
    "full": dict(_RECIPES),
    "complete": dict(_RECIPES),
    "rehearsal": {
        **_RECIPES,
        "epochs": REHEARSAL["epochs"],
        "session_epochs": REHEARSAL["session_epochs"],
        "erf_images": REHEARSAL["erf_images"],
    },
}
GPU_PROFILES = ("full", "complete")
ON_DRIVE = (*GPU_PROFILES, "rehearsal")  # run folders on Google Drive, mounted in Colab
KINDS = {
    "quick": "CPU, synthetic data, tiny budgets",
    "cpu": "CPU, synthetic data, the stored results' own budgets",
    "full": "GPU, PASCAL VOC 2012, sized for a student: one seed, the telling settings",
    "complete": "GPU, PASCAL VOC 2012, every setting with the stored designs' seeds",
    "rehearsal": "the full profile's code, any device and VOC-format tree, a few steps",
}
EXPERIMENT_SCALES = {  # what each profile trains of an experiment
    "quick": "every setting, one seed, one epoch on a few images",
    "cpu": "the stored designs, remade (`course.plan` says how long they took)",
    "full": f"one seed, the telling settings, {FULL_EXPERIMENT_EPOCHS} epochs each",
    "complete": f"every setting, the stored designs' seeds, {FULL_EXPERIMENT_EPOCHS} epochs",
    "rehearsal": "the telling settings, one seed, cut to a few steps",
}


def _profile_name(environ: Mapping[str, str]) -> str:
    raw = environ.get(PROFILE_VARIABLE, "")
    name = raw.strip().lower() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(
            f"{PROFILE_VARIABLE}={raw!r} is not a profile; use one of: "
            + "; ".join(f"'{name}' ({kind})" for name, kind in KINDS.items())
        )
    return name


class ResourceMissing(RuntimeError):
    """The profile needs something this machine lacks (VOC, a GPU, a trained run, weights).
    Jupyter shows its message alone, without a traceback: it is an instruction, not a bug."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class Profile:
    """Where a notebook's data and runs live, on which device, with which budgets (None: the
    recipe's own). Build it with `Profile.from_env()`."""

    name: str  # one of PROFILES
    device: str  # "cpu" (quick, cpu) or "cuda" (full)
    home: Path  # the folder data/ and runs/ are under (shown paths are relative to it)
    data_root: Path  # the folder holding VOCdevkit/VOC2012 (generated unless full)
    runs_dir: Path  # run folders; on Google Drive in Colab when it is mounted
    cache_dir: Path  # decoded-image caches
    synthetic: bool  # a generated VOC-format set instead of VOC 2012
    on_drive: bool
    epochs: int | None  # a training run's length (05, 06)
    session_epochs: int | None  # epochs per session (05)
    erf_images: int  # validation images per effective receptive field (04)
    threads: int | None  # torch's CPU threads (None: torch's default)
    progress: bool  # progress bars (off in quick mode: CI logs and stable outputs)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, mount: bool = True) -> Profile:
        """The profile named by $DEEPLAB_KIT_PROFILE ("quick" if unset). Also read:
        $DEEPLAB_KIT_DATA (the folder holding VOCdevkit) and $DEEPLAB_KIT_HOME (see `home`). In
        Colab with a GPU profile or the rehearsal, Google Drive is mounted (with `mount`) so
        that run folders outlive the session. The quick profile sets torch's CPU threads to
        `QUICK_THREADS`, for the kernel the notebook runs in."""
        environ = os.environ if environ is None else environ
        name = _profile_name(environ)
        base = home(environ)
        drive = mount_drive() if (mount and name in ON_DRIVE) else drive_folder()
        runs = (drive or base) / "runs"
        data = environ.get(DATA_VARIABLE)
        voc = Path(data).expanduser().resolve() if data else base / "data"
        synthetic = name in ("quick", "cpu")
        suffix = "-quick" if name == "quick" else ""
        device = "cuda" if name in GPU_PROFILES else "cpu"
        device = str(resolve_device("auto")) if name == "rehearsal" else device
        profile = cls(
            name=name,
            device=device,
            home=base,
            data_root=base / "data" / f"synthetic{suffix}" if synthetic else voc,
            runs_dir=runs if name in GPU_PROFILES else runs / name,
            cache_dir=base / "data" / "cache",
            synthetic=synthetic,
            on_drive=drive is not None,
            progress=name in ("cpu", *GPU_PROFILES),
            **BUDGETS[name],
        )
        if profile.threads is not None:
            torch.set_num_threads(profile.threads)
        return profile

    def shown(self, path: Path) -> str:
        """A path as the notebooks print it: relative to `home` when under it (a notebook's
        stored outputs show no machine's own folders)."""
        try:
            return str(Path(path).relative_to(self.home))
        except ValueError:
            return str(path)

    def __repr__(self) -> str:
        threads = f", {self.threads} thread{'s' * (self.threads > 1)}" if self.threads else ""
        missing = " (none visible here: training cells will stop)" * (
            self.device == "cuda" and not torch.cuda.is_available()
        )
        lines = [
            f"profile {self.name!r}: {KINDS[self.name]}",
            f"  device       {self.device}{threads}{missing}",
            f"  data         {self.shown(self.data_root)}",
            f"  runs         {self.shown(self.runs_dir)}" + ("  (Google Drive)" * self.on_drive),
            "  training     "
            + (f"{self.epochs} epochs" if self.epochs else "the recipes' epochs")
            + (f", {self.session_epochs} per session" if self.session_epochs else ""),
            "  experiments  " + EXPERIMENT_SCALES[self.name],
        ]
        return "\n".join(lines)

    # --- what the profile needs -----------------------------------------------------------

    def require_gpu(self) -> str:
        """The device to train on; in the full profile, stop here when there is no GPU (the
        rehearsal runs on whatever device there is)."""
        if self.name in GPU_PROFILES and not torch.cuda.is_available():
            raise ResourceMissing(
                "the full profile trains on a GPU and torch sees none here. In Colab: Runtime > "
                "Change runtime type > GPU. Or run this notebook with "
                f"{PROFILE_VARIABLE}=quick (CPU, synthetic data, seconds) or =cpu (the stored "
                "results, on this CPU)."
            )
        return self.device

    # --- run configurations and folders ---------------------------------------------------

    def config(self, recipe: str, **overrides):
        """`RunConfig.from_recipe(recipe)` for this profile's data, device and budgets. full: the
        recipe as it is, on `data_root`. cpu: the stored demo run's configuration in place of a
        recipe that needs VOC, in sessions of `CPU_SESSION_EPOCHS`. quick: the recipe's
        optimiser, schedule, rates and output stride on the demo's small model at 96 px,
        `epochs` long, at a learning rate of at least `QUICK_MIN_LR`, a step of the learning
        rate in its place in the run (the report's at epoch 100 of 200 comes at 2 of 4).
        Recipes that load torchvision's weights keep their model."""
        if self.name in GPU_PROFILES:
            return RunConfig.from_recipe(
                recipe, data_root=str(self.data_root), device=self.device, **overrides
            )
        if self.name == "rehearsal":
            return self._rehearsed(RunConfig.from_recipe(recipe), **overrides)
        base = RunConfig.from_recipe(recipe)
        if self.name == "cpu" and not base.pretrained_weights:
            return RunConfig.from_recipe(
                "demo",
                data_root=str(self.data_root),
                cache_dir=str(self.data_root / "cache"),
                session_epochs=self.session_epochs,
            ).replace(**overrides)
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
            lr_steps=_scaled_steps(base, epochs),
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
        model = config.model  # a pretrained backbone only if torch has it cached
        pretrained = model.pretrained_backbone and _imagenet_weights_cached(model.backbone)
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
            eval_scales=REHEARSAL["scales"] if tuple(config.eval_scales) != (1.0,) else (1.0,),
            lr_steps=_scaled_steps(config, REHEARSAL["epochs"]),
            pretrained_backbone=pretrained,
            num_workers=0,
        )
        return config.replace(**{**cut, **overrides})  # a caller's overrides win

    def data_size(self) -> int:
        """The side of the generated images of `data_root` (quick and cpu profiles)."""
        return (QUICK_DATA if self.name == "quick" else DEMO_DATA)["size"]

    def inference_settings(self) -> tuple:
        """The paper's Table 5 settings (OS16, OS8, + multi-scale, + flip); the quick profile
        and the rehearsal average two scales instead of six."""
        if self.name not in ("quick", "rehearsal"):
            return INFERENCE_SETTINGS
        two = REHEARSAL["scales"]
        return tuple((n, s, two if len(sc) > 1 else sc, f) for n, s, sc, f in INFERENCE_SETTINGS)

    # --- the experiments (03: going-deeper, cascaded-blocks; 04: ablation) ---------------------

    def experiment_config(self, name: str) -> RunConfig:
        """The base configuration of stored experiment `name` in this profile. quick: its recipe
        and geometry on a few generated images, one epoch. cpu: the stored make's own (its
        data, its swept learning rate, the arithmetic this machine's rule picks). full,
        complete: on VOC, `FULL_EXPERIMENT_EPOCHS` per run: going deeper with ImageNet
        ResNet-50 on the paper's crops, scored on whole images; the ablation with the report's
        recipe (256 px at output stride 16: the same 16 x 16 map). rehearsal: the full one cut
        to a few steps."""
        if self.synthetic:
            return self._synthetic_experiment(name)
        on_voc = dict(data_root=str(self.data_root), device=self.device)
        if name == "ablation":
            full = RunConfig.from_recipe("report", **on_voc)
            full = full.replace(epochs=FULL_EXPERIMENT_EPOCHS, session_epochs=None, lr_steps=())
        else:
            full = RunConfig.from_recipe("going-deeper", **FULL_GOING_DEEPER, **on_voc)
        if self.name == "rehearsal":  # resized validation: whole images through block7 at OS8
            return self._rehearsed(full, session_epochs=None, val_transforms="report")
        return full

    def _synthetic_experiment(self, name: str) -> RunConfig:
        config = results.experiment_config(name, choose(torch.device("cpu")))
        folder = self.home / "data" / (Path(config.data_root).name + "-quick" * self.quick)
        config = config.replace(
            data_root=str(folder), cache_dir=str(folder / "cache"), device=self.device
        )
        if name == "ablation":
            config = config.replace(lr=results.stored_ablation_lr() or config.lr)
        if self.quick:
            config = config.replace(epochs=1, batch_size=8, eval_batch_size=8, cache_dir=None)
        return config

    @property
    def quick(self) -> bool:
        return self.name == "quick"

    def experiment_data(self, name: str) -> Path:
        """Experiment `name`'s data: generated (quick: a few images; cpu: the stored make's
        own) or VOC (see `prepare_data`)."""
        if not self.synthetic:
            return prepare_data(self)
        data = {**results.RESULTS[name].data, **(QUICK_EXPERIMENT_DATA if self.quick else {})}
        return make_synthetic_voc(self.experiment_config(name).data_root, **data)

    def experiment_labels(self, name: str) -> tuple[str, ...] | None:
        """The settings of experiment `name` this profile trains (None: every one)."""
        return STUDENT_SETTINGS[name] if self.name in ("full", "rehearsal") else None

    def experiment_seeds(self, name: str) -> tuple[int, ...] | None:
        """The seeds this profile trains each setting with (None: the stored design's)."""
        return None if self.name in ("cpu", "complete") else (0,)

    def experiment_estimate(self, name: str, base: RunConfig) -> pd.DataFrame:
        """Before experiment `name` trains: for each setting this profile runs, a training
        step's seconds timed here on the run's device and the minutes its runs would take on
        the training split, validation aside."""
        settings = results.experiment_settings(name, base)
        labels = self.experiment_labels(name) or tuple(settings)
        seeds = self.experiment_seeds(name)
        runs = {label: len(seeds or results.design_seeds(name, label)) for label in labels}
        root = locate_voc(base.data_root) or Path(base.data_root)
        train_images = _split_size(root, base.train_split.replace("trainaug", "train"))
        chosen = {label: settings[label] for label in labels}
        return experiments.estimate_minutes(chosen, runs, train_images)

    def run_folder(self, name: str, *, fresh: bool = False) -> Path:
        """The run folder `name` under `runs_dir` (train() creates it). With `fresh=True` the
        quick profile deletes its previous run of that name first (a quick run only shows the
        code path, and a re-run should show the same); the others never delete a run: the same
        cell resumes it."""
        if not re.fullmatch(r"\w[\w.-]*", name):  # no separators, no "..": stays in runs_dir
            raise ValueError(f"run name {name!r}: use letters, digits, '.', '-' and '_' only")
        folder = self.runs_dir / name
        if fresh and self.name == "quick" and folder.exists():
            shutil.rmtree(folder)
        return folder


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


def _scaled_steps(config: RunConfig, epochs: int) -> tuple[int, ...]:
    """`config`'s learning-rate steps at the same places in a run of `epochs` epochs (never the
    first or past the last, so that each still happens inside the shorter run)."""
    total = config.epochs
    return tuple(min(epochs - 1, max(1, round(step * epochs / total))) for step in config.lr_steps)


def prepare_data(profile: Profile, *, download: bool = False, sbd: bool = False) -> Path:
    """The data root for this profile, ready to read. quick, cpu: the synthetic set, generated
    (seconds to a minute; kept and reused). full: PASCAL VOC 2012 already at `data_root`
    ($DEEPLAB_KIT_DATA) or in a VOCdevkit, VOC2012 or extracted-archive folder there
    (`data.locate_voc`); only when there is none, downloaded with `download=True` (and SBD, for
    the trainaug split, with `sbd=True` unless it is there; its failure only warns). When VOC
    cannot be had, stop with a `ResourceMissing` that says how to get it or point to it."""
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


def own_data(profile: Profile, folder: str | os.PathLike = "") -> Path:
    """The dataset of notebook 07: `folder` when given (your own: VOC's folder tree, masks as
    class indices, a palette or RGB colours, and a classes.txt beside VOCdevkit/), else a
    generated one in that form (`synthetic.make_rgb_mask_set`: four classes, RGB masks)."""
    if str(folder).strip():
        root = Path(folder).expanduser().resolve()
        if locate_voc(root) is None:
            raise ResourceMissing(
                f"{root}: no VOCdevkit/VOC2012 with JPEGImages, SegmentationClass and "
                "ImageSets/Segmentation/{train,val}.txt there (data/README.md shows the layout)"
            )
        return root
    return make_rgb_mask_set(profile.home / "data" / "own-example", **OWN_EXAMPLE_DATA)


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


def trained_model(profile: Profile, run: str | os.PathLike, config=None):
    """The newest model in run folder `run`, in eval mode on the CPU. Without a checkpoint
    there, `config` is trained first (seconds in the quick profile); a GPU profile, or no
    `config`, stops with a `ResourceMissing` (train it in notebook 05)."""
    run = Path(run)
    if not find_checkpoints(run / "checkpoints"):
        if profile.name in GPU_PROFILES or config is None:
            raise ResourceMissing(
                f"no trained model in {run}: train it first (05_training_sessions.ipynb, or "
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
    if profile.name not in GPU_PROFILES:
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


CONFIG_FIELDS = tuple(
    "backbone backbone_width output_stride atrous_rates decoder image_size optimizer lr schedule "
    "lr_steps lr_gamma batch_size epochs session_epochs device".split()
)


def config_table(configs: Mapping, fields: Sequence[str] = CONFIG_FIELDS) -> pd.DataFrame:
    """Some RunConfigs side by side: one row per field, one column per named config."""
    values = {name: flat(config) for name, config in configs.items()}
    columns = {name: [_cell(v[field]) for field in fields] for name, v in values.items()}
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
