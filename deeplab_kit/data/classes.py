"""PASCAL VOC 2012's classes: the 21 names, the void label, the colour palette of its masks, and
writing a mask in that palette."""

from __future__ import annotations

import numpy as np

from deeplab_kit.files import atomic_write

VOC_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
NUM_CLASSES = len(VOC_CLASSES)  # 21
IGNORE_INDEX = 255  # VOC's "void": object borders and hard regions, not scored


def _voc_palette() -> np.ndarray:
    """VOC's colour map: class c gets the colour spelled by the bits of c, spread over R, G, B."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    for label in range(256):
        r = g = b = 0
        c = label
        for shift in range(7, -1, -1):  # bit j of the label goes to bit 7 - j/3 of a channel
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        palette[label] = (r, g, b)
    return palette


VOC_PALETTE = _voc_palette()  # (256, 3) uint8; VOC_PALETTE[255] is the void colour (224, 224, 192)


def save_mask(labels, path) -> None:
    """(H, W) class indices as a palette PNG with VOC's colours (the format of VOC's masks and
    of its evaluation server), written atomically (`deeplab_kit.files.atomic_write`)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))  # mode "L"
    image.putpalette(VOC_PALETTE.tobytes())  # -> mode "P", same indices
    atomic_write(path, lambda file: image.save(file, format="PNG"))
