"""A split preprocessed once, at a fixed size, into uint8 memory-mapped arrays.

Decoding a JPEG and a PNG and resizing them costs milliseconds per sample, every epoch; reading
the same pixels from a memory map costs microseconds, and a batch is one slice. A cache folder:

    <cache_dir>/<name>/images.npy     uint8 (N, 3, S, S)   (.npy: numpy's format, memory-mapped)
                       masks.npy      uint8 (N, S, S)
                       manifest.json  format version, the preprocessing, every source file's
                                      path, size and modification time

It is reused while its manifest matches the sources and the preprocessing exactly, and rebuilt
otherwise. A build is written into a temporary folder that is renamed into place only when
complete, so an interrupted build never leaves a cache that looks valid (a leftover
`.<name>.tmp-*` folder can be deleted).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

__all__ = ["FORMAT_VERSION", "SplitCache", "make_manifest", "open_cache"]

FORMAT_VERSION = 1
_MANIFEST = "manifest.json"


def _file_record(path: Path, root: Path) -> list:
    stat = path.stat()  # follows symlinks: a linked-in folder (a Drive, say) is checked too
    return [Path(os.path.relpath(path, root)).as_posix(), stat.st_size, stat.st_mtime_ns]


def make_manifest(
    root: Path, pairs: Sequence[tuple[Path, Path]], preprocessing: dict, size: int
) -> dict:
    """What a cache of these (image, mask) files under `root` must record to be reused."""
    sources = [
        _file_record(Path(image), root) + _file_record(Path(mask), root) for image, mask in pairs
    ]
    return {
        "format": FORMAT_VERSION,
        "root": str(Path(root).resolve()),
        "preprocessing": preprocessing,
        "shape": {"count": len(sources), "size": size},
        "sources": sources,  # [image, bytes, mtime_ns, mask, bytes, mtime_ns] per sample
    }


class SplitCache:
    """Read side of a built cache folder. Maps its arrays lazily, once per process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._images: torch.Tensor | None = None
        self._masks: torch.Tensor | None = None

    def _open(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._images is None:
            # Copy-on-write maps ("c"): tensors can view them without warnings about read-only
            # memory, and nothing written through them would ever reach the file.
            self._images = torch.from_numpy(np.load(self.folder / "images.npy", mmap_mode="c"))
            self._masks = torch.from_numpy(np.load(self.folder / "masks.npy", mmap_mode="c"))
        return self._images, self._masks  # (N, 3, S, S), (N, S, S) uint8

    def __getstate__(self) -> dict:
        # A DataLoader worker started by spawn/forkserver gets a pickled dataset: send the path,
        # not the mapped arrays (pickling them would copy all of it).
        return {"folder": self.folder, "_images": None, "_masks": None}

    def __len__(self) -> int:
        return len(self._open()[1])

    def get(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (3, S, S) image and (S, S) mask of one sample (copies)."""
        images, masks = self._open()
        return images[index].clone(), masks[index].clone()

    def views(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(image, mask) views into the maps, for reading a batch without copying it first."""
        images, masks = self._open()
        return [(images[i], masks[i]) for i in indices]


def _is_valid(folder: Path, manifest: dict) -> bool:
    try:
        with open(folder / _MANIFEST) as file:
            if json.load(file) != manifest:
                return False
        count, size = manifest["shape"]["count"], manifest["shape"]["size"]
        images = np.load(folder / "images.npy", mmap_mode="r")
        masks = np.load(folder / "masks.npy", mmap_mode="r")
    except (OSError, ValueError):  # missing, truncated or not .npy / JSON at all
        return False
    return images.shape == (count, 3, size, size) and masks.shape == (count, size, size)


def _build(
    folder: Path, manifest: dict, load: Callable[[int], tuple[torch.Tensor, torch.Tensor]]
) -> None:
    count, size = manifest["shape"]["count"], manifest["shape"]["size"]
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        images = np.lib.format.open_memmap(
            temp / "images.npy", "w+", np.uint8, (count, 3, size, size)
        )
        masks = np.lib.format.open_memmap(temp / "masks.npy", "w+", np.uint8, (count, size, size))
        try:
            # disable=None: a progress bar in a terminal, silence in logs and notebooks' CI.
            for index in tqdm(
                range(count), desc=f"caching {folder.name}", disable=None, leave=False
            ):
                image, mask = load(index)
                images[index] = image.numpy()
                masks[index] = mask.numpy()
            images.flush()
            masks.flush()
        finally:
            del images, masks  # close the maps before renaming
        # The manifest is written last: a folder without it is never taken as a cache.
        with open(temp / _MANIFEST, "w") as file:
            json.dump(manifest, file)
        _move_into_place(temp, folder, manifest)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def _move_into_place(temp: Path, folder: Path, manifest: dict) -> None:
    stale = None
    if folder.exists():  # a stale cache: move it aside first (a folder cannot replace a folder)
        stale = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
        try:
            os.replace(folder, stale / "cache")
        except FileNotFoundError:
            pass  # another process moved it meanwhile
    try:
        os.replace(temp, folder)
    except OSError:
        # Another process (another DDP rank, say) put its own build there first.
        if not _is_valid(folder, manifest):
            raise
        shutil.rmtree(temp, ignore_errors=True)
    finally:
        if stale is not None:
            shutil.rmtree(stale, ignore_errors=True)


def open_cache(
    folder: str | os.PathLike,
    manifest: dict,
    load: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
) -> SplitCache:
    """The cache in `folder` if its manifest equals `manifest`; else build it with `load(i)`.

    `load(i)` returns sample i preprocessed: uint8 (3, S, S) image and (S, S) mask tensors.
    """
    folder = Path(folder)
    if not _is_valid(folder, manifest):
        _build(folder, manifest, load)
    return SplitCache(folder)
