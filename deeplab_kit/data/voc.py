"""PASCAL VOC 2012 (and SBD for "trainaug") as a PyTorch dataset, with validation and a cache.

    ds = VOCDataset("data", split="train", transforms="report")   # root holds VOCdevkit/VOC2012
    image, mask = ds[0]       # float32 (3, 256, 256) normalised; int64 (256, 256), 0..20 or 255
    loader = loader.make_loader(ds, batch_size=8, shuffle=True, drop_last=True)
    loader.set_epoch(3)                                            # (deeplab_kit.data.loader)

Expected tree (see data/README.md; `python -m deeplab_kit download voc|sbd` fetches it):

    root/VOCdevkit/VOC2012/JPEGImages/<id>.jpg
                           SegmentationClass/<id>.png            palette PNG, 255 = void
                           ImageSets/Segmentation/<split>.txt    one id per line
    root/SBD/ (or root/benchmark_RELEASE/dataset/)               only for split="trainaug"
             cls/<id>.mat  img/<id>.jpg  train.txt  val.txt
             cls_png/<id>.png        SBD's labels as palette PNGs, written here on first use

A sample is keyed: `ds[i]` is sample i of epoch 0 and `ds[i, epoch]` the same sample as epoch
`epoch` augments it (`make_loader`'s sampler sends such keys); random choices come from
(seed, epoch, index), never the global RNG.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors

from deeplab_kit.data.cache import SplitCache, make_manifest, open_cache
from deeplab_kit.data.classes import (
    CLASSES_FILE,
    IGNORE_INDEX,
    NUM_CLASSES,
    VOC,
    VOC_CLASSES,
    Classes,
    classes_of,
    save_mask,
)
from deeplab_kit.data.transforms import (
    SegmentationTransform,
    StackedBatch,
    keyed_generator,
    keyed_seed,
    make_transforms,
)

_GET_DATA = (
    "Get PASCAL VOC 2012 with `python -m deeplab_kit download voc --root {root}` (see "
    "data/README.md for other sources), or generate a small VOC-format dataset with "
    "`python -m deeplab_kit synth --out {root}`."
)

# --- reading and validating one file -------------------------------------------------------


def _open(path: Path, what: str) -> Image.Image:
    """Open and fully decode an image file, turning decoder failures into a clear error."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated or corrupt file fails here, not later
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} file not found") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ValueError(
            f"{path}: cannot decode {what} ({error}); the file is corrupt or truncated"
        ) from None
    return image


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as uint8 (H, W, 3) RGB."""
    image = _open(Path(path), "image")
    return np.array(image if image.mode == "RGB" else image.convert("RGB"))


def read_mask(path: str | os.PathLike, classes: Classes = VOC) -> np.ndarray:
    """A mask file as uint8 (H, W) labels 0..C-1 or 255 (void): class indices in a palette ('P')
    or greyscale ('L') PNG, whose void label `classes.void_label` becomes 255; or an RGB image
    drawn in `classes`' colours (and its void colour)."""
    path = Path(path)
    mask = _open(path, "mask")
    if mask.mode in ("RGB", "RGBA"):
        labels = _labels_of_colours(np.array(mask.convert("RGB")), classes, path)
    elif mask.mode in ("P", "L"):
        labels = np.array(mask)
        if classes.void_label != IGNORE_INDEX:
            labels = np.where(labels == classes.void_label, IGNORE_INDEX, labels).astype(np.uint8)
    else:
        raise ValueError(
            f"{path}: mask has mode {mask.mode!r}; expected class indices in a palette ('P') or "
            "greyscale ('L') PNG, or an RGB image in the colours of the dataset's classes.txt"
        )
    check_labels(labels, path, len(classes.names))
    return labels


def _labels_of_colours(rgb: np.ndarray, classes: Classes, path: Path) -> np.ndarray:
    """(H, W, 3) colours -> (H, W) labels by `classes`; an unknown colour is one error naming the
    file, the colour and how many pixels have it."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    known = {(r << 16) | (g << 8) | b: k for k, (r, g, b) in enumerate(classes.colours)}
    r, g, b = classes.void_colour
    known[(r << 16) | (g << 8) | b] = IGNORE_INDEX
    found, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
    for code, count in zip(found, counts, strict=True):
        if int(code) not in known:
            colour = (int(code) >> 16, (int(code) >> 8) & 255, int(code) & 255)
            raise ValueError(
                f"{path}: colour {colour} on {count} pixels is not a class of the dataset's "
                f"{CLASSES_FILE}"
            )
    lookup = np.array([known[int(code)] for code in found], dtype=np.uint8)
    return lookup[inverse].reshape(codes.shape)


def check_labels(labels: np.ndarray, path: Path, num_classes: int = NUM_CLASSES) -> None:
    """Raise if any value is outside 0..C-1 and 255 (two vectorised comparisons over the mask)."""
    invalid = (labels >= num_classes) & (labels != IGNORE_INDEX)
    if invalid.any():
        bad = np.unique(labels[invalid])
        raise ValueError(
            f"{path}: labels {bad[:8].tolist()} outside 0..{num_classes - 1} and {IGNORE_INDEX}"
        )


def read_pair(
    image_path: Path, mask_path: Path, classes: Classes = VOC
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, 3) image and (H, W) mask, checked to have the same size."""
    image, mask = read_image(image_path), read_mask(mask_path, classes)
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path.name} "
            f"is {image.shape[1]}x{image.shape[0]} (width x height)"
        )
    return image, mask


# --- which files make a split --------------------------------------------------------------


def _read_ids(list_file: Path) -> list[str]:
    with open(list_file) as file:
        return [line.strip() for line in file if line.strip()]


def _voc_dir(root: Path) -> Path:
    voc = root / "VOCdevkit" / "VOC2012"
    if not voc.is_dir():
        raise FileNotFoundError(
            f"{voc}: no PASCAL VOC 2012 here (expected {root}/VOCdevkit/VOC2012). "
            + _GET_DATA.format(root=root)
        )
    return voc


def _split_ids(voc: Path, split: str) -> list[str]:
    split_dir = voc / "ImageSets" / "Segmentation"
    split_file = split_dir / f"{split}.txt"
    if not split_file.is_file():
        found = sorted(p.stem for p in split_dir.glob("*.txt")) if split_dir.is_dir() else []
        advice = "" if found else " " + _GET_DATA.format(root=voc.parent.parent)  # no VOC here
        raise FileNotFoundError(
            f"{split_file}: split file not found; splits here: {found or 'none'} (or 'trainaug', "
            f"which needs SBD); choose one of them with --split." + advice
        )
    if not (ids := _read_ids(split_file)):
        raise ValueError(f"{split_file}: split file lists no images")
    return ids


def voc_ready(root: str | os.PathLike) -> bool:
    """Whether `root` holds VOC 2012's segmentation part (VOCdevkit/VOC2012 and its train and
    val lists)."""
    splits = Path(root) / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    return (splits / "train.txt").is_file() and (splits / "val.txt").is_file()


def locate_voc(path: str | os.PathLike) -> Path | None:
    """The folder holding VOCdevkit/VOC2012 for a path a user may give: that folder itself, the
    VOCdevkit or VOC2012 folder, or a folder with such a tree one level down (an archive
    extracted into a folder of its own). None when there is no VOC there."""
    path = Path(path).expanduser()
    candidates = [path, path.parent, path.parent.parent]
    if path.is_dir():
        candidates += sorted(child for child in path.iterdir() if child.is_dir())
    return next((folder for folder in candidates if voc_ready(folder)), None)


def sbd_folder(root: str | os.PathLike) -> Path | None:
    """SBD's dataset folder under root, root/SBD (torchvision's layout) or
    root/benchmark_RELEASE/dataset (the archive extracted); None when it is in neither."""
    root = Path(root)
    for folder in (root / "SBD", root / "benchmark_RELEASE" / "dataset"):
        if (folder / "cls").is_dir() and (folder / "train.txt").is_file():
            return folder
    return None


def find_sbd(root: str | os.PathLike) -> Path:
    """`sbd_folder`, or an error saying where it was looked for and how to get it."""
    root = Path(root)
    found = sbd_folder(root)
    if found is not None:
        return found
    candidates = (root / "SBD", root / "benchmark_RELEASE" / "dataset")
    raise FileNotFoundError(
        f"{candidates[0]}: SBD not found (looked for cls/ and train.txt in "
        f"{' and '.join(str(c) for c in candidates)}); split 'trainaug' needs it. Get it with "
        f"`python -m deeplab_kit download sbd --root {root}` (see data/README.md)."
    )


def convert_sbd_masks(sbd: Path, ids: Sequence[str]) -> Path:
    """SBD's .mat labels of `ids` as palette PNGs in sbd/cls_png (only those not there yet)."""
    from scipy.io import loadmat

    out = sbd / "cls_png"
    out.mkdir(exist_ok=True)
    for sample_id in ids:
        png = out / f"{sample_id}.png"
        if png.exists():
            continue
        mat_path = sbd / "cls" / f"{sample_id}.mat"
        try:
            labels = loadmat(mat_path)["GTcls"][0]["Segmentation"][0]  # as torchvision's SBDataset
        except FileNotFoundError:
            raise FileNotFoundError(f"{mat_path}: SBD label file not found") from None
        except (ValueError, KeyError, IndexError, TypeError, OSError) as error:
            raise ValueError(f"{mat_path}: not an SBD label file ({error})") from None
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.min() < 0 or labels.max() > 255:
            raise ValueError(f"{mat_path}: Segmentation is not a 2-D label map of 0..255")
        labels = labels.astype(np.uint8)
        check_labels(labels, mat_path)
        save_mask(labels, png)
    return out


def list_split(root: Path, split: str) -> tuple[list[str], list[Path], list[Path]]:
    """(ids, image paths, mask paths) of a split; 'trainaug' also prepares SBD's masks."""
    voc = _voc_dir(root)
    if split != "trainaug":
        ids = _split_ids(voc, split)
        images = [voc / "JPEGImages" / f"{i}.jpg" for i in ids]
        masks = [voc / "SegmentationClass" / f"{i}.png" for i in ids]
        return ids, images, masks
    # trainaug = VOC train + SBD train + SBD val - VOC val (10,582 images for the real sets).
    # VOC's own labels (with their void borders) are used where they exist; SBD's elsewhere.
    sbd = find_sbd(root)
    voc_train = set(_split_ids(voc, "train"))
    voc_val = set(_split_ids(voc, "val"))
    sbd_ids = set(_read_ids(sbd / "train.txt"))
    if (sbd / "val.txt").is_file():
        sbd_ids |= set(_read_ids(sbd / "val.txt"))
    ids = sorted((voc_train | sbd_ids) - voc_val)
    png_dir = convert_sbd_masks(sbd, [i for i in ids if i not in voc_train])
    images, masks = [], []
    for i in ids:
        image, mask = voc / "JPEGImages" / f"{i}.jpg", voc / "SegmentationClass" / f"{i}.png"
        images.append(image if i in voc_train or image.exists() else sbd / "img" / f"{i}.jpg")
        masks.append(mask if i in voc_train else png_dir / f"{i}.png")
    return ids, images, masks


# --- the dataset ---------------------------------------------------------------------------


class VOCDataset(Dataset):
    """PASCAL VOC 2012 segmentation: (image, mask) pairs, transformed, optionally cached.

    Args:
        root: the folder that holds VOCdevkit/VOC2012 (and SBD, for "trainaug").
        split: a list file name in ImageSets/Segmentation ("train", "val", "trainval", yours)
            or "trainaug".
        transforms: a preset name ("report", "paper-train", "paper-eval"), None (tensors only:
            uint8 image, int64 mask, original size), a `make_transforms(...)` result, or any
            callable `f(image, mask) -> (image, mask)` taking `tv_tensors.Image` uint8 (3, H, W)
            and `tv_tensors.Mask` uint8 (H, W), e.g. a `transforms.v2.Compose`. A callable's
            random draws from torch's CPU generator are keyed too: it runs with that generator
            seeded from (seed, epoch, index), then restored.
        seed: of the augmentation (and, by default, of `make_loader`'s sample order).
        cache_dir: if given, the split is decoded and resized once into a memory-mapped cache
            there (see `cache.py`) and read from it afterwards; needs a preset with a fixed
            `size` ("report"). Random stages (e.g. hflip) still run, keyed, on top.

    The classes are VOC's unless the root holds a classes file (`data.classes.CLASSES_FILE`:
    your own dataset's names and colours; its masks may then be RGB images in those colours).

    Attributes: `ids`, `image_paths`, `mask_paths` (one per sample), `root`, `split`,
    `transforms`, `seed`, `classes` (a `data.classes.Classes`), `cache` (a `SplitCache` or None).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        transforms: str | None | SegmentationTransform | Callable = "report",
        *,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        if not Path(root).is_dir():
            raise FileNotFoundError(f"{root}: data root not found. " + _GET_DATA.format(root=root))
        self.root, self.split, self.seed = Path(root), split, int(seed)
        if self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        if transforms is None or isinstance(transforms, str):
            transforms = make_transforms(transforms)
        elif not callable(transforms):
            raise TypeError(
                f"transforms must be a preset name, None or a callable, not {transforms!r}"
            )
        self.transforms = transforms
        self.classes = classes_of(self.root)
        self.ids, self.image_paths, self.mask_paths = list_split(self.root, split)
        paths = self.image_paths + self.mask_paths
        if missing := [path for path in paths if not path.is_file()]:
            raise FileNotFoundError(
                f"{missing[0]}: listed by split {split!r} of {self.root} but missing "
                f"({len(missing)} of {len(paths)} files missing)"
            )
        self.cache: SplitCache | None = None
        if cache_dir is not None:
            self.cache = self._open_cache(Path(cache_dir))

    def _open_cache(self, cache_dir: Path) -> SplitCache:
        params = getattr(self.transforms, "cache_params", None)
        if params is None:
            raise ValueError(
                f"cache_dir needs transforms with a fixed size to store (e.g. 'report' or "
                f"make_transforms('report', size=128)); got {self.transforms!r}"
            )
        pairs = list(zip(self.image_paths, self.mask_paths, strict=True))
        if self.classes != VOC:  # the same files mean other labels under other classes
            params = {**params, "classes": self.classes.to_dict()}
        manifest = make_manifest(self.root, pairs, params, params["size"])
        root_tag = hashlib.sha1(manifest["root"].encode()).hexdigest()[:8]
        folder = cache_dir / f"{self.split}-{params['size']}px-{root_tag}"
        return open_cache(folder, manifest, self._read_prepared)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        cached = f", cache={self.cache.folder}" if self.cache else ""
        return (
            f"VOCDataset(root={str(self.root)!r}, split={self.split!r}, {len(self)} samples, "
            f"transforms={self.transforms!r}, seed={self.seed}{cached})"
        )

    def _key(self, key) -> tuple[int, int]:
        """(index, epoch) from an index, a `SampleKey` (the loader's) or an (index, epoch) pair."""
        if isinstance(key, (tuple, list)):
            index, epoch = key
        else:
            index, epoch = key, getattr(key, "epoch", 0)
        index, epoch = int(index), int(epoch)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return index % len(self), epoch

    def read_raw(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Sample `index` as stored, for figures: uint8 (H, W, 3) RGB image, uint8 (H, W) mask."""
        index, _ = self._key(index)
        return read_pair(self.image_paths[index], self.mask_paths[index], self.classes)

    def _read_prepared(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded, checked and through the preset's deterministic stage: uint8 tensors."""
        image, mask = self.read_raw(index)
        image = tv_tensors.Image(torch.from_numpy(image).permute(2, 0, 1))  # (3, H, W)
        mask = tv_tensors.Mask(torch.from_numpy(mask))  # (H, W)
        if isinstance(self.transforms, SegmentationTransform):
            image, mask = self.transforms.prepare(image, mask)
        return image, mask

    def __getitem__(self, key):
        index, epoch = self._key(key)
        if self.cache is not None:
            image, mask = self.cache.get(index)
            image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        else:
            image, mask = self._read_prepared(index)
        if isinstance(self.transforms, SegmentationTransform):
            return self.transforms.augment(image, mask, keyed_generator(self.seed, epoch, index))
        # A user's callable (e.g. transforms.v2) draws from torch's global CPU generator: seed it
        # from the key for this call only, and restore it afterwards.
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(keyed_seed(self.seed, epoch, index))
            return self.transforms(image, mask)

    def __getitems__(self, keys: Sequence) -> list:
        """A batch at once (DataLoader calls this): read from the maps into one batch, normalised once."""
        transforms = self.transforms
        batched = (
            self.cache is not None
            and isinstance(transforms, SegmentationTransform)
            and transforms.random_stages in ((), ("hflip",))
        )
        if not batched:
            return [self[key] for key in keys]
        index_epochs = [self._key(key) for key in keys]
        pairs = self.cache.views([index for index, _ in index_epochs])  # uint8 (3, S, S), (S, S)
        generators = [keyed_generator(self.seed, epoch, index) for index, epoch in index_epochs]
        return StackedBatch(*transforms.augment_batch(pairs, generators))


def class_statistics(masks: Iterable, num_classes: int = NUM_CLASSES, names=None):
    """Pixels per class over some (H, W) masks: the class imbalance in one table.

    One row per class and one for void (255, VOC's unlabelled border band): pixels, share of
    the labelled pixels (void excluded, %), share of all pixels (%), and in how many images it
    appears.
    """
    import pandas as pd  # only here: reading data needs no pandas

    pixels = np.zeros(num_classes + 1, dtype=np.int64)  # the last entry counts void
    images = np.zeros(num_classes + 1, dtype=np.int64)
    for k, mask in enumerate(masks):
        labels = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask).ravel()
        labels = labels.astype(np.int64)
        bad = (labels >= num_classes) & (labels != IGNORE_INDEX) | (labels < 0)
        if bad.any():
            raise ValueError(f"mask {k}: labels {np.unique(labels[bad])[:8].tolist()} out of range")
        counts = np.bincount(
            np.where(labels == IGNORE_INDEX, num_classes, labels), minlength=num_classes + 1
        )
        pixels += counts
        images += counts > 0
    labelled = pixels[:num_classes].sum()
    if names is None:
        names = VOC_CLASSES if num_classes == NUM_CLASSES else [str(c) for c in range(num_classes)]
    return pd.DataFrame(
        {
            "pixels": pixels,
            "% of labelled": np.append(100 * pixels[:num_classes] / max(labelled, 1), np.nan),
            "% of all": 100 * pixels / max(pixels.sum(), 1),
            "images": images,
        },
        index=pd.Index([*names, f"void ({IGNORE_INDEX})"], name="class"),
    )
