"""A synthetic PASCAL VOC 2012: the same folder tree and file formats, generated in seconds.

`make_synthetic_voc(root)` writes `root/VOCdevkit/VOC2012` with JPEG images, palette PNG masks
(VOC's palette, a 255 "void" band around every object as VOC draws it) and the split files
`ImageSets/Segmentation/train.txt` and `val.txt`, so everything that reads VOC reads it too.

It is built to need context, as VOC does. Every object, every background region and every
distractor takes its colours and texture from one shared distribution (`_paint`), so the colour
of a pixel says nothing about its class: a colour-only classifier stays near chance (the tests
check it). What tells the classes apart is shape and layout: how the parts of an object sit
together. Each image holds several objects at varied scales, some overlapping (occlusion), on a
cluttered background of distractor shapes (labelled background) painted the same way. A few
parts (windows, screens, wheels, eyes) take a second paint from the same distribution, so an
object is not always one flat region either.

The 20 classes' shapes are drawn by `deeplab_kit.data.synthetic_shapes` (its docstring has the table).

Randomness is keyed: image `i` of split `s` comes from `(seed, s, i)` alone, so a bigger dataset
starts with the same images as a smaller one, and the same arguments give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_kit.data.classes import CLASSES_FILE, IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE, Classes
from deeplab_kit.data.synthetic_shapes import NUM_DISTRACTOR_KINDS, SHAPES, Frame, distractor
from deeplab_kit.files import write_json

DEFAULT_ROOT = "data/synthetic"  # where the generated dataset goes unless told (under the checkout)
GENERATOR_VERSION = 4  # bump when the drawing changes: a stored dataset then gets regenerated
MANIFEST_NAME = "synthetic.json"
GENERATOR = "deeplab_kit.data.synthetic"
# The generator's name in manifests written before the data package existed: still ours.
FORMER_GENERATORS = ("deeplab_kit.synthetic",)
SPLITS = ("train", "val", "tune")  # "tune": a split for choosing settings, apart from val
MIN_SIZE = 32
JPEG_QUALITY = 90

# --- paint: one distribution for every object, distractor and background ----------------------


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, ys, xs) -> np.ndarray:
    """Soft blotches in [0, 1] at pixels (ys, xs): random values on a (cells + 1)^2 grid
    spread over the image, interpolated bilinearly."""
    grid = rng.random((cells + 1, cells + 1))
    gy, gx = ys * (cells / size), xs * (cells / size)  # grid coordinates in [0, cells)
    iy, ix = gy.astype(int), gx.astype(int)
    wy, wx = gy - iy, gx - ix
    top = grid[iy, ix] * (1 - wx) + grid[iy, ix + 1] * wx
    bottom = grid[iy + 1, ix] * (1 - wx) + grid[iy + 1, ix + 1] * wx
    return top * (1 - wy) + bottom * wy


def _paint(rng: np.random.Generator, size: int, region: np.ndarray) -> np.ndarray:
    """Colours in [0, 1] for the pixels of `region`, (n, 3): flat, stripes, checks, blotches
    or a gradient, laid out over the whole image.

    Two colours, the second pulled part way towards another random colour, so the texture
    inside a region is weaker than the edges between regions.
    """
    ys, xs = np.nonzero(region)
    ys, xs = ys + 0.5, xs + 0.5  # pixel centres
    base = rng.random(3)
    other = base + rng.uniform(0.15, 0.45) * (rng.random(3) - base)
    kind = rng.integers(5)
    cos, sin = math.cos(angle := rng.uniform(0, math.pi)), math.sin(angle)
    period = size * rng.uniform(0.05, 0.15)
    along = xs * cos + ys * sin
    if kind == 0:  # flat
        t = np.zeros_like(xs)
    elif kind == 1:  # stripes
        t = (np.mod(along / period + rng.random(), 1.0) < 0.5).astype(np.float64)
    elif kind == 2:  # checks
        across = -xs * sin + ys * cos
        t = (np.floor(along / period) + np.floor(across / period)) % 2
    elif kind == 3:  # blotches
        t = _smooth_noise(rng, size, int(rng.integers(3, 9)), ys, xs)
    else:  # gradient across the whole image: `along` runs from 0 (or below) to its extent
        low = min(0.0, size * cos) + min(0.0, size * sin)
        t = (along - low) / (size * (abs(cos) + abs(sin)))
    return base + t[:, None] * (other - base)


# --- one image ------------------------------------------------------------------------------


def _frame(rng, grid_y, grid_x, size, half_extent, cx=None, cy=None, max_angle=0.3):
    """A random frame: centre, scale (with a little stretch), small rotation, mirror."""
    cx = rng.uniform(0, size) if cx is None else cx
    cy = rng.uniform(0, size) if cy is None else cy
    stretch = math.exp(rng.uniform(-0.15, 0.15))
    angle = rng.uniform(-max_angle, max_angle)
    mirror = bool(rng.integers(2))
    return Frame(
        grid_y, grid_x, cx, cy, half_extent * stretch, half_extent / stretch, angle, mirror
    )


def _place(rng, size, count, scale_range):
    """Centres and half-extents of `count` objects: overlapping a little (occlusion), not fully."""
    placed: list[tuple[float, float, float]] = []
    for _ in range(count):
        for _attempt in range(20):
            r = size * math.exp(rng.uniform(*np.log(scale_range)))
            cx, cy = rng.uniform(0.15 * size, 0.85 * size, size=2)
            if all(math.hypot(cx - x, cy - y) > 0.7 * (r + q) for x, y, q in placed):
                break
        placed.append((cx, cy, r))
    return placed


def _void_band(labels: np.ndarray, width: int) -> np.ndarray:
    """VOC's outline band: True where another label lies close by, `width` pixels across.

    A pixel is void when its window of offsets -(width // 2) .. width - width // 2 holds
    another label, which puts width // 2 pixels on one side of each edge and the rest on the other.
    """
    low, high = width // 2, width - width // 2
    padded = np.pad(labels, (low, high), mode="edge")
    h, w = labels.shape
    band = np.zeros(labels.shape, dtype=bool)
    for dy in range(low + high + 1):
        for dx in range(low + high + 1):
            band |= padded[dy : dy + h, dx : dx + w] != labels
    return band


OBJECT_SCALE = (0.2, 0.42)  # an object's half-extent, as a share of the image side


def render(
    rng: np.random.Generator, size: int, classes: list[int], object_scale=OBJECT_SCALE
) -> tuple[np.ndarray, np.ndarray]:
    """One image and its mask: (size, size, 3) uint8 RGB and (size, size) uint8 labels."""
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5  # pixel centres
    image = np.empty((size, size, 3))  # (H, W, 3)
    image[:] = _paint(rng, size, np.ones((size, size), dtype=bool)).reshape(size, size, 3)
    labels = np.zeros((size, size), dtype=np.uint8)

    if rng.random() < 0.5:  # a second background region below a tilted horizon
        tilt, level = rng.uniform(-0.4, 0.4), rng.uniform(0.3, 0.8) * size
        ground = grid_y > level + tilt * (grid_x - size / 2)
        image[ground] = _paint(rng, size, ground)

    for _ in range(int(rng.integers(2, 6))):  # clutter behind the objects
        f = _frame(rng, grid_y, grid_x, size, size * rng.uniform(0.05, 0.22), max_angle=math.pi)
        region = distractor(f, int(rng.integers(NUM_DISTRACTOR_KINDS)))
        image[region] = _paint(rng, size, region)

    placed = _place(rng, size, len(classes), tuple(object_scale))
    for label, (cx, cy, r) in zip(classes, placed, strict=True):
        f = _frame(rng, grid_y, grid_x, size, r, cx, cy)
        body, accent = SHAPES[VOC_CLASSES[label]](f)
        image[body] = _paint(rng, size, body)
        if accent is not None:
            image[accent] = _paint(rng, size, accent)
            body = body | accent
        labels[body] = label

    if rng.random() < 0.3:  # something in front, which occludes objects
        f = _frame(rng, grid_y, grid_x, size, size * rng.uniform(0.05, 0.15), max_angle=math.pi)
        region = distractor(f, int(rng.integers(NUM_DISTRACTOR_KINDS)))
        image[region] = _paint(rng, size, region)
        labels[region] = 0

    labels[_void_band(labels, max(1, round(size / 80)))] = IGNORE_INDEX
    image = image + rng.normal(0.0, 0.03, image.shape)  # sensor noise
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), labels


# --- the dataset ----------------------------------------------------------------------------


def _class_stream(seed: int, split: str, total: int, classes: Sequence[int]) -> list[int]:
    """Object classes in turn from shuffled rounds of `classes`: each appears equally often."""
    rng = np.random.default_rng([seed, SPLITS.index(split), 1_000_000])
    rounds = [rng.permutation(np.asarray(classes)) for _ in range(total // len(classes) + 1)]
    return [int(c) for c in np.concatenate(rounds)[:total]]


def _image_rng(seed: int, split: str, index: int, *stream: int) -> np.random.Generator:
    """Image `index` of `split`'s own generator, keyed so that it draws alike whatever else is
    generated: no stream draws the image, stream 1 its object count."""
    return np.random.default_rng([seed, SPLITS.index(split), index, *stream])


def _ids(split: str, count: int) -> list[str]:
    return [f"{split}_{index:05d}" for index in range(count)]


def make_synthetic_voc(
    root: str | Path,
    num_train: int = 200,
    num_val: int = 50,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    object_scale: Sequence[float] | None = None,
    num_tune: int = 0,
) -> Path:
    """Write a synthetic VOC 2012 tree under `root` (see the module docstring); return `root`.

    `classes` (VOC label numbers, 1..20) draws the objects from those classes only (None: all
    20), for experiments whose question is not recognition but, say, resolution.
    `object_scale` (low, high) draws each object's half-extent from that share of the image
    side (None: `OBJECT_SCALE`); larger objects have interiors farther from their outlines.
    `num_tune` > 0 adds a third split, "tune", drawn like val but apart from it: where a setting
    (a learning rate) is chosen, so that the val scores reported were not chosen on.

    `root/VOCdevkit/VOC2012` gets `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` and
    `ImageSets/Segmentation/{train,val}.txt`, plus a manifest of the arguments. Calling again
    with the same arguments finds the manifest and returns at once; other arguments regenerate
    (and remove the images the new dataset no longer lists). A VOC tree that this function did
    not write is never touched.
    """
    wanted = _manifest(num_train, num_val, size, seed, classes, object_scale)
    if num_tune:
        wanted["num_tune"] = int(num_tune)
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    counts = {split: wanted[f"num_{split}"] for split in SPLITS if f"num_{split}" in wanted}
    old = _read_manifest(voc / MANIFEST_NAME, voc)
    if old == wanted and _complete(voc, counts):
        return root
    if old is not None:
        _remove_stale(voc, old, counts)
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    # Marked as ours but unfinished: an interrupted run is neither complete nor "foreign".
    write_json(voc / MANIFEST_NAME, {**wanted, "complete": False})
    for split, count in counts.items():
        _write_split(voc, split, count, wanted)
    write_json(voc / MANIFEST_NAME, wanted)
    return root


def _manifest(num_train, num_val, size, seed, classes, object_scale) -> dict:
    """The arguments, checked, as the manifest records them."""
    for name, value, low in (
        ("num_train", num_train, 1),
        ("num_val", num_val, 1),
        ("size", size, MIN_SIZE),
        ("seed", seed, 0),
    ):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"make_synthetic_voc: {name} must be an integer >= {low}, got {value!r}"
            )
    wanted = {"generator": GENERATOR, "version": GENERATOR_VERSION}
    wanted.update(num_train=int(num_train), num_val=int(num_val), size=int(size), seed=int(seed))
    if classes is not None:
        wanted["classes"] = sorted({int(c) for c in classes})
        if not wanted["classes"] or not all(1 <= c < len(VOC_CLASSES) for c in wanted["classes"]):
            raise ValueError(f"make_synthetic_voc: classes must be labels 1..20, got {classes!r}")
    if object_scale is not None:
        low, high = (float(v) for v in object_scale)
        if not 0 < low <= high <= 1:
            raise ValueError(
                f"make_synthetic_voc: object_scale must be 0 < low <= high <= 1, got {object_scale!r}"
            )
        wanted["object_scale"] = [low, high]
    return wanted


def _write_split(voc: Path, split: str, count: int, wanted: dict) -> None:
    """One split's images, palette masks and list file."""
    seed, size = wanted["seed"], wanted["size"]
    pool = wanted.get("classes") or range(1, len(VOC_CLASSES))
    scale = wanted.get("object_scale") or OBJECT_SCALE
    per_image = [int(_image_rng(seed, split, i, 1).integers(2, 5)) for i in range(count)]
    stream = iter(_class_stream(seed, split, sum(per_image), pool))
    for index, image_id in enumerate(_ids(split, count)):
        drawn = [next(stream) for _ in range(per_image[index])]
        image, labels = render(_image_rng(seed, split, index), size, drawn, scale)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{image_id}.jpg", quality=JPEG_QUALITY)
        mask = Image.fromarray(labels)
        mask.putpalette(VOC_PALETTE.tobytes())  # "L" becomes "P" with VOC's colours
        mask.save(voc / "SegmentationClass" / f"{image_id}.png")
    lists = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    lists.write_text("".join(f"{i}\n" for i in _ids(split, count)))


def _read_manifest(path: Path, voc: Path) -> dict | None:
    """The manifest of a synthetic tree; None when there is no tree; an error for a foreign one."""
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = None
        ours = (GENERATOR, *FORMER_GENERATORS)
        if isinstance(manifest, dict) and manifest.get("generator") in ours:
            return manifest
        raise ValueError(
            f"{path}: not a manifest written by make_synthetic_voc; remove it to regenerate"
        )
    if (voc / "JPEGImages").is_dir() and any((voc / "JPEGImages").iterdir()):
        raise ValueError(
            f"{voc} already holds a VOC tree that make_synthetic_voc did not write; "
            "choose another root so that it is not overwritten"
        )
    return None


def _complete(voc: Path, counts: dict[str, int]) -> bool:
    for split, count in counts.items():
        last = _ids(split, count)[-1]
        files = (f"JPEGImages/{last}.jpg", f"SegmentationClass/{last}.png")
        lists = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not (all((voc / name).is_file() for name in files) and lists.is_file()):
            return False
    return True


def _remove_stale(voc: Path, old: dict, counts: dict[str, int]) -> None:
    """Delete images of an earlier synthetic dataset that the new one does not list."""
    for split, count in counts.items():
        old_count = old.get(f"num_{split}")
        if not isinstance(old_count, int):
            continue
        for image_id in _ids(split, old_count)[count:]:
            (voc / "JPEGImages" / f"{image_id}.jpg").unlink(missing_ok=True)
            (voc / "SegmentationClass" / f"{image_id}.png").unlink(missing_ok=True)


def tree_hash(root: str | Path) -> str:
    """A SHA-256 over the names and bytes of a VOC tree's images, masks and split lists: the
    same hash means the same dataset, whichever machine generated it."""
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    digest = hashlib.sha256()
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        for path in sorted((voc / folder).iterdir()):
            digest.update(f"{folder}/{path.name}\n".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


# --- a tree at VOC's own image sizes --------------------------------------------------------

# (width, height) of common VOC 2012 images: landscape, portrait and odd sizes.
VOC_IMAGE_SIZES = ((500, 375), (375, 500), (500, 333), (500, 400), (486, 500))


def make_voc_like_tree(
    root: str | Path, splits: dict[str, int], *, sizes=VOC_IMAGE_SIZES, seed: int = 0
) -> Path:
    """root/VOCdevkit/VOC2012 in VOC's exact format with images of VOC's own sizes (not the
    squares of `make_synthetic_voc`): a smooth, textured background with a few elliptic objects
    of random classes, each with VOC's void border, as JPEGs near VOC's file sizes and palette
    PNG masks, and one ImageSets list per split ({"train": 3, "val": 10}). For what depends on
    sizes and formats (rehearsals, tests, benchmarks); there is nothing to learn in it."""
    rng = np.random.default_rng(seed)
    voc = Path(root) / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    for split, count in splits.items():
        ids = [f"2012_{split}_{i:04d}" for i in range(count)]
        for i, sample_id in enumerate(ids):
            image, labels = draw_voc_like_sample(rng, *sizes[i % len(sizes)])
            Image.fromarray(image).save(voc / "JPEGImages" / f"{sample_id}.jpg", quality=90)
            mask = Image.fromarray(labels)
            mask.putpalette(VOC_PALETTE.tobytes())
            mask.save(voc / "SegmentationClass" / f"{sample_id}.png")
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return Path(root)


def draw_voc_like_sample(
    rng: np.random.Generator, width: int, height: int
) -> tuple[np.ndarray, np.ndarray]:
    """A (height, width, 3) uint8 image and its (height, width) labels."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, size=3)
    image = np.stack(
        [127 + 80 * np.sin(x / rng.uniform(20, 90) + y / rng.uniform(20, 90) + p) for p in phase],
        axis=-1,
    )
    labels = np.zeros((height, width), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.1, 0.3) * height, rng.uniform(0.1, 0.3) * width
        inside = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2
        labels[inside <= 1.1] = IGNORE_INDEX  # the void border
        labels[inside <= 1.0] = rng.integers(1, len(VOC_CLASSES))
        image[inside <= 1.0] = rng.uniform(0, 255, size=3) + 20 * np.sin(x / 7)[inside <= 1.0, None]
    image += rng.normal(0, 16, size=image.shape)  # photo-like texture: JPEGs near VOC's ~100 KB
    return image.clip(0, 255).astype(np.uint8), labels


# --- a dataset of your own, as one often comes ----------------------------------------------

OWN_CLASSES = Classes(
    ("background", "plane", "bottle", "cat"),
    ((0, 0, 0), (255, 128, 0), (0, 160, 255), (200, 0, 200)),
    void_colour=(255, 255, 255),
)
_OWN_LABELS = {0: 0, 1: 1, 5: 2, 8: 3, IGNORE_INDEX: IGNORE_INDEX}  # VOC's label -> its own


def make_rgb_mask_set(
    root: str | Path, num_train: int = 48, num_val: int = 16, size: int = 96, seed: int = 0
) -> Path:
    """A dataset as your own often comes: VOC's folder tree, its masks drawn as RGB colours, and
    four classes named in a classes file beside it (`OWN_CLASSES`: background, plane, bottle,
    cat; void in white). Made from the generated set's aeroplanes, bottles and cats, relabelled;
    returns `root`."""
    root = Path(root)
    source = make_synthetic_voc(
        root / ".generated", num_train, num_val, size, seed, classes=(1, 5, 8)
    )
    src, voc = source / "VOCdevkit" / "VOC2012", root / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    colours = OWN_CLASSES.palette
    for mask_path in sorted((src / "SegmentationClass").glob("*.png")):
        labels = np.vectorize(_OWN_LABELS.get)(np.asarray(Image.open(mask_path)))
        Image.fromarray(colours[labels]).save(voc / "SegmentationClass" / mask_path.name)
        image = src / "JPEGImages" / f"{mask_path.stem}.jpg"
        (voc / "JPEGImages" / image.name).write_bytes(image.read_bytes())
    for split in ("train", "val"):
        lists = f"ImageSets/Segmentation/{split}.txt"
        (voc / lists).write_text((src / lists).read_text())
    names, colours = (*OWN_CLASSES.names, "void"), (*OWN_CLASSES.colours, OWN_CLASSES.void_colour)
    rows = [f"{name} {r} {g} {b}" for name, (r, g, b) in zip(names, colours, strict=True)]
    lines = ["# name red green blue", *rows]
    (root / CLASSES_FILE).write_text("\n".join(lines) + "\n")
    return root
