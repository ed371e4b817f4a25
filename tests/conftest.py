"""Shared test fixtures and helpers: one thread, a tiny generated VOC tree, and one tiny run
configuration that every test of a real run starts from (`tiny_config`, `tiny_options`)."""

from __future__ import annotations

import pytest
import torch

from deeplab_kit.config import RunConfig
from deeplab_kit.data.synthetic import make_synthetic_voc

# A run small enough for seconds on a CPU: a recipe's optimiser and schedule on the smallest
# network the kit builds (a resnet26 8 channels wide), 32-pixel images in batches of 2, one epoch,
# in fp32 contiguous (the same arithmetic on every machine).
TINY_RUN = dict(
    backbone="resnet26",
    backbone_width=8,
    pretrained_backbone=False,  # the report recipe's ImageNet weights need the full width
    aspp_channels=8,
    image_size=32,
    batch_size=2,
    eval_batch_size=2,
    epochs=1,
    device="cpu",
    amp="off",
    channels_last=False,
)


def tiny_config(recipe: str | None = None, **overrides) -> RunConfig:
    """`recipe` (None: RunConfig's defaults) cut to TINY_RUN, with `overrides` on top."""
    values = {**TINY_RUN, **overrides}
    return RunConfig.from_recipe(recipe, **values) if recipe else RunConfig.from_dict(values)


def tiny_options(*, exclude=(), **overrides) -> list[str]:
    """TINY_RUN (and `overrides`) as command-line options: ["--backbone", "resnet26", ...]."""
    options = []
    for name, value in {**TINY_RUN, **overrides}.items():
        if name in exclude:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value).lower()
        options += [f"--{name.replace('_', '-')}", text if name != "backbone" else value]
    return options


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: sums add up in the same order in every run and
    subprocess compared, and a busy 2-core machine runs one thread faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny generated VOC tree on disk (4 training and 2 validation images of 32 pixels), for
    the tests that run the real data path."""
    return make_synthetic_voc(
        tmp_path_factory.mktemp("synthetic"), num_train=4, num_val=2, size=32, seed=0
    )
