"""Joint image/mask transforms for segmentation, with keyed randomness.

Every preset is one fixed pipeline whose stages are switched on by its parameters:

    resize to size x size -> random scale -> random crop (pad) -> random flip -> normalise

The first stage is deterministic (a cache can store its output, see `cache.py`); the others draw
from a `torch.Generator` seeded by (seed, epoch, index), never from the global RNG, so a sample
looks the same whichever worker loads it and whenever a resumed run loads it again.

Images travel as `tv_tensors.Image` uint8 (3, H, W) and masks as `tv_tensors.Mask` uint8 (H, W), so
torchvision's `transforms.v2.functional` picks the right kernel for each (bilinear with
antialiasing for images, nearest for masks). The result is plain tensors: float32 (3, H, W)
normalised with ImageNet's statistics (uint8 if normalize=False) and int64 (H, W) with 255 kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.utils.data import default_collate
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from deeplab_kit.data.classes import IGNORE_INDEX

__all__ = [
    "TRANSFORM_PRESETS",
    "SegmentationTransform",
    "StackedBatch",
    "eval_collate",
    "keyed_generator",
    "keyed_seed",
    "make_transforms",
    "model_input",
    "normalize",
    "pad_collate",
    "transforms_for",
    "uint8_where_exact",
]

# x_norm = (x / 255 - mean) / std = x * _SCALE + _SHIFT, shaped (3, 1, 1) to broadcast over
# an image (3, H, W) or a batch (N, 3, H, W) alike: both paths then give identical floats.
# Images are normalised with ImageNet's statistics, as the pretrained backbones expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
_STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
_SCALE = 1.0 / (255.0 * _STD)
_SHIFT = -_MEAN / _STD


def normalize(image: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (..., 3, H, W) in 0..255 -> float32 normalised with ImageNet's mean and std.

    On the image's device: the train step and `evaluate` normalise uint8 batches on the GPU
    this way, with the same operations, so the floats equal those normalised on the CPU.
    """
    if out is None:
        out = torch.empty(image.shape, dtype=torch.float32, device=image.device)
    # In place on the float copy: several times faster than one broadcast addcmul.
    out.copy_(image.as_subclass(torch.Tensor))
    return out.mul_(_SCALE.to(out.device)).add_(_SHIFT.to(out.device))  # .to: no-op on the CPU


def model_input(
    images: torch.Tensor, device: torch.device, memory_format: torch.memory_format
) -> torch.Tensor:
    """A loader's (N, 3, H, W) batch as the model takes it: on `device`, float32 normalised
    (uint8 batches, the fast path of fixed-size presets, are normalised there) and in
    `memory_format`. Float batches are taken as already normalised."""
    images = images.to(device, non_blocking=True)
    if images.dtype == torch.uint8:
        images = normalize(images)
    return images.contiguous(memory_format=memory_format)


def _empty_batch(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised tensor in memory that numpy allocates.

    numpy asks Linux for transparent huge pages on large arrays, so filling a fresh batch costs
    one page fault per 2 MB instead of one per 4 KB: several times faster for a 12 MB batch.
    """
    return torch.from_numpy(np.empty(shape, dtype=dtype))


_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a bijection of 64-bit ints in which every input bit flips about
    half of the output bits."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


def keyed_seed(*key: int) -> int:
    """A well-mixed 64-bit seed from a key such as (seed, epoch) or (seed, epoch, index).

    Neighbouring keys (index 7 and 8, say) give unrelated seeds. Pure integer arithmetic, a
    microsecond per call: it runs once per sample.
    """
    seed = 0
    for part in key:
        seed = _mix64((seed + 0x9E3779B97F4A7C15 + int(part)) & _MASK64)
    return seed


def keyed_generator(*key: int) -> torch.Generator:
    """A fresh CPU generator seeded from the key; nothing global is read or changed."""
    return torch.Generator().manual_seed(keyed_seed(*key))


class StackedBatch(list):
    """A list of (image, mask) pairs that also holds them already stacked, as `.stacked`.

    `VOCDataset.__getitems__` builds a cached batch as two tensors at once; `pad_collate` then
    returns those instead of stacking the pairs a second time.
    """

    def __init__(self, images: torch.Tensor, masks: torch.Tensor) -> None:
        super().__init__(zip(images, masks, strict=True))
        self.stacked = (images, masks)


def pad_collate(batch: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, mask) pairs into (N, 3, H, W) and (N, H, W), padding smaller ones.

    H and W are the largest in the batch; images are padded with 0 (the mean colour once
    normalised) and masks with 255 (ignored by the loss and the metrics), at the bottom and right.
    Anything that is not a list of (tensor, tensor) pairs goes to torch's `default_collate`.
    """
    if isinstance(batch, StackedBatch):
        return batch.stacked
    if not all(
        isinstance(item, (tuple, list))
        and len(item) == 2
        and all(isinstance(t, torch.Tensor) for t in item)
        for item in batch
    ):
        return default_collate(batch)
    images = [image.as_subclass(torch.Tensor) for image, _ in batch]
    masks = [mask.as_subclass(torch.Tensor) for _, mask in batch]
    height = max(mask.shape[-2] for mask in masks)
    width = max(mask.shape[-1] for mask in masks)
    if all(mask.shape[-2:] == (height, width) for mask in masks):
        return torch.stack(images), torch.stack(masks)
    out_images = images[0].new_zeros((len(images), images[0].shape[0], height, width))
    out_masks = masks[0].new_full((len(masks), height, width), IGNORE_INDEX)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        h, w = mask.shape[-2:]
        out_images[i, :, :h, :w] = image
        out_masks[i, :h, :w] = mask
    return out_images, out_masks


def eval_collate(batch: Sequence) -> tuple:
    """For evaluation: pairs of one size stacked into (N, 3, H, W) and (N, H, W), as
    `pad_collate` does; otherwise lists of tensors, never padded. Padding would reach ASPP's
    image pooling and make an image's prediction depend on the others in its batch, so
    `evaluate` runs each image of a list at its own size. Images and masks are stacked
    separately: resized images with masks at their original sizes give (N, 3, S, S) and a list.
    """
    if isinstance(batch, StackedBatch):
        return batch.stacked
    images = [image.as_subclass(torch.Tensor) for image, _ in batch]
    masks = [mask.as_subclass(torch.Tensor) for _, mask in batch]

    def stacked(tensors):
        return torch.stack(tensors) if len({t.shape for t in tensors}) == 1 else tensors

    return stacked(images), stacked(masks)


def _resize(image, mask, size: list[int]):
    """Bilinear with antialiasing for the image; nearest (pixel-centre exact, as PIL) for the mask."""
    image = F.resize(image, size, interpolation=F.InterpolationMode.BILINEAR, antialias=True)
    mask = F.resize(mask, size, interpolation=F.InterpolationMode.NEAREST_EXACT)
    return image, mask


@dataclass(frozen=True)
class SegmentationTransform:
    """A preset: which stages run, with their parameters. Build one with `make_transforms`.

    Args:
        name: the preset it came from, for display and the cache's manifest.
        size: resize image and mask to size x size first (deterministic, cacheable); None keeps
            the original size.
        scale_range: (low, high): rescale by a factor drawn uniformly from it.
        crop_size: crop a crop_size square at a random place; a smaller image is padded at the
            bottom and right first, the image with 0 (the mean colour, after normalisation) and
            the mask with 255.
        hflip: flip image and mask left-right with probability 1/2.
        normalize: return float32 normalised images; False keeps uint8 0..255.
    """

    name: str = "custom"
    size: int | None = None
    scale_range: tuple[float, float] | None = None
    crop_size: int | None = None
    hflip: bool = False
    normalize: bool = True

    def __post_init__(self) -> None:
        for field in ("size", "crop_size"):
            value = getattr(self, field)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{field} must be a positive int or None, got {value!r}")
        if self.scale_range is not None:
            low, high = self.scale_range
            if not 0 < low <= high:
                raise ValueError(
                    f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range!r}"
                )
            object.__setattr__(self, "scale_range", (float(low), float(high)))

    @property
    def random_stages(self) -> tuple[str, ...]:
        """The stages that draw random numbers, in the order they draw."""
        stages = (("scale", self.scale_range), ("crop", self.crop_size), ("hflip", self.hflip))
        return tuple(name for name, on in stages if on)

    @property
    def cache_params(self) -> dict | None:
        """What the deterministic stage does, for a cache's manifest; None when it cannot be cached."""
        if self.size is None:
            return None  # images keep their own sizes: nothing of one fixed shape to store
        return {"size": self.size, "image": "bilinear-antialias", "mask": "nearest-exact"}

    collate = staticmethod(pad_collate)

    def prepare(self, image: tv_tensors.Image, mask: tv_tensors.Mask):
        """The deterministic stage: uint8 in, uint8 out."""
        if self.size is None:
            return image, mask
        return _resize(image, mask, [self.size, self.size])

    def augment(self, image, mask, generator: torch.Generator):
        """The random stages and normalisation, for one prepared (image, mask) pair."""
        if self.scale_range is not None:
            low, high = self.scale_range
            scale = low + (high - low) * torch.rand((), generator=generator).item()
            height, width = mask.shape[-2:]
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            image, mask = _resize(image, mask, size)
        crop = self.crop_size
        if crop is not None:
            # Choose the window on the image padded up to the crop, then cut the real part of
            # it: padding comes after normalising, so the image's padding is exactly 0.
            height, width = mask.shape[-2:]
            top = int(torch.randint(max(height, crop) - crop + 1, (), generator=generator))
            left = int(torch.randint(max(width, crop) - crop + 1, (), generator=generator))
            image = image[..., top : top + crop, left : left + crop]
            mask = mask[..., top : top + crop, left : left + crop]
        flip = self.hflip and bool(torch.rand((), generator=generator) < 0.5)
        image, mask = image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)
        if self.normalize:
            image = normalize(image)
        mask = mask.long()
        if crop is not None:
            padding = (0, crop - mask.shape[-1], 0, crop - mask.shape[-2])  # right, bottom
            if any(padding):
                image = torch.nn.functional.pad(image, padding, value=0)
                mask = torch.nn.functional.pad(mask, padding, value=IGNORE_INDEX)
        if flip:
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask

    def augment_batch(self, pairs, generators) -> tuple[torch.Tensor, torch.Tensor]:
        """`augment` for a batch of prepared (image, mask) pairs of one size, stacked at once.

        For presets whose one random stage is the flip, reading uint8 (3, S, S) and (S, S)
        pairs (views into a cache, say) straight into the batch. Draws and computes the same as
        `augment`, so a sample is identical either way. Returns float32 (N, 3, S, S) (uint8 if
        normalize=False) and int64 (N, S, S).
        """
        if self.random_stages not in ((), ("hflip",)):
            raise ValueError(
                f"augment_batch handles flips only; {self.name} has {self.random_stages}"
            )
        image, mask = pairs[0]
        images = _empty_batch(
            (len(pairs), *image.shape), np.float32 if self.normalize else np.uint8
        )
        masks = _empty_batch((len(pairs), *mask.shape), np.int64)
        for i, ((image, mask), generator) in enumerate(zip(pairs, generators, strict=True)):
            if self.hflip and bool(torch.rand((), generator=generator) < 0.5):
                image, mask = image.flip(-1), mask.flip(-1)
            if self.normalize:  # image by image, while its floats are still in the CPU's cache
                normalize(image, out=images[i])
            else:
                images[i].copy_(image)
            masks[i].copy_(mask)  # uint8 -> int64
        return images, masks

    def __call__(self, image, mask, generator: torch.Generator | None = None):
        """Apply the whole preset; without a generator, random stages use a fixed seed (0)."""
        generator = generator if generator is not None else keyed_generator(0)
        image, mask = self.prepare(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return self.augment(image, mask, generator)


TRANSFORM_PRESETS: dict[str | None, SegmentationTransform] = {
    # The report's pipeline: every image squashed to 256 x 256, no augmentation.
    "report": SegmentationTransform("report", size=256),
    # The paper's training pipeline (DeepLabv3, Sec. 4): scale 0.5-2, crop 513, flip.
    "paper-train": SegmentationTransform(
        "paper-train", scale_range=(0.5, 2.0), crop_size=513, hflip=True
    ),
    # The paper's evaluation: full images; `pad_collate` pads a batch to its largest image.
    "paper-eval": SegmentationTransform("paper-eval"),
    # Tensors only: uint8 image, int64 mask, original size.
    None: SegmentationTransform("none", normalize=False),
}


def make_transforms(name: str | None = "report", **params) -> SegmentationTransform:
    """A preset by name, with any of its parameters overridden.

    Example: `make_transforms("report", size=96, hflip=True)`,
    `make_transforms("paper-train", crop_size=128)`.
    """
    if name not in TRANSFORM_PRESETS:
        names = ", ".join(repr(key) for key in TRANSFORM_PRESETS)
        raise ValueError(
            f"unknown transforms preset {name!r}; choose one of {names} or pass a callable"
        )
    fields = {field.name for field in dataclasses.fields(SegmentationTransform)} - {"name"}
    if unknown := sorted(set(params) - fields):
        raise ValueError(f"unknown transforms parameter(s) {unknown}; known: {sorted(fields)}")
    return dataclasses.replace(TRANSFORM_PRESETS[name], **params)


# --- the presets a run's configuration names --------------------------------------------------


def uint8_where_exact(transforms: SegmentationTransform) -> SegmentationTransform:
    """The preset returning uint8 images, normalised later on the device, where that gives the
    same floats: fixed-size presets without crops, whose images are never padded (a padded
    float image is exactly 0 there). A quarter of the bytes through the loader: an epoch read
    from the cache runs about twice as fast (benchmarks/bench_data.py)."""
    if transforms.size is not None and transforms.crop_size is None:
        return replace(transforms, normalize=False)
    return transforms


def transforms_for(preset: str, size: int, hflip: bool | None = None):
    """A transforms preset at config.image_size: the resize of "report", the crop of
    "paper-train"; "paper-eval" keeps full images. `hflip` None keeps the preset's flips."""
    params = {} if hflip is None else {"hflip": hflip}
    sized = {"paper-train": {"crop_size": size}, "paper-eval": {}}.get(preset, {"size": size})
    return make_transforms(preset, **sized, **params)
