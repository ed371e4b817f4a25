"""A dataset's classes: PASCAL VOC 2012's 21 names, the void label, the colour palette of its
masks; your own dataset's, read from a small file beside it; and writing a mask in a palette.

    VOC                                   # Classes: VOC's names, colours and void label (255)
    read_classes("mydata/classes.txt")    # one line per class: name r g b; optionally void
    classes_of("mydata")                  # the file in a dataset's root if there is one, else VOC

A classes file (`CLASSES_FILE`, in the dataset's root, beside VOCdevkit/) lists one class a
line, in label order, as its name and its RGB colour; a line `void r g b [label]` names the
colour of unscored pixels in RGB masks and the label they carry in index masks (255 unless
given). Blank lines and `#` comments are skipped:

    # name       red green blue
    background     0     0    0
    road         128    64  128
    car            0     0  142
    void         255   255  255  0      # unscored: white in RGB masks, 0 in index masks
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deeplab_kit.files import atomic_write

VOC_CLASSES = tuple(
    """background aeroplane bicycle bird boat bottle bus car cat chair cow diningtable dog horse
    motorbike person pottedplant sheep sofa train tvmonitor""".split()
)
NUM_CLASSES = len(VOC_CLASSES)  # 21
IGNORE_INDEX = 255  # VOC's "void": object borders and hard regions, not scored


def _voc_palette() -> np.ndarray:
    """VOC's colour map: class c gets the colour spelled by the bits of c, spread over R, G, B
    (bits 0, 1, 2 of c go to bit 7 of R, G, B; bits 3, 4, 5 to bit 6; and so on)."""
    labels, channels = np.arange(256)[:, None], np.arange(3)
    return sum(((labels >> (3 * j + channels)) & 1) << (7 - j) for j in range(8)).astype(np.uint8)


VOC_PALETTE = _voc_palette()  # (256, 3) uint8; VOC_PALETTE[255] is the void colour (224, 224, 192)


def save_mask(labels, path, palette: np.ndarray = VOC_PALETTE) -> None:
    """(H, W) class indices as a palette PNG with `palette`'s colours (VOC's by default: the
    format of VOC's masks and of its evaluation server), written atomically
    (`deeplab_kit.files.atomic_write`)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8))  # mode "L"
    image.putpalette(np.asarray(palette, dtype=np.uint8).tobytes())  # -> mode "P", same indices
    atomic_write(path, lambda file: image.save(file, format="PNG"))


CLASSES_FILE = "classes.txt"


@dataclass(frozen=True)
class Classes:
    """A dataset's classes: names in label order, their RGB colours, and how its masks mark
    unscored pixels (`void_label` in index masks, `void_colour` in RGB ones); the kit reads them
    as `IGNORE_INDEX`."""

    names: tuple[str, ...]
    colours: tuple[tuple[int, int, int], ...]
    void_label: int = IGNORE_INDEX
    void_colour: tuple[int, int, int] = tuple(int(c) for c in VOC_PALETTE[IGNORE_INDEX])

    def __post_init__(self) -> None:
        if not self.names or len(self.names) != len(self.colours):
            raise ValueError(f"{len(self.names)} class names but {len(self.colours)} colours")
        if len(self.names) >= IGNORE_INDEX:
            raise ValueError(f"at most {IGNORE_INDEX} classes, got {len(self.names)}")

    @property
    def palette(self) -> np.ndarray:
        """(256, 3) uint8: each label's colour, void's at IGNORE_INDEX (for palette PNGs)."""
        palette = VOC_PALETTE.copy()
        palette[: len(self.colours)] = self.colours
        palette[IGNORE_INDEX] = self.void_colour
        return palette

    def to_dict(self) -> dict:
        return {
            "names": list(self.names),
            "colours": [list(c) for c in self.colours],
            "void_label": self.void_label,
            "void_colour": list(self.void_colour),
        }

    @classmethod
    def from_dict(cls, values: dict) -> Classes:
        return cls(
            tuple(values["names"]),
            tuple(tuple(int(v) for v in c) for c in values["colours"]),
            int(values.get("void_label", IGNORE_INDEX)),
            tuple(int(v) for v in values.get("void_colour", VOC_PALETTE[IGNORE_INDEX])),
        )


VOC = Classes(VOC_CLASSES, tuple(tuple(int(v) for v in VOC_PALETTE[k]) for k in range(NUM_CLASSES)))


def read_classes(path: str | Path) -> Classes:
    """A classes file (see the module docstring); every problem names the file and the line."""
    path = Path(path)
    names, colours, void = [], [], {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not (fields := line.split("#", 1)[0].split()):
            continue
        try:
            values = [int(v) for v in fields[1:]]
        except ValueError:
            values = []
        where = f"{path}, line {number}"
        if len(values) not in (3, 4) or not all(0 <= v <= 255 for v in values):
            raise ValueError(
                f"{where}: expected a name and three colour values 0..255, got {line.strip()!r}"
            )
        if fields[0] == "void":
            void = {
                "void_colour": tuple(values[:3]),
                "void_label": values[3] if len(values) == 4 else IGNORE_INDEX,
            }
        elif len(values) == 3:
            names.append(fields[0])
            colours.append(tuple(values))
        else:
            raise ValueError(f"{where}: only the void line takes a label after its colour")
    if not names:
        raise ValueError(f"{path}: lists no classes")
    if len(set(colours)) != len(colours) or void.get("void_colour") in colours:
        raise ValueError(f"{path}: two classes (or a class and void) share a colour")
    return Classes(tuple(names), tuple(colours), **void)


def classes_of(root: str | Path) -> Classes:
    """The classes of the dataset in `root`: its classes file when there is one, else VOC's."""
    path = Path(root) / CLASSES_FILE
    return read_classes(path) if path.is_file() else VOC


def classes_for(num_classes: int) -> Classes:
    """Classes for a model that carries none (a checkpoint from before they were saved, or data
    without a classes file): VOC's for 21, else "class 0", "class 1", ... in VOC's colours."""
    if num_classes == NUM_CLASSES:
        return VOC
    colours = tuple(tuple(int(v) for v in VOC_PALETTE[k]) for k in range(num_classes))
    return Classes(tuple(f"class {k}" for k in range(num_classes)), colours)
