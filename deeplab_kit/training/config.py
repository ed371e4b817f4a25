"""One dataclass for a training run, and the named recipes the kit ships.

`RunConfig` holds everything a run needs: the model (the arguments of `build_model`), the data,
the optimiser and its schedule, sessions and checkpoints, speed and reproducibility switches,
and evaluation. A recipe is a named set of values; every field can be overridden:

    config = RunConfig.from_recipe("report", lr=1e-3, data_root="data/VOC")
    python -m deeplab_kit train --recipe report --lr 1e-3 --atrous-rates 8,12,16 ...

`to_dict` / `from_dict` give plain data (lists, numbers, strings) for checkpoints and JSON.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field

from deeplab_kit.data.classes import NUM_CLASSES

# This module imports no torch: the command line builds its options (and answers --help) from
# it in a fraction of torch's import time.

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "poly", "cosine")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
# Schedules whose learning rate at an epoch depends on the run's total epochs.
SCHEDULES_OVER_EPOCHS = ("poly", "cosine")

# Named model configurations; `from_preset(name, **overrides)` builds one.
MODEL_PRESETS = {
    # The report: ResNet-50, output stride 16, rates (8, 12, 16), no multi-grid.
    "report": dict(backbone="resnet50", output_stride=16, atrous_rates=(8, 12, 16)),
    # The paper's best ResNet setting for training: OS16, multi-grid (1, 2, 4), rates (6, 12, 18).
    "paper": dict(
        backbone="resnet50", output_stride=16, multi_grid=(1, 2, 4), atrous_rates=(6, 12, 18)
    ),
    # The paper's evaluation setting: OS8 doubles the rates.
    "paper-os8": dict(
        backbone="resnet50", output_stride=8, multi_grid=(1, 2, 4), atrous_rates=(12, 24, 36)
    ),
    # torchvision's deeplabv3_resnet50: OS8, its own dilations, rates (12, 24, 36), FCN aux head.
    "torchvision": dict(
        backbone="resnet50", output_stride=8, atrous_rates=(12, 24, 36), aux_loss=True
    ),
}


def _help(text: str, **kwargs):
    """A dataclass field with its help text (shown by the CLI's --help)."""
    return field(metadata={"help": text}, **kwargs)


@dataclass
class RunConfig:
    """Everything a training run needs. Build one with `RunConfig.from_recipe(name, **overrides)`."""

    recipe: str = _help("the recipe these values started from (a label only)", default="custom")

    # --- model: the arguments of deeplab_kit.model.build_model -----------------------------
    num_classes: int = _help("classes, background included", default=NUM_CLASSES)
    backbone: str = _help("resnet26, resnet50 or resnet101", default="resnet50")
    backbone_width: int = _help(
        "channels of the stem and first stage (64: torchvision's; 16 or 32: CPU-sized)", default=64
    )
    output_stride: int = _help(
        "input size / feature size: 8, 16 or 32 (up to 256 with cascaded blocks)", default=16
    )
    atrous_rates: tuple[int, ...] = _help("ASPP rates, e.g. 6,12,18", default=(6, 12, 18))
    multi_grid: tuple[int, ...] | None = _help(
        "layer4 unit rates, e.g. 1,2,4 (none: torchvision's dilations)", default=None
    )
    extra_blocks: int = _help("cascaded copies of block4 (0..3: block5..block7)", default=0)
    backbone_stages: int = _help(
        "ResNet stages kept: 4 (all), or 3 or 2 for a backbone with a small receptive field",
        default=4,
    )
    aspp: bool = _help("ASPP head (false: the cascaded model's 1x1 classifier)", default=True)
    image_pooling: bool = _help("ASPP's image-level branch", default=True)
    aux_loss: bool = _help("FCN auxiliary head on layer3 (loss weight aux_weight)", default=False)
    decoder: bool = _help("DeepLabv3+ decoder", default=False)
    aspp_channels: int = _help("width of the ASPP branches and head", default=256)
    aspp_dropout: float = _help("dropout after ASPP's projection (0.5 in torchvision)", default=0.5)
    pretrained_backbone: bool | str = _help(
        "ImageNet backbone: true (download), false, or a path to a saved ResNet state dict",
        default=False,
    )
    freeze_backbone: bool = _help(
        "train only the head; the backbone stays in eval mode", default=False
    )
    pretrained_weights: str | None = _help(
        "torchvision DeepLabV3-ResNet50 weights for the whole model (new classifier): a "
        "DeepLabV3_ResNet50_Weights name such as COCO_WITH_VOC_LABELS_V1, or a file path",
        default=None,
    )

    # --- data -------------------------------------------------------------------------------
    data_root: str | None = _help("folder holding VOCdevkit/VOC2012", default=None)
    train_split: str = _help("training split: train, trainaug, trainval", default="train")
    val_split: str = _help("validation split", default="val")
    train_transforms: str = _help(
        "training transform preset (deeplab_kit.data.transforms.TRANSFORM_PRESETS)",
        default="report",
    )
    val_transforms: str = _help("validation transform preset", default="report")
    image_size: int = _help("resize size (report presets) or crop size (paper-train)", default=256)
    hflip: bool | None = _help(
        "random left-right flips in training (none: as the train_transforms preset has it)",
        default=None,
    )
    cache_dir: str | None = _help("decoded-image cache folder (none: no cache)", default=None)
    num_workers: int = _help("DataLoader worker processes", default=0)

    # --- optimisation -----------------------------------------------------------------------
    optimizer: str = _help("adam, adamw or sgd", default="adam")
    lr: float = _help("initial learning rate", default=1e-4)
    weight_decay: float = _help("L2 weight decay", default=0.0)
    momentum: float = _help("SGD momentum", default=0.9)
    schedule: str = _help(
        "constant; step (lr x lr_gamma at each epoch in lr_steps); poly or cosine (per iteration)",
        default="constant",
    )
    lr_steps: tuple[int, ...] = _help(
        "epochs at which a step schedule multiplies the lr", default=()
    )
    lr_gamma: float = _help("factor of a step schedule", default=0.1)
    poly_power: float = _help("power of the poly schedule", default=0.9)
    warmup_epochs: float = _help(
        "linear warm-up of the lr from 0 over this many epochs (0: none)", default=0.0
    )
    # torchvision's reference segmentation training (references/segmentation/train.py) weighs
    # the aux loss 0.5 and gives the aux head 10x the learning rate; PSPNet and mmsegmentation
    # weigh it 0.4. The kit's aux head is torchvision's FCN head, so it takes torchvision's.
    aux_weight: float = _help(
        "weight of the auxiliary loss (torchvision's reference: 0.5; PSPNet, mmsegmentation: 0.4)",
        default=0.5,
    )
    aux_lr_factor: float = _help(
        "the aux head's learning rate as a multiple of lr (torchvision's reference: 10)",
        default=10.0,
    )
    batch_size: int = _help("images per step (per process under torchrun)", default=4)
    accumulation: int = _help("batches whose gradients add up to one optimiser step", default=1)
    epochs: int = _help("total epochs of the run", default=200)

    # --- sessions and checkpoints -----------------------------------------------------------
    session_epochs: int | None = _help(
        "end this session after K epochs (none: no limit)", default=None
    )
    session_minutes: float | None = _help(
        "end this session after M minutes (none: no limit)", default=None
    )
    checkpoint_every: int = _help(
        "also checkpoint every S optimiser steps (0: epoch ends only)", default=0
    )
    keep_last: int = _help("checkpoints kept besides best.pt", default=2)
    tensorboard: bool = _help(
        "also write TensorBoard curves and a prediction image under the run folder",
        default=False,
    )

    # --- reproducibility and speed ----------------------------------------------------------
    seed: int = _help(
        "seed of the weights, the data order, the augmentation and dropout", default=0
    )
    amp: str = _help(
        "auto (the fastest precision that keeps accuracy, timed on this machine), bf16, fp16 "
        "or off",
        default="auto",
    )
    channels_last: bool | str = _help(
        "channels_last memory format: auto (timed on this machine), true or false",
        default="auto",
    )
    device: str = _help("auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps", default="auto")
    deterministic: bool = _help(
        "deterministic GPU kernels (slower; CPU runs are exact anyway)", default=False
    )
    sync_bn: bool = _help("SyncBatchNorm across processes under torchrun", default=False)

    # --- evaluation -------------------------------------------------------------------------
    eval_batch_size: int | None = _help("validation batch size (none: batch_size)", default=None)
    eval_scales: tuple[float, ...] = _help(
        "scales of the final evaluation, e.g. 0.75,1,1.25", default=(1.0,)
    )
    eval_flip: bool = _help("add flipped inputs to the final evaluation", default=False)

    def __post_init__(self) -> None:
        # Plain data (lists from JSON or a checkpoint) back to the declared types.
        for name, kind in _field_types().items():
            setattr(self, name, _coerce(name, getattr(self, name), kind))
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_CHOICES)
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise ValueError(
                f"channels_last must be true, false or auto, got {self.channels_last!r}"
            )
        for name in ("batch_size", "accumulation", "epochs", "keep_last", "num_classes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("session_epochs", "eval_batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1 or none, got {getattr(self, name)}")
        if self.session_minutes is not None and self.session_minutes <= 0:
            raise ValueError(
                f"session_minutes must be positive or none, got {self.session_minutes}"
            )
        if self.checkpoint_every < 0 or self.num_workers < 0:
            raise ValueError("checkpoint_every and num_workers must be >= 0")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not self.eval_scales or any(scale <= 0 for scale in self.eval_scales):
            raise ValueError(f"eval_scales must be positive numbers, got {list(self.eval_scales)}")
        if self.lr <= 0 or self.aux_lr_factor <= 0:
            raise ValueError(
                f"lr and aux_lr_factor must be positive, got {self.lr} and {self.aux_lr_factor}"
            )

    # --- building ---------------------------------------------------------------------------

    @classmethod
    def from_recipe(cls, name: str = "report", **overrides) -> RunConfig:
        """The recipe `name` (one of `RECIPES`: report, paper, pretrained, demo and the stored
        experiments'), with fields overridden."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
        return cls.from_dict({**RECIPES[name], "recipe": name, **overrides})

    @classmethod
    def from_dict(cls, values: typing.Mapping) -> RunConfig:
        """A config from plain data; an unknown key is an error that suggests the closest field."""
        known = set(field_names())
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config field {key!r}{hint}")
        return cls(**values)

    def to_dict(self) -> dict:
        """Plain data: tuples become lists, so it goes to JSON and into a weights_only checkpoint."""
        return {
            name: list(value) if isinstance(value, tuple) else value
            for name, value in dataclasses.asdict(self).items()
        }

    def replace(self, **overrides) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **overrides})

    def model_kwargs(self) -> dict:
        """The `build_model` arguments."""
        return {name: getattr(self, name) for name in MODEL_FIELDS}


# --- field introspection ------------------------------------------------------------------


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(RunConfig)]


def field_help(name: str) -> str:
    return next(f.metadata.get("help", "") for f in dataclasses.fields(RunConfig) if f.name == name)


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(RunConfig)


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _options(kind) -> tuple:
    """The members of a union type (`int | None` -> (int, NoneType)), or (kind,)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return typing.get_args(kind)
    return (kind,)


def _coerce(name: str, value, kind):
    """`value` as the declared type: lists become tuples, ints become floats where declared."""
    options = _options(kind)
    if value is None and type(None) in options:
        return None
    for option in options:
        if typing.get_origin(option) is tuple:
            if isinstance(value, (list, tuple)):
                item = typing.get_args(option)[0]
                return tuple(_coerce(name, v, item) for v in value)
        elif option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif option in (bool, str) and isinstance(value, option):
            return value
    raise ValueError(f"config field {name!r} expects {_type_name(kind)}, got {value!r}")


def _type_name(kind) -> str:
    names = []
    for option in _options(kind):
        if typing.get_origin(option) is tuple:
            names.append(f"a list of {typing.get_args(option)[0].__name__}")
        else:
            names.append("none" if option is type(None) else option.__name__)
    return " or ".join(names)


def parse_value(name: str, text: str):
    """A command-line string as the value of field `name`: "8,12,16" -> (8, 12, 16),
    "true"/"false" -> bool, "none" -> None, "1e-3" -> 0.001."""
    kind = _field_types()[name]
    options = _options(kind)
    if text.strip().lower() in ("none", "null", "") and type(None) in options:
        return None
    for option in options:
        try:
            if typing.get_origin(option) is tuple:
                item = typing.get_args(option)[0]
                return tuple(item(v) for v in text.split(",") if v.strip())
            if option is bool:
                lowered = text.strip().lower()
                if lowered in ("true", "yes", "on", "1"):
                    return True
                if lowered in ("false", "no", "off", "0"):
                    return False
                continue
            if option is not type(None):
                return option(text)
        except ValueError:
            continue
    raise ValueError(f"--{name.replace('_', '-')} expects {_type_name(kind)}, got {text!r}")


# The build_model arguments that define the network (its `model.config`); the config fields
# of the same names are checked against a checkpoint before resuming. (tests/test_config.py
# checks that they are build_model's parameters.)
MODEL_FIELDS = (
    "num_classes",
    "backbone",
    "output_stride",
    "atrous_rates",
    "multi_grid",
    "extra_blocks",
    "backbone_stages",
    "aspp",
    "image_pooling",
    "aux_loss",
    "decoder",
    "aspp_channels",
    "backbone_width",
    "aspp_dropout",
    "pretrained_backbone",
    "freeze_backbone",
)
ARCHITECTURE_FIELDS = tuple(f for f in MODEL_FIELDS if f != "pretrained_backbone")
# Fields that shape the optimisation: resuming with other values would not continue the same run.
TRAINING_FIELDS = (
    "train_split",
    "train_transforms",
    "image_size",
    "hflip",
    "optimizer",
    "lr",
    "weight_decay",
    "momentum",
    "schedule",
    "lr_steps",
    "lr_gamma",
    "poly_power",
    "warmup_epochs",
    "aux_weight",
    "aux_lr_factor",
    "batch_size",
    "accumulation",
    "seed",
)


# --- recipes -------------------------------------------------------------------------------

_DEMO = dict(
    backbone="resnet26",
    backbone_width=16,
    output_stride=16,
    atrous_rates=(1, 2, 3),
    aspp_channels=64,
    aspp_dropout=0.0,
    decoder=True,
    train_transforms="report",
    val_transforms="report",
    image_size=96,
    hflip=True,
    optimizer="adamw",
    lr=6e-3,
    weight_decay=1e-4,
    schedule="cosine",
    warmup_epochs=1,
    batch_size=16,
    eval_batch_size=50,
    epochs=10,
    keep_last=1,
)
RECIPES: dict[str, dict] = {
    # The report: ResNet-50 at OS16 with rates (8, 12, 16), 256x256 resize, Adam at 1e-4, batch 4,
    # 200 epochs in Colab sessions of 20. Its "divide the learning rate by 10" came in a later
    # session; its Figure 3 is "6th session ... after slicing learning rate by 10", and with 20
    # epochs a session the 6th session starts at epoch 100. The kit reads it as a scheduled step:
    # lr x 0.1 from epoch 100 (the first epoch of session 6) on.
    "report": dict(
        **MODEL_PRESETS["report"],
        train_transforms="report",
        val_transforms="report",
        image_size=256,
        optimizer="adam",
        lr=1e-4,
        schedule="step",
        lr_steps=(100,),
        lr_gamma=0.1,
        batch_size=4,
        epochs=200,
        session_epochs=20,
    ),
    # The paper: ImageNet ResNet-50, OS16, multi-grid (1, 2, 4), rates (6, 12, 18), no auxiliary
    # loss (the paper trains none; --aux-loss adds torchvision's, weighted as aux_weight); SGD with
    # momentum 0.9 and weight decay 1e-4, poly lr 0.007 (power 0.9) per iteration, batch 16,
    # crops of 513 with random scale and flip, batch norm trained ("fine-tuned") at OS16, on
    # trainaug. 30k iterations at batch 16 are 30000 * 16 / 10582 = 45.4 epochs: 46 here.
    # On a small GPU keep the effective batch: --batch-size 4 --accumulation 4 (batch-norm
    # statistics then come from 4 images at a time).
    "paper": dict(
        **MODEL_PRESETS["paper"],
        pretrained_backbone=True,
        train_split="trainaug",
        train_transforms="paper-train",
        val_transforms="paper-eval",
        image_size=513,
        optimizer="sgd",
        lr=0.007,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        batch_size=16,
        epochs=46,
    ),
    # The report's comparison model: torchvision's DeepLabv3-ResNet50 with its COCO weights
    # (VOC's 20 categories), frozen backbone, a new classifier trained with the report's setup.
    # The aux head is dropped: with the backbone frozen it would only train itself. The report
    # gives no epoch count for it; 20 (one Colab session) is the kit's choice.
    "pretrained": dict(
        **{**MODEL_PRESETS["torchvision"], "aux_loss": False},
        pretrained_weights="COCO_WITH_VOC_LABELS_V1",
        freeze_backbone=True,
        train_transforms="report",
        val_transforms="report",
        image_size=256,
        optimizer="adam",
        lr=1e-4,
        batch_size=4,
        epochs=20,
    ),
    # Small enough for a 2-core CPU on the synthetic dataset (`python -m deeplab_kit demo`): a
    # DeepLabv3+ on a quarter-width resnet26 (2.0M parameters) at 96 px, where the OS16 map is
    # 6 x 6, hence rates (1, 2, 3); AdamW 6e-3 with a 1-epoch warm-up and a cosine decay (these
    # learned the generated shapes fastest in benchmarks/synthetic_learnability.py); no ASPP
    # dropout for a short run.
    "demo": _DEMO,
    # The ASPP rate ablation (deeplab_kit.course.ablation): ASPP on the report's own 16 x 16 map
    # (128-pixel generated images at output stride 8, as 256-pixel images at OS16), with ASPP
    # as the only path to the scores (no decoder), on the demo's quarter-width resnet26 (the
    # "dilated" arm; the "small field" arm cuts it after layer2). 16 epochs, so that the last
    # two are the cosine schedule's tail; the learning rate is the stored sweep's choice.
    "ablation": {
        **_DEMO,
        "output_stride": 8,
        "atrous_rates": (8, 12, 16),
        "image_pooling": False,
        "decoder": False,
        "image_size": 128,
        "epochs": 16,
    },
    # The paper's going-deeper experiment (deeplab_kit.course.going_deeper): the quarter-width
    # resnet26 with its three cascaded copies of block4 (block5..block7) and no ASPP (a 1x1
    # classifier, `aspp=False`), at output stride 16 unless a setting says otherwise; 136-pixel
    # images, where output strides 8..256 give maps of 17, 9, 5, 3, 2 and 1 pixels.
    "going-deeper": {
        **_DEMO,
        "decoder": False,
        "aspp": False,
        "extra_blocks": 3,
        "output_stride": 16,
        "image_size": 136,
        "epochs": 16,
    },
}


def recipes_table(differing_only: bool = True) -> str:
    """The recipes side by side as text: one row per field, one column per recipe (only the
    fields where they differ, unless `differing_only` is False)."""
    configs = {name: RunConfig.from_recipe(name).to_dict() for name in RECIPES}
    rows = []
    for name in field_names():
        values = [_shown(configs[recipe][name]) for recipe in RECIPES]
        if name != "recipe" and (not differing_only or len(set(values)) > 1):
            rows.append([name, *values])
    header = ["field", *RECIPES]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


# --- the command line ----------------------------------------------------------------------

# Fields the CLI does not offer as --options: the recipe label (set by --recipe).
_NOT_ON_CLI = ("recipe",)


def add_arguments(parser, *, exclude: typing.Iterable[str] = ()) -> None:
    """One --option per RunConfig field (`--atrous-rates 8,12,16`, `--eval-flip`, `--lr 1e-3`),
    absent from the parsed namespace unless given, so the recipe's value stands otherwise.
    `data_root` is also `--data`."""
    group = parser.add_argument_group("run configuration (each overrides the recipe's value)")
    kinds = _field_types()
    for name in field_names():
        if name in _NOT_ON_CLI or name in exclude:
            continue
        flags = [f"--{name.replace('_', '-')}"]
        if name == "data_root":
            flags.insert(0, "--data")
        extra = {}
        if kinds[name] is bool:  # `--eval-flip` alone means true; `--eval-flip false` also works
            extra = dict(nargs="?", const=True)
        group.add_argument(
            *flags,
            dest=name,
            type=_argument_type(name),
            default=dataclasses.MISSING,
            metavar=_metavar(kinds[name]),
            help=field_help(name),
            **extra,
        )


def overrides_from_arguments(namespace) -> dict:
    """The RunConfig fields given on the command line, as {name: value}."""
    return {
        name: value
        for name in field_names()
        if name not in _NOT_ON_CLI
        and (value := getattr(namespace, name, dataclasses.MISSING)) is not dataclasses.MISSING
    }


def _metavar(kind) -> str:
    option = next(o for o in _options(kind) if o is not type(None))
    if typing.get_origin(option) is tuple:
        item = "N" if typing.get_args(option)[0] is int else "X"
        return f"{item},{item},..."
    return {int: "N", float: "X", bool: "BOOL"}.get(option, "TEXT")


def _argument_type(name: str):
    import argparse

    def convert(text: str):
        try:
            return parse_value(name, text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = name
    return convert
