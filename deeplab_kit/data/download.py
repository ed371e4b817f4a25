"""Download PASCAL VOC 2012 and SBD through torchvision, which verifies their MD5 checksums.

    python -m deeplab_kit download voc --root data      # -> data/VOCdevkit/VOC2012
    python -m deeplab_kit download sbd --root data      # -> data/SBD (for split "trainaug")

torchvision looks for the archive in the download folder first and, when its checksum matches,
extracts it without downloading. So when the host cannot be reached, get the archive elsewhere,
put it there and run the command again; the error message says exactly where.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

from torchvision.datasets import SBDataset, VOCSegmentation
from torchvision.datasets.voc import DATASET_YEAR_DICT

from deeplab_kit.data.voc import sbd_folder, voc_ready

__all__ = ["DownloadError", "download", "download_sbd", "download_voc"]

_VOC = DATASET_YEAR_DICT["2012"]  # torchvision's url, filename and md5 for VOC 2012 trainval

VOC_TREE = """\
{root}/VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg                  17,125 images
    SegmentationClass/<id>.png           2,913 palette PNG masks (255 = void)
    ImageSets/Segmentation/train.txt     1,464 ids
    ImageSets/Segmentation/val.txt       1,449 ids
    ImageSets/Segmentation/trainval.txt  2,913 ids"""

SBD_TREE = """\
{root}/SBD/                              (or {root}/benchmark_RELEASE/dataset/)
    cls/<id>.mat                         11,355 label files
    img/<id>.jpg                         11,355 images
    train.txt                            8,498 ids
    val.txt                              2,857 ids"""


class DownloadError(RuntimeError):
    """The archive could not be fetched or verified; the message says what to do instead."""


def _offline_message(
    name: str,
    url: str,
    archive: Path,
    md5: str,
    size: str,
    sources: list[str],
    tree: str,
    error: Exception,
    alternative: str = "",
) -> str:
    lines = [
        f"could not get {name} from {url} ({error}).",
        "",
        f"Get the archive {archive.name} ({size}, md5 {md5}) another way, for example:",
        *(f"  - {source}" for source in sources),
        "",
        "Put it here and run this command again:",
        f"  {archive}",
        "torchvision finds it there, checks its md5 and extracts it without downloading.",
    ]
    if alternative:
        lines.append(alternative)
    if archive.exists():
        lines.append(
            f"(A file is already at {archive}, but its md5 does not match: an incomplete or "
            "different download. Replace it.)"
        )
    lines += [
        "",
        "Expected tree afterwards:",
        tree,
        "",
        "No data at hand? `python -m deeplab_kit synth --out data/synthetic` generates a small",
        "VOC-format dataset, and `python -m deeplab_kit demo` trains on one. See data/README.md.",
    ]
    return "\n".join(lines)


def download_voc(root: str | os.PathLike = "data") -> Path:
    """PASCAL VOC 2012 trainval into root/VOCdevkit/VOC2012 (about 2 GB); returns that folder."""
    root = Path(root)
    voc = root / "VOCdevkit" / "VOC2012"
    if voc_ready(root):
        return voc
    archive = root / _VOC["filename"]
    try:
        VOCSegmentation(root, year="2012", image_set="train", download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        sources = [
            f"the official host: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{archive.name}",
            f"a long-standing mirror: https://pjreddie.com/media/files/{archive.name}",
            "a copy from a colleague, a course drive or a dataset hub: any copy with the md5 above",
        ]
        raise DownloadError(
            _offline_message(
                "PASCAL VOC 2012",
                _VOC["url"],
                archive,
                _VOC["md5"],
                "about 2 GB",
                sources,
                VOC_TREE.format(root=root),
                error,
            )
        ) from error
    return voc


def download_sbd(root: str | os.PathLike = "data") -> Path:
    """SBD (for split "trainaug") into root/SBD (about 1.4 GB); returns that folder."""
    root = Path(root)
    found = sbd_folder(root)
    if found is not None:
        return found
    sbd = root / "SBD"
    archive = sbd / SBDataset.filename
    try:
        SBDataset(sbd, image_set="train", mode="segmentation", download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as error:
        sources = [
            "the official page: http://home.bharathh.info/pubs/codes/SBD/download.html",
            "a copy from a colleague, a course drive or a dataset hub: any copy with the md5 above",
        ]
        alternative = (
            f"Or extract it yourself, `tar xzf benchmark.tgz -C {root}`: the kit finds "
            f"{root}/benchmark_RELEASE/dataset/ as well."
        )
        raise DownloadError(
            _offline_message(
                "SBD",
                SBDataset.url,
                archive,
                SBDataset.md5,
                "about 1.4 GB",
                sources,
                SBD_TREE.format(root=root),
                error,
                alternative,
            )
        ) from error
    return sbd


def download(name: str, root: str | os.PathLike = "data") -> Path:
    """`download("voc" | "sbd", root)`: the dataset's folder, downloaded if not there yet."""
    if name == "voc":
        return download_voc(root)
    if name == "sbd":
        return download_sbd(root)
    raise ValueError(f"unknown dataset {name!r}; choose 'voc' or 'sbd'")
