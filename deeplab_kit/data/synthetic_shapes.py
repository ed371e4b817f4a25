"""The shapes of the generated dataset's 20 classes, and of its background clutter.

An object is drawn in its own unit frame (`Frame`: u to the right, v down, the object spanning
about [-1, 1] in both); each class's function returns boolean (body, accent) masks over every
pixel of the image. `deeplab_kit.data.synthetic` places, paints and labels them.

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
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from deeplab_kit.data.classes import VOC_CLASSES

# --- geometry: boolean masks in an object's own frame ----------------------------------------


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
    rear, front = (-0.58, 0.35), (0.58, 0.35)  # the wheels' centres
    body = ring(f, *rear, 0.4, 0.24) | ring(f, *front, 0.4, 0.24)
    seat, head, crank = (-0.22, -0.3), (0.42, -0.3), (0.0, 0.35)
    tubes = [(rear, seat), (seat, head), (head, front), (seat, crank), (rear, crank), (crank, head)]
    bars = [(head, (0.38, -0.55)), ((0.25, -0.6), (0.5, -0.55)), ((-0.32, -0.42), (-0.1, -0.42))]
    for p, q in tubes + bars:  # the frame, then the stem, the handlebar and the saddle
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
    shape.__name__: shape
    for shape in (aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, diningtable,
                  dog, horse, motorbike, person, pottedplant, sheep, sofa, train, tvmonitor)
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


def distractor(f: Frame, kind: int):
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
