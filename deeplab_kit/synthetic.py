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

The 20 classes and the shapes that stand for them ("accent" parts take a second paint):

| label | class       | shape                                                                |
|------:|-------------|----------------------------------------------------------------------|
|     1 | aeroplane   | top view: long fuselage crossed by swept wings, small tail wings     |
|     2 | bicycle     | two thin rings joined by a thin triangular frame and a handlebar     |
|     3 | bird        | oval body, round head with a pointed beak, one raised wing, tail     |
|     4 | boat        | hull wider at the top, a mast and a triangular sail                  |
|     5 | bottle      | tall narrow body, sloping shoulders, a neck and a cap                |
|     6 | bus         | tall long box with a row of window panes (accent) on two wheels      |
|     7 | car         | low box with a sloped cabin on top, two big wheels (accent)          |
|     8 | cat         | round face with two pointed ears and two eyes (accent)               |
|     9 | chair       | side view "h": seat, tall backrest, two legs                         |
|    10 | cow         | boxy body on four straight legs, square head with two horns, tail    |
|    11 | diningtable | wide thin top on two legs, plates on it (accent)                     |
|    12 | dog         | sitting: haunch, upright chest, front leg, head with a long snout    |
|    13 | horse       | oval body on four long legs, long raised neck, long head, tail       |
|    14 | motorbike   | two thick wheels (accent), a solid body between them, a handlebar    |
|    15 | person      | upright: round head on a torso, two arms, two legs                   |
|    16 | pottedplant | a tapering pot with a fan of leaf ovals on stems above it            |
|    17 | sheep       | bumpy cloud of a body on four thin legs, a small head (accent)       |
|    18 | sofa        | front view: a seat, a back rest, two rounded arm rests, short feet   |
|    19 | train       | a locomotive with a chimney and two carriages, coupled, on wheels    |
|    20 | tvmonitor   | a frame around a screen (accent) on a stem and a foot                |

Randomness is keyed: image `i` of split `s` comes from `(seed, s, i)` alone, so a bigger dataset
starts with the same images as a smaller one, and the same arguments give the same bytes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from deeplab_kit.voc import IGNORE_INDEX, VOC_CLASSES, VOC_PALETTE

GENERATOR_VERSION = 4  # bump when the drawing changes: a stored dataset then gets regenerated
MANIFEST_NAME = "synthetic.json"
SPLITS = ("train", "val")
MIN_SIZE = 32
JPEG_QUALITY = 90

# --- geometry: boolean masks in an object's own frame ----------------------------------------
# An object is drawn in its own unit frame: u points right, v points down, the object spans
# roughly [-1, 1] in both. `Frame` maps every pixel of the image into that frame.


class Frame:
    """Pixel coordinates seen from an object's frame (centre, scale, rotation, mirror)."""

    def __init__(self, grid_y, grid_x, cx, cy, scale_u, scale_v, angle, mirror):
        dx, dy = grid_x - cx, grid_y - cy
        cos, sin = math.cos(angle), math.sin(angle)
        self.u = (dx * cos + dy * sin) / scale_u * (-1.0 if mirror else 1.0)  # (H, W)
        self.v = (-dx * sin + dy * cos) / scale_v  # (H, W)


def ellipse(f: Frame, cu, cv, ru, rv, angle=0.0):
    du, dv = f.u - cu, f.v - cv
    if angle:
        cos, sin = math.cos(angle), math.sin(angle)
        du, dv = du * cos + dv * sin, -du * sin + dv * cos
    return (du / ru) ** 2 + (dv / rv) ** 2 <= 1.0


def circle(f: Frame, cu, cv, r):
    return ellipse(f, cu, cv, r, r)


def ring(f: Frame, cu, cv, r_outer, r_inner):
    d2 = (f.u - cu) ** 2 + (f.v - cv) ** 2
    return (d2 <= r_outer**2) & (d2 >= r_inner**2)


def box(f: Frame, u0, v0, u1, v1):
    return (f.u >= u0) & (f.u <= u1) & (f.v >= v0) & (f.v <= v1)


def polygon(f: Frame, *points):
    """A convex polygon, its corners in either winding order."""
    pts = np.asarray(points, dtype=np.float64)
    edges = np.roll(pts, -1, axis=0) - pts
    cross = [e[0] * (f.v - p[1]) - e[1] * (f.u - p[0]) for p, e in zip(pts, edges, strict=True)]
    return np.all(np.stack(cross) >= 0, axis=0) | np.all(np.stack(cross) <= 0, axis=0)


def segment(f: Frame, p, q, width):
    """A thick line from p to q with round ends."""
    (pu, pv), (qu, qv) = p, q
    du, dv = qu - pu, qv - pv
    t = np.clip(((f.u - pu) * du + (f.v - pv) * dv) / (du * du + dv * dv), 0.0, 1.0)
    return (f.u - pu - t * du) ** 2 + (f.v - pv - t * dv) ** 2 <= (width / 2) ** 2


# --- the 20 classes: each returns (body, accent) boolean masks --------------------------------


def aeroplane(f):
    body = ellipse(f, 0.0, 0.0, 1.0, 0.14)
    for s in (-1, 1):  # swept wings and tail wings, mirrored about the fuselage
        body |= polygon(f, (0.3, 0.0), (-0.15, 0.9 * s), (-0.38, 0.9 * s), (-0.05, 0.0))
        body |= polygon(f, (-0.7, 0.0), (-0.92, 0.38 * s), (-1.02, 0.38 * s), (-0.95, 0.0))
    return body, None


def bicycle(f):
    body = ring(f, -0.58, 0.35, 0.4, 0.24) | ring(f, 0.58, 0.35, 0.4, 0.24)
    seat, head, crank = (-0.22, -0.3), (0.42, -0.3), (0.0, 0.35)
    for p, q in [((-0.58, 0.35), seat), (seat, head), (head, (0.58, 0.35)), (seat, crank),
                 ((-0.58, 0.35), crank), (crank, head), (head, (0.38, -0.55)),
                 ((0.25, -0.6), (0.5, -0.55)), ((-0.32, -0.42), (-0.1, -0.42))]:  # fmt: skip
        body |= segment(f, p, q, 0.14)
    return body, None


def bird(f):
    body = ellipse(f, -0.05, 0.15, 0.48, 0.27) | circle(f, 0.5, -0.12, 0.2)
    body |= polygon(f, (0.64, -0.2), (0.95, -0.1), (0.64, -0.02))  # beak
    body |= polygon(f, (-0.2, 0.05), (0.2, 0.05), (-0.45, -0.85))  # raised wing
    body |= polygon(f, (-0.45, 0.1), (-0.95, -0.1), (-0.95, 0.35))  # tail
    return body, None


def boat(f):
    body = polygon(f, (-1.0, 0.35), (1.0, 0.35), (0.7, 0.75), (-0.7, 0.75))
    body |= segment(f, (0.0, 0.4), (0.0, -0.95), 0.12)
    body |= polygon(f, (0.07, -0.85), (0.07, 0.25), (0.75, 0.25))
    return body, None


def bottle(f):
    body = box(f, -0.32, -0.2, 0.32, 1.0)
    body |= polygon(f, (-0.32, -0.2), (0.32, -0.2), (0.13, -0.5), (-0.13, -0.5))
    body |= box(f, -0.13, -0.88, 0.13, -0.48)
    body |= box(f, -0.17, -1.0, 0.17, -0.86)
    return body, None


def bus(f):
    body = box(f, -1.0, -0.55, 1.0, 0.4) | circle(f, -0.6, 0.42, 0.18) | circle(f, 0.6, 0.42, 0.18)
    panes = box(f, -0.9, -0.42, 0.9, -0.12) & (np.mod(f.u + 0.9, 0.38) < 0.28)
    return body, panes


def car(f):
    body = box(f, -1.0, -0.08, 1.0, 0.32)
    body |= polygon(f, (-0.6, -0.06), (0.55, -0.06), (0.3, -0.5), (-0.4, -0.5))
    wheels = circle(f, -0.55, 0.36, 0.24) | circle(f, 0.55, 0.36, 0.24)
    return body, wheels


def cat(f):
    body = circle(f, 0.0, 0.15, 0.6)
    for s in (-1, 1):
        body |= polygon(f, (0.6 * s, -0.05), (0.12 * s, -0.38), (0.58 * s, -0.95))
    eyes = ellipse(f, -0.24, 0.0, 0.13, 0.09) | ellipse(f, 0.24, 0.0, 0.13, 0.09)
    return body, eyes


def chair(f):
    body = box(f, -0.6, -0.08, 0.55, 0.2) | box(f, 0.3, -0.95, 0.55, 0.0)
    body |= box(f, -0.6, 0.1, -0.38, 0.95) | box(f, 0.33, 0.1, 0.55, 0.95)
    return body, None


def cow(f):
    body = box(f, -0.75, -0.3, 0.5, 0.25)
    for u in (-0.68, -0.45, 0.22, 0.42):
        body |= box(f, u - 0.08, 0.2, u + 0.08, 0.78)
    body |= box(f, 0.45, -0.5, 0.9, -0.05)  # head
    body |= polygon(f, (0.5, -0.48), (0.62, -0.48), (0.52, -0.72))  # horns
    body |= polygon(f, (0.73, -0.48), (0.85, -0.48), (0.83, -0.72))
    body |= segment(f, (-0.74, -0.25), (-0.9, 0.35), 0.1)  # tail
    return body, None


def diningtable(f):
    body = box(f, -1.0, -0.35, 1.0, -0.12)
    body |= box(f, -0.94, -0.2, -0.74, 0.75) | box(f, 0.74, -0.2, 0.94, 0.75)
    plates = ellipse(f, -0.45, -0.4, 0.28, 0.11) | ellipse(f, 0.35, -0.4, 0.28, 0.11)
    return body | plates, plates


def dog(f):
    body = ellipse(f, -0.3, 0.5, 0.42, 0.32)  # haunch, sitting
    body |= polygon(f, (-0.55, 0.35), (-0.05, 0.75), (0.35, -0.05), (0.0, -0.35))  # upright chest
    body |= segment(f, (0.2, 0.0), (0.28, 0.95), 0.17)  # front leg
    body |= circle(f, 0.22, -0.5, 0.27) | box(f, 0.3, -0.55, 0.78, -0.3)  # head, long snout
    body |= ellipse(f, 0.0, -0.35, 0.1, 0.28, angle=0.25)  # floppy ear
    body |= segment(f, (-0.6, 0.8), (-1.0, 0.75), 0.13)  # tail on the ground
    return body, None


def horse(f):
    body = ellipse(f, -0.1, -0.05, 0.6, 0.26)
    for u0, u1 in ((-0.55, -0.62), (-0.35, -0.32), (0.2, 0.25), (0.38, 0.45)):
        body |= segment(f, (u0, 0.05), (u1, 0.95), 0.14)
    body |= polygon(f, (0.3, -0.2), (0.55, 0.0), (0.85, -0.6), (0.62, -0.72))  # neck
    body |= ellipse(f, 0.85, -0.7, 0.3, 0.12, angle=0.5)  # long head
    body |= segment(f, (-0.68, -0.1), (-0.95, 0.55), 0.12)  # tail
    return body, None


def motorbike(f):
    wheels = ring(f, -0.62, 0.38, 0.38, 0.14) | ring(f, 0.62, 0.38, 0.38, 0.14)
    body = polygon(f, (-0.45, 0.3), (0.35, 0.3), (0.5, -0.15), (-0.25, -0.15))
    body |= box(f, -0.75, -0.28, 0.1, -0.12)  # seat
    body |= segment(f, (0.62, 0.38), (0.48, -0.2), 0.12)  # fork
    body |= segment(f, (0.48, -0.2), (0.6, -0.55), 0.1)  # handlebar
    return body | wheels, wheels


def person(f):
    body = circle(f, 0.0, -0.72, 0.22)  # head
    body |= polygon(f, (-0.3, -0.45), (0.3, -0.45), (0.24, 0.2), (-0.24, 0.2))  # torso
    for s in (-1, 1):
        body |= segment(f, (0.26 * s, -0.4), (0.48 * s, 0.15), 0.13)  # arms
        body |= segment(f, (0.13 * s, 0.15), (0.22 * s, 0.97), 0.16)  # legs
    return body, None


def pottedplant(f):
    body = polygon(f, (-0.38, 0.35), (0.38, 0.35), (0.25, 1.0), (-0.25, 1.0))
    for angle in (-1.0, -0.5, 0.0, 0.5, 1.0):  # a fan of leaves on stems
        du, dv = math.sin(angle), -math.cos(angle)
        body |= segment(f, (0.0, 0.4), (0.45 * du, 0.4 + 0.45 * dv), 0.1)
        body |= ellipse(f, 0.7 * du, 0.4 + 0.7 * dv, 0.12, 0.3, angle=angle)
    return body, None


def sheep(f):
    body = np.zeros_like(f.u, dtype=bool)
    for k in range(9):  # bumps around an oval make the woolly outline
        a = 2 * math.pi * k / 9
        body |= circle(f, -0.1 + 0.45 * math.cos(a), -0.05 + 0.22 * math.sin(a), 0.25)
    for u in (-0.45, -0.25, 0.1, 0.3):
        body |= box(f, u - 0.065, 0.2, u + 0.065, 0.75)
    head = ellipse(f, 0.62, -0.15, 0.22, 0.16, angle=0.4)
    return body | head, head


def sofa(f):
    body = box(f, -0.85, 0.1, 0.85, 0.45) | box(f, -0.72, -0.4, 0.72, 0.12)  # seat, back
    # arm rests with rounded tops, higher than the seat, lower than the back; short feet
    body |= box(f, -1.0, -0.05, -0.72, 0.45) | ellipse(f, -0.86, -0.05, 0.14, 0.12)
    body |= box(f, 0.72, -0.05, 1.0, 0.45) | ellipse(f, 0.86, -0.05, 0.14, 0.12)
    body |= box(f, -0.85, 0.4, -0.7, 0.62) | box(f, 0.7, 0.4, 0.85, 0.62)
    return body, None


def train(f):
    body = box(f, 0.36, -0.45, 1.0, 0.3) | box(f, 0.72, -0.72, 0.86, -0.4)  # engine, chimney
    body |= box(f, -0.3, -0.35, 0.3, 0.3) | box(f, -1.0, -0.35, -0.38, 0.3)  # carriages
    body |= box(f, -0.42, 0.1, 0.4, 0.18)  # couplers
    for u in (-0.85, -0.52, -0.18, 0.18, 0.52, 0.85):
        body |= circle(f, u, 0.35, 0.12)
    return body, None


def tvmonitor(f):
    body = box(f, -0.95, -0.85, 0.95, 0.45)
    body |= box(f, -0.09, 0.4, 0.09, 0.75) | box(f, -0.45, 0.72, 0.45, 0.86)  # stem, foot
    screen = box(f, -0.76, -0.67, 0.76, 0.27)
    return body, screen


SHAPES: dict[str, Callable] = {
    "aeroplane": aeroplane, "bicycle": bicycle, "bird": bird, "boat": boat, "bottle": bottle,
    "bus": bus, "car": car, "cat": cat, "chair": chair, "cow": cow, "diningtable": diningtable,
    "dog": dog, "horse": horse, "motorbike": motorbike, "person": person,
    "pottedplant": pottedplant, "sheep": sheep, "sofa": sofa, "train": train,
    "tvmonitor": tvmonitor,
}  # fmt: skip
assert tuple(SHAPES) == VOC_CLASSES[1:]


def silhouette(name: str, size: int = 64) -> np.ndarray:
    """One class's shape, centred and upright: (size, size) uint8, 0 outside, 1 body, 2 accent.

    For showing the shape table (`VOC_PALETTE`-free, so any colour map will do).
    """
    if name not in SHAPES:
        raise ValueError(f"unknown class {name!r}; choose one of {list(SHAPES)}")
    grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    f = Frame(grid_y, grid_x, size / 2, size / 2, size * 0.45, size * 0.45, 0.0, False)
    body, accent = SHAPES[name](f)
    out = body.astype(np.uint8)
    if accent is not None:
        out[accent] = 2
    return out


def _distractor(f: Frame, kind: int):
    """Background clutter: single plain shapes, painted like objects but labelled background."""
    if kind == 0:
        return ellipse(f, 0.0, 0.0, 1.0, 0.6)
    if kind == 1:
        return box(f, -1.0, -0.6, 1.0, 0.6)
    if kind == 2:
        return polygon(f, (-1.0, 0.8), (1.0, 0.8), (0.1, -0.9))
    if kind == 3:
        return segment(f, (-1.0, 0.0), (1.0, 0.0), 0.25)
    return ring(f, 0.0, 0.0, 0.9, 0.55)


NUM_DISTRACTOR_KINDS = 5

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


def render(
    rng: np.random.Generator, size: int, classes: list[int]
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
        region = _distractor(f, int(rng.integers(NUM_DISTRACTOR_KINDS)))
        image[region] = _paint(rng, size, region)

    placed = _place(rng, size, len(classes), (0.2, 0.42))
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
        region = _distractor(f, int(rng.integers(NUM_DISTRACTOR_KINDS)))
        image[region] = _paint(rng, size, region)
        labels[region] = 0

    labels[_void_band(labels, max(1, round(size / 80)))] = IGNORE_INDEX
    image = image + rng.normal(0.0, 0.03, image.shape)  # sensor noise
    return (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8), labels


# --- the dataset ----------------------------------------------------------------------------


def _split_key(split: str) -> int:
    return SPLITS.index(split)


def _class_stream(seed: int, split: str, total: int) -> list[int]:
    """Object classes in turn from shuffled rounds of 1..20: every class appears equally often."""
    rng = np.random.default_rng([seed, _split_key(split), 1_000_000])
    rounds = [rng.permutation(np.arange(1, len(VOC_CLASSES))) for _ in range(total // 20 + 1)]
    return [int(c) for c in np.concatenate(rounds)[:total]]


def _image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _split_key(split), index])


def _objects_per_image(seed: int, split: str, index: int) -> int:
    return int(np.random.default_rng([seed, _split_key(split), index, 1]).integers(2, 5))


def _ids(split: str, count: int) -> list[str]:
    return [f"{split}_{index:05d}" for index in range(count)]


def make_synthetic_voc(
    root: str | Path, num_train: int = 200, num_val: int = 50, size: int = 128, seed: int = 0
) -> Path:
    """Write a synthetic VOC 2012 tree under `root` (see the module docstring); return `root`.

    `root/VOCdevkit/VOC2012` gets `JPEGImages/<id>.jpg`, `SegmentationClass/<id>.png` and
    `ImageSets/Segmentation/{train,val}.txt`, plus a manifest of the arguments. Calling again
    with the same arguments finds the manifest and returns at once; other arguments regenerate
    (and remove the images the new dataset no longer lists). A VOC tree that this function did
    not write is never touched.
    """
    for name, value, low in (("num_train", num_train, 1), ("num_val", num_val, 1),
                             ("size", size, MIN_SIZE), ("seed", seed, 0)):  # fmt: skip
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise ValueError(
                f"make_synthetic_voc: {name} must be an integer >= {low}, got {value!r}"
            )
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    manifest_path = voc / MANIFEST_NAME
    wanted = {"generator": "deeplab_kit.synthetic", "version": GENERATOR_VERSION,
              "num_train": int(num_train), "num_val": int(num_val), "size": int(size),
              "seed": int(seed)}  # fmt: skip
    counts = {"train": int(num_train), "val": int(num_val)}

    old = _read_manifest(manifest_path, voc)
    if old == wanted and _complete(voc, counts):
        return root
    manifest_path.unlink(missing_ok=True)  # an interrupted run must not look complete
    if old is not None:
        _remove_stale(voc, old, counts)

    images, masks = voc / "JPEGImages", voc / "SegmentationClass"
    split_dir = voc / "ImageSets" / "Segmentation"
    for folder in (images, masks, split_dir):
        folder.mkdir(parents=True, exist_ok=True)
    palette = VOC_PALETTE.tobytes()
    for split, count in counts.items():
        per_image = [_objects_per_image(seed, split, i) for i in range(count)]
        stream = _class_stream(seed, split, sum(per_image))
        start = 0
        for index, image_id in enumerate(_ids(split, count)):
            classes = stream[start : start + per_image[index]]
            start += per_image[index]
            image, labels = render(_image_rng(seed, split, index), size, classes)
            Image.fromarray(image).save(images / f"{image_id}.jpg", quality=JPEG_QUALITY)
            mask = Image.fromarray(labels)
            mask.putpalette(palette)  # "L" becomes "P" with VOC's colours
            mask.save(masks / f"{image_id}.png")
        (split_dir / f"{split}.txt").write_text("".join(f"{i}\n" for i in _ids(split, count)))
    manifest_path.write_text(json.dumps(wanted, indent=2) + "\n")
    return root


def _read_manifest(path: Path, voc: Path) -> dict | None:
    """The manifest of a synthetic tree; None when there is no tree; an error for a foreign one."""
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            manifest = None
        if isinstance(manifest, dict) and manifest.get("generator") == "deeplab_kit.synthetic":
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
        ids = _ids(split, count)
        if not (voc / "JPEGImages" / f"{ids[-1]}.jpg").is_file():
            return False
        if not (voc / "SegmentationClass" / f"{ids[-1]}.png").is_file():
            return False
        if not (voc / "ImageSets" / "Segmentation" / f"{split}.txt").is_file():
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
