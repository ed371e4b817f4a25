"""What a run is, as plain data: the network (`ModelConfig`), the run that trains it (`RunConfig`,
which embeds the network's settings), and the named recipes the kit ships.

    model = ModelConfig(backbone="resnet50", output_stride=16, atrous_rates=(8, 12, 16))
    config = RunConfig.from_recipe("report", lr=1e-3, data_root="data")   # any field overridden
    config.model.output_stride                                             # 16
    python -m deeplab_kit train --recipe report --lr 1e-3 --atrous-rates 8,12,16 ...

Each setting is declared once, here, with its default, its help text (the command line's
--help) and its check; `to_dict` / `from_dict` give plain data for checkpoints and JSON.

This module imports no torch: the command line builds its options (and answers --help) from
it in a fraction of torch's import time.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import types
import typing
from dataclasses import dataclass, field

from deeplab_kit.data.classes import NUM_CLASSES

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "step", "poly", "cosine")
AMP_CHOICES = ("auto", "bf16", "fp16", "off")
SCHEDULES_OVER_EPOCHS = ("poly", "cosine")  # their lr at an epoch depends on the total epochs

# Bottleneck blocks per ResNet stage. "resnet26" is the reduced-depth backbone for CPUs (and the
# report's "simplified DeepLabv3 with a reduced number of backbone layers").
BACKBONE_BLOCKS = {"resnet26": (2, 2, 2, 2), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
MAX_EXTRA_BLOCKS = 3  # the paper's block5..block7


def output_strides(extra_blocks: int = 0, stages: int = 4) -> tuple[int, ...]:
    """The output strides a backbone can reach: 8 up to 32 x 2^extra_blocks (256 with block7: no
    atrous convolution at all); one cut after layer `stages` (2 or 3) stops at 2^(stages + 1)."""
    deepest = 2 ** (stages + 1 + extra_blocks)
    return tuple(2**k for k in range(3, int(math.log2(deepest)) + 1))


def _setting(default, text: str):
    """A dataclass field with its help text (shown by the command line's --help)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata={"help": text})
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class ModelConfig:
    """Every setting of the network `deeplab_kit.model.build_model` builds; the model keeps it as
    `model.config`, a run embeds it, a checkpoint carries it."""

    num_classes: int = _setting(NUM_CLASSES, "classes, background included (21 for VOC)")
    backbone: str = _setting(
        "resnet50", "resnet26 (bottleneck stages 2, 2, 2, 2: for CPUs), resnet50 or resnet101"
    )
    backbone_width: int = _setting(
        64, "channels of the stem and first stage (64: torchvision's; 16 or 32: CPU-sized)"
    )
    output_stride: int = _setting(
        16,
        "input size / feature size: 8, 16 or 32 (up to 256 with cascaded blocks); stages stride "
        "until it is reached and dilate after, each at twice the previous rate",
    )
    atrous_rates: tuple[int, ...] = _setting(
        (6, 12, 18), "one 3x3 ASPP branch per rate, e.g. 6,12,18 (empty: the 1x1 branch alone)"
    )
    multi_grid: tuple[int, ...] | None = _setting(
        None,
        "layer4's unit rates, e.g. 1,2,4: stage rate x unit rate, one per layer4 block (none: "
        "torchvision's dilations, so that its weights behave as trained)",
    )
    dilated: bool = _setting(
        True,
        "stages past the output stride dilate (false: stride 1 and dilation 1 there, the same "
        "network and map with a smaller field of view)",
    )
    extra_blocks: int = _setting(0, "cascaded copies of block4 (0..3: the paper's block5..block7)")
    backbone_stages: int = _setting(
        4, "ResNet stages kept: 4 (all), or 3 or 2 for a backbone cut short (a small field)"
    )
    aspp: bool = _setting(True, "ASPP head (false: the cascaded model's 1x1 classifier)")
    image_pooling: bool = _setting(True, "ASPP's image-level branch")
    aux_loss: bool = _setting(False, "torchvision's FCN auxiliary head on layer3 (output 'aux')")
    decoder: bool = _setting(False, "DeepLabv3+'s decoder (layer1 features at stride 4)")
    aspp_channels: int = _setting(256, "width of every ASPP branch and of the head")
    aspp_dropout: float = _setting(0.5, "dropout after ASPP's projection (0.5 in torchvision)")
    pretrained_backbone: bool | str = _setting(
        False, "ImageNet backbone: true (download), false, or a path to a saved ResNet state dict"
    )
    freeze_backbone: bool = _setting(False, "train only the head; the backbone stays in eval mode")

    def __post_init__(self) -> None:
        _coerce_fields(self)
        _check_model(self)

    @classmethod
    def from_dict(cls, values: typing.Mapping) -> ModelConfig:
        _refuse_unknown(values, field_names(cls), "model setting")
        return cls(**values)

    def to_dict(self) -> dict:
        return _plain(self)

    def replace(self, **changes) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})


def _check_model(model: ModelConfig) -> None:
    """Each setting refused with its name and value when wrong, and the combinations that
    cannot be built."""
    if model.backbone not in BACKBONE_BLOCKS:
        raise ValueError(
            f"unknown backbone {model.backbone!r}; choose one of {sorted(BACKBONE_BLOCKS)}"
        )
    for name in ("num_classes", "backbone_width", "aspp_channels"):
        if getattr(model, name) < 1:
            raise ValueError(f"{name} must be a positive integer, got {getattr(model, name)!r}")
    if model.backbone_width != 64 and model.pretrained_backbone is not False:
        raise ValueError(
            f"pretrained backbones are 64 wide; backbone_width={model.backbone_width} has none"
        )
    if not 0.0 <= model.aspp_dropout < 1.0:
        raise ValueError(f"aspp_dropout must be in [0, 1), got {model.aspp_dropout!r}")
    if not 0 <= model.extra_blocks <= MAX_EXTRA_BLOCKS:
        raise ValueError(
            f"extra_blocks must be 0..{MAX_EXTRA_BLOCKS} (block5..block7), got {model.extra_blocks!r}"
        )
    if model.backbone_stages not in (2, 3, 4):
        raise ValueError(f"backbone_stages must be 2, 3 or 4, got {model.backbone_stages!r}")
    if model.backbone_stages < 4 and (model.extra_blocks or model.multi_grid is not None):
        raise ValueError("a backbone cut short has no layer4: extra_blocks and multi_grid need it")
    if model.backbone_stages < 3 and model.aux_loss:
        raise ValueError("aux_loss needs layer3, which backbone_stages=2 cuts off")
    check_output_stride(model.output_stride, model.extra_blocks, model.backbone_stages)
    for name, rates in (("atrous_rates", model.atrous_rates), ("multi_grid", model.multi_grid)):
        if rates is not None and (
            any(r < 1 for r in rates) or (name == "multi_grid" and not rates)
        ):
            raise ValueError(f"{name} must be a sequence of positive integers, got {rates!r}")
    if not model.dilated and model.multi_grid is not None:
        raise ValueError("multi_grid multiplies the stages' dilations: dilated=False has none")
    if not model.aspp and model.decoder:
        raise ValueError("decoder=True needs ASPP: the DeepLabv3+ decoder joins ASPP's features")
    layer4 = BACKBONE_BLOCKS[model.backbone][3]
    if model.multi_grid is not None and len(model.multi_grid) != layer4:
        raise ValueError(
            f"multi_grid needs one unit rate per layer4 block: {model.backbone} has {layer4}, "
            f"got {model.multi_grid}"
        )


def check_output_stride(output_stride: int, extra_blocks: int = 0, stages: int = 4) -> None:
    reachable = output_strides(extra_blocks, stages)
    if output_stride not in reachable:
        deepest = f"layer{stages}" if stages < 4 else f"block{4 + extra_blocks}"
        raise ValueError(
            f"output_stride {output_stride!r} cannot be reached with {deepest} "
            f"(extra_blocks={extra_blocks}, backbone_stages={stages}): choose one of "
            f"{list(reachable)}"
            + ("; 64 and more need cascaded blocks (extra_blocks)" if output_stride > 32 else "")
        )


# Named networks; `deeplab_kit.model.from_preset(name, **overrides)` builds one.
MODEL_PRESETS = {
    # The report: ResNet-50, output stride 16 (inferred), rates (8, 12, 16), no multi-grid.
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


@dataclass
class RunConfig:
    """Everything a training run needs. Build one with `RunConfig.from_recipe(name, **overrides)`;
    an override may name a network setting directly (`output_stride=8`)."""

    recipe: str = _setting("custom", "the recipe these values started from (a label only)")
    model: ModelConfig = field(
        default_factory=ModelConfig, metadata={"help": "the network (ModelConfig)"}
    )
    pretrained_weights: str | None = _setting(
        None,
        "torchvision DeepLabV3-ResNet50 weights for the whole model (new classifier): a "
        "DeepLabV3_ResNet50_Weights name such as COCO_WITH_VOC_LABELS_V1, or a file path",
    )

    data_root: str | None = _setting(None, "folder holding VOCdevkit/VOC2012")
    train_split: str = _setting("train", "training split: train, trainaug, trainval")
    val_split: str = _setting("val", "validation split")
    train_transforms: str = _setting(
        "report", "training transform preset (deeplab_kit.data.transforms.TRANSFORM_PRESETS)"
    )
    val_transforms: str = _setting("report", "validation transform preset")
    image_size: int = _setting(256, "resize size (report presets) or crop size (paper-train)")
    hflip: bool | None = _setting(
        None, "random left-right flips in training (none: as the train_transforms preset has it)"
    )
    cache_dir: str | None = _setting(None, "decoded-image cache folder (none: no cache)")
    num_workers: int = _setting(0, "DataLoader worker processes")

    optimizer: str = _setting("adam", "adam, adamw or sgd")
    lr: float = _setting(1e-4, "initial learning rate")
    weight_decay: float = _setting(0.0, "L2 weight decay")
    momentum: float = _setting(0.9, "SGD momentum")
    schedule: str = _setting(
        "constant",
        "constant; step (lr x lr_gamma at each epoch in lr_steps); poly or cosine (per iteration)",
    )
    lr_steps: tuple[int, ...] = _setting((), "epochs at which a step schedule multiplies the lr")
    lr_gamma: float = _setting(0.1, "factor of a step schedule")
    poly_power: float = _setting(0.9, "power of the poly schedule")
    warmup_epochs: float = _setting(0.0, "linear warm-up of the lr from 0 over this many epochs")
    # torchvision's reference segmentation training (references/segmentation/train.py) weighs
    # the aux loss 0.5 and gives the aux head 10x the learning rate; PSPNet and mmsegmentation
    # weigh it 0.4. The kit's aux head is torchvision's FCN head, so it takes torchvision's.
    aux_weight: float = _setting(
        0.5, "weight of the auxiliary loss (torchvision's reference: 0.5; mmsegmentation: 0.4)"
    )
    aux_lr_factor: float = _setting(
        10.0, "the aux head's learning rate as a multiple of lr (torchvision's reference: 10)"
    )
    batch_size: int = _setting(4, "images per step (per process under torchrun)")
    accumulation: int = _setting(1, "batches whose gradients add up to one optimiser step")
    epochs: int = _setting(200, "total epochs of the run")

    session_epochs: int | None = _setting(None, "end this session after K epochs (none: no limit)")
    session_minutes: float | None = _setting(
        None, "end this session after M minutes (none: no limit)"
    )
    checkpoint_every: int = _setting(0, "also checkpoint every S optimiser steps (0: epoch ends)")
    keep_last: int = _setting(2, "checkpoints kept besides best.pt")
    tensorboard: bool = _setting(False, "also write TensorBoard curves under the run folder")

    seed: int = _setting(0, "seed of the weights, the data order, the augmentation and dropout")
    amp: str = _setting(
        "auto", "auto (this machine's rule: deeplab_kit.runtime.arithmetic), bf16, fp16 or off"
    )
    channels_last: bool | str = _setting(
        "auto", "channels_last memory format: auto (this machine's rule), true or false"
    )
    device: str = _setting("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:1, mps")
    deterministic: bool = _setting(False, "deterministic GPU kernels (CPU runs are exact anyway)")
    sync_bn: bool = _setting(False, "SyncBatchNorm across processes under torchrun")

    eval_batch_size: int | None = _setting(None, "validation batch size (none: batch_size)")
    eval_scales: tuple[float, ...] = _setting(
        (1.0,), "scales of the final evaluation, e.g. 0.75,1,1.25"
    )
    eval_flip: bool = _setting(False, "add flipped inputs to the final evaluation")

    def __post_init__(self) -> None:
        if isinstance(self.model, typing.Mapping):
            self.model = ModelConfig.from_dict(self.model)
        _coerce_fields(self)
        _check_run(self)

    @classmethod
    def from_recipe(cls, name: str = "report", **overrides) -> RunConfig:
        """The recipe `name` (one of `RECIPES`) with fields overridden."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
        return cls.from_dict({**RECIPES[name], "recipe": name, **overrides})

    @classmethod
    def from_dict(cls, values: typing.Mapping) -> RunConfig:
        """A config from plain data, nested ({"model": {...}, ...}) or flat (network settings
        beside the others, as in recipes, overrides and files written before ModelConfig). An
        unknown key is an error that suggests the closest field."""
        run_fields, model_fields = field_names(cls), field_names(ModelConfig)
        _refuse_unknown(values, run_fields + model_fields, "config field")
        model = values.get("model", {})
        model = model.to_dict() if isinstance(model, ModelConfig) else dict(model)
        model.update({k: v for k, v in values.items() if k in model_fields})
        run = {k: v for k, v in values.items() if k in run_fields and k != "model"}
        return cls(**run, model=ModelConfig.from_dict(model))

    def to_dict(self) -> dict:
        """Plain data: tuples become lists, so it goes to JSON and into a weights_only checkpoint."""
        return _plain(self)

    def replace(self, **overrides) -> RunConfig:
        return RunConfig.from_dict({**self.to_dict(), **overrides})


def _check_run(config: RunConfig) -> None:
    for name, choices in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("amp", AMP_CHOICES)):
        if getattr(config, name) not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {getattr(config, name)!r}")
    if config.channels_last != "auto" and not isinstance(config.channels_last, bool):
        raise ValueError(f"channels_last must be true, false or auto, got {config.channels_last!r}")
    for name in ("batch_size", "accumulation", "epochs", "keep_last"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(config, name)}")
    for name in ("session_epochs", "eval_batch_size"):
        if getattr(config, name) is not None and getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1 or none, got {getattr(config, name)}")
    if config.session_minutes is not None and config.session_minutes <= 0:
        raise ValueError(f"session_minutes must be positive or none, got {config.session_minutes}")
    if config.checkpoint_every < 0 or config.num_workers < 0:
        raise ValueError("checkpoint_every and num_workers must be >= 0")
    if config.warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {config.warmup_epochs}")
    if not config.eval_scales or any(scale <= 0 for scale in config.eval_scales):
        raise ValueError(f"eval_scales must be positive numbers, got {list(config.eval_scales)}")
    if config.lr <= 0 or config.aux_lr_factor <= 0:
        raise ValueError(
            f"lr and aux_lr_factor must be positive, got {config.lr} and {config.aux_lr_factor}"
        )


# Fields that shape the optimisation: resuming with other values would not continue the same run.
TRAINING_FIELDS = tuple(
    "train_split train_transforms image_size hflip optimizer lr weight_decay momentum schedule "
    "lr_steps lr_gamma poly_power warmup_epochs aux_weight aux_lr_factor batch_size accumulation "
    "seed".split()
)


def flat(config: RunConfig) -> dict:
    """A run's settings in one flat dict, the network's among the others (for tables and the
    command line's options)."""
    values = config.to_dict()
    return {"recipe": values.pop("recipe"), **values.pop("model"), **values}


def field_names(kind=RunConfig) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def settings() -> dict[str, dataclasses.Field]:
    """Every setting a run has, by name: the network's and the run's own (not `model`)."""
    found = {f.name: f for f in dataclasses.fields(ModelConfig)}
    found.update({f.name: f for f in dataclasses.fields(RunConfig) if f.name != "model"})
    return found


def setting_type(name: str):
    kind = ModelConfig if name in field_names(ModelConfig) else RunConfig
    return _hints(kind)[name]


@functools.cache
def _hints(kind) -> dict:
    return typing.get_type_hints(kind)


def _refuse_unknown(values: typing.Mapping, known: list[str], what: str) -> None:
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown {what} {key!r}{hint}")


def _plain(config) -> dict:
    def plain(value):
        if isinstance(value, ModelConfig):
            return value.to_dict()
        return list(value) if isinstance(value, tuple) else value

    return {f.name: plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _coerce_fields(config) -> None:
    """Plain data (lists from JSON or a checkpoint) back to the declared types, in place."""
    for name, kind in _hints(type(config)).items():
        if name != "model":
            object.__setattr__(config, name, _coerce(name, getattr(config, name), kind))


def _options(kind) -> tuple:
    """The members of a union type (`int | None` -> (int, NoneType)), or (kind,)."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        return typing.get_args(kind)
    return (kind,)


def _coerce(name: str, value, kind):
    """`value` as the declared type: lists become tuples, ints become floats where declared; a
    float where an int is declared (6.5 for a rate) is refused, never rounded."""
    options = _options(kind)
    if value is None and type(None) in options:
        return None
    for option in options:
        if typing.get_origin(option) is tuple:
            if isinstance(value, (list, tuple)):
                item = typing.get_args(option)[0]
                if all(isinstance(v, item) and not isinstance(v, bool) for v in value):
                    return tuple(value)
                if item is float and all(isinstance(v, (int, float)) for v in value):
                    return tuple(float(v) for v in value)
        elif option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        elif option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        elif option in (bool, str) and isinstance(value, option):
            return value
        elif option is str and isinstance(value, os.PathLike):  # a file path, as text
            return os.fspath(value)
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
    """A command-line string as the value of setting `name`: "8,12,16" -> (8, 12, 16),
    "true"/"false" -> bool, "none" -> None, "1e-3" -> 0.001."""
    kind = setting_type(name)
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
# The report's data and optimiser, which its comparison model (`pretrained`) shares.
_REPORT_TRAINING = dict(
    train_transforms="report", val_transforms="report", image_size=256, optimizer="adam", lr=1e-4
)
# The report, as it most likely ran: course/quoted_numbers.REPORT_SETTINGS gives each setting,
# stated by the report or inferred from it, with the sentence behind it. The step at epoch 100
# (inferred): its Figure 3 is the "6th session ... after slicing learning rate by 10", and at 20
# epochs a session the 6th session starts at epoch 100.
_REPORT = dict(
    **MODEL_PRESETS["report"],
    pretrained_backbone=True,
    **_REPORT_TRAINING,
    schedule="step",
    lr_steps=(100,),
    lr_gamma=0.1,
    batch_size=4,
    epochs=200,
    session_epochs=20,
)
RECIPES: dict[str, dict] = {
    "report": _REPORT,
    # The other reading of the report: the same run from a randomly initialised ResNet-50.
    "report-scratch": {**_REPORT, "pretrained_backbone": False},
    # The paper's training, as its values below: no auxiliary loss (the paper trains none;
    # --aux-loss adds torchvision's, weighted as aux_weight), batch norm trained ("fine-tuned")
    # at OS16, 30k iterations at batch 16 on trainaug: 30000 * 16 / 10582 = 45.4 epochs, 46 here.
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
        **_REPORT_TRAINING,
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
    # as the only path to the scores (no decoder), on an eighth-width resnet26 (8 channels, ASPP
    # 32 wide: in a pilot it learned as the quarter width did, 2.2 times faster), 32 epochs (the
    # same pilot: 16 epochs left 7 points to gain, 32 about 3); the learning rate is the stored
    # sweep's choice.
    "ablation": {
        **_DEMO,
        "backbone_width": 8,
        "aspp_channels": 32,
        "output_stride": 8,
        "atrous_rates": (8, 12, 16),
        "image_pooling": False,
        "decoder": False,
        "image_size": 128,
        "epochs": 32,
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
    """The recipes side by side as text: one row per setting, one column per recipe (only the
    settings where they differ, unless `differing_only` is False)."""
    configs = {name: flat(RunConfig.from_recipe(name)) for name in RECIPES}
    rows = []
    for name in settings():
        values = [_shown(configs[recipe][name]) for recipe in RECIPES]
        if name != "recipe" and (not differing_only or len(set(values)) > 1):
            rows.append([name, *values])
    header = ["field", *RECIPES]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _shown(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)
