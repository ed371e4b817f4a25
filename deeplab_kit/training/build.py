"""A run's parts, built from its configuration: the model (weights seeded by the run's seed,
pretrained ones where asked), the loaders (this process's shard under DDP) and the arithmetic
(decided once, here, before anything trains).

    model = build_run_model(config)                       # on the CPU, seeded
    train_loader, val_loader = run_loaders(config, context)
    arithmetic = run_arithmetic(config, device, resumed)   # a resumed run keeps its own
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from deeplab_kit.config import RunConfig
from deeplab_kit.data.classes import Classes, classes_for
from deeplab_kit.data.loader import make_loader
from deeplab_kit.data.transforms import eval_collate, transforms_for, uint8_where_exact
from deeplab_kit.data.voc import VOCDataset
from deeplab_kit.model import build_model, load_torchvision_weights
from deeplab_kit.runtime.arithmetic import Arithmetic, allowed, choose
from deeplab_kit.runtime.checkpoint import saved_arithmetic


def build_run_model(config: RunConfig, *, pretrained: bool = True) -> nn.Module:
    """The config's model with weights seeded by config.seed (and pretrained ones if asked)."""
    model = config.model if pretrained else config.model.replace(pretrained_backbone=False)
    with torch.random.fork_rng(devices=[]):  # seeded weights; the caller's RNG untouched
        torch.manual_seed(config.seed)
        built = build_model(model)
    if pretrained and config.pretrained_weights:
        weights = _torchvision_weights(config.pretrained_weights)
        load_torchvision_weights(built, weights, skip_classifier=True)
    return built


def _torchvision_weights(name: str):
    """A DeepLabV3_ResNet50_Weights member by name, or a path to a saved state dict."""
    from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights

    if name in DeepLabV3_ResNet50_Weights.__members__:
        return DeepLabV3_ResNet50_Weights[name]
    if Path(name).suffix or os.sep in name:
        return Path(name)
    raise ValueError(
        f"pretrained_weights={name!r} is neither a file path nor one of "
        f"{list(DeepLabV3_ResNet50_Weights.__members__)}"
    )


def placed_model(config: RunConfig, context, *, pretrained: bool) -> nn.Module:
    """The model on its device (SyncBN under torchrun if asked); the train step sets its memory
    layout, and DDP wraps it after that."""
    model = build_run_model(config, pretrained=pretrained)
    if context.distributed and config.sync_bn:
        if context.device.type != "cuda":
            raise ValueError("sync_bn needs GPUs: torch's SyncBatchNorm does not run on the CPU")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(context.device)


def run_arithmetic(config: RunConfig, device: torch.device, resumed: dict | None) -> Arithmetic:
    """The arithmetic a resumed run started with (so that its sessions compute alike), unless
    the config now excludes it; else this device's choice for the config's settings."""
    saved = saved_arithmetic(resumed) if resumed is not None else None
    if saved and allowed(Arithmetic(**saved), device, config.amp, config.channels_last):
        return Arithmetic(**saved)
    return choose(device, config.amp, config.channels_last)


def run_loaders(config: RunConfig, context, train_set=None, val_set=None):
    """A run's training and validation loaders for this process (its shard under DDP), on
    `config.data_root` unless datasets are given."""
    if train_set is None or val_set is None:
        if config.data_root is None:
            raise ValueError(
                "no data: set data_root (--data ROOT), the folder holding VOCdevkit/VOC2012"
            )
        if train_set is None:
            train_set = _dataset(config, config.train_split, config.train_transforms, config.hflip)
        if val_set is None:
            val_set = _dataset(config, config.val_split, config.val_transforms)
    _check_classes(config, train_set)
    shared = set(getattr(train_set, "ids", ())) & set(getattr(val_set, "ids", ()))
    if shared and context.is_main:
        warnings.warn(
            f"{len(shared)} of the {len(val_set)} validation images are also training images "
            f"(e.g. {sorted(shared)[0]}): the validation scores overstate the model",
            stacklevel=3,
        )
    common = dict(
        seed=config.seed,
        num_workers=config.num_workers,
        rank=context.rank,
        world_size=context.world_size,
    )
    train_loader = make_loader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=True, **common
    )
    val_loader = make_loader(
        val_set,
        batch_size=config.eval_batch_size or config.batch_size,
        collate_fn=eval_collate,  # images of different sizes are scored one by one, unpadded
        **common,
    )
    return train_loader, val_loader


def run_classes(config: RunConfig, train_set) -> Classes:
    """The classes a run learns: its training set's (names and colours), else VOC's or numbered
    ones for the config's count."""
    classes = getattr(train_set, "classes", None)
    return classes if isinstance(classes, Classes) else classes_for(config.model.num_classes)


def _check_classes(config: RunConfig, train_set) -> None:
    classes = getattr(train_set, "classes", None)
    count = config.model.num_classes
    if isinstance(classes, Classes) and len(classes.names) != count:
        raise ValueError(
            f"{config.data_root}: the dataset has {len(classes.names)} classes "
            f"({', '.join(classes.names[:5])}{', ...' if len(classes.names) > 5 else ''}) but "
            f"the run's num_classes is {count}: pass --num-classes {len(classes.names)}"
        )


def _dataset(config: RunConfig, split: str, preset: str, hflip: bool | None = None):
    transforms = uint8_where_exact(transforms_for(preset, config.image_size, hflip))
    return VOCDataset(
        config.data_root,
        split=split,
        transforms=transforms,
        seed=config.seed,
        cache_dir=config.cache_dir,
    )


def steps_per_epoch(config: RunConfig, context, train_loader) -> int:
    """Optimiser steps per epoch (the batches of an incomplete accumulation at the end drop)."""
    per_epoch = len(train_loader) // config.accumulation
    if per_epoch == 0:
        raise ValueError(
            f"the training split {config.train_split!r} has {len(train_loader.dataset)} images: "
            f"at batch_size={config.batch_size} over {context.world_size} process(es) that is "
            f"{len(train_loader)} full batch(es) per process, fewer than one optimiser step of "
            f"accumulation={config.accumulation}; lower batch_size or accumulation"
        )
    return per_epoch
