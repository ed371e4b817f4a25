"""Shared test fixtures."""

from __future__ import annotations

import pytest
import torch

from deeplab_kit.data.synthetic import make_synthetic_voc


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module: sums add up in the same order in every run and
    subprocess compared, and a busy 2-core machine runs one thread faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def path_cache(tmp_path_factory):
    """The fast-path choices of this test session go to a folder of its own, not the user's
    cache: every session starts without them (and times what it needs once)."""
    folder = tmp_path_factory.mktemp("fast-paths")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DEEPLAB_KIT_CACHE_DIR", str(folder))
        yield folder


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A tiny generated VOC tree on disk (4 training and 2 validation images of 32 pixels), for
    the tests that run the real data path."""
    return make_synthetic_voc(
        tmp_path_factory.mktemp("synthetic"), num_train=4, num_val=2, size=32, seed=0
    )
