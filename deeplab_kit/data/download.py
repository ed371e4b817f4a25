"""Download PASCAL VOC 2012 and SBD from the first source that works, each copy verified by its
MD5 before anything is extracted.

    python -m deeplab_kit download voc --root data      # -> data/VOCdevkit/VOC2012
    python -m deeplab_kit download sbd --root data      # -> data/benchmark_RELEASE/dataset

VOC's host has been down or blocked for long spells (pytorch/vision#9269, #9271; a pull request to
add a mirror there was closed, #9335), and SBD lives on one page. Every copy with the right MD5 is
as good as the official one, so each archive has a list of sources (`ARCHIVES`: the official one
first, then mirrors that public trackers and courses use), tried in order: a transfer that breaks
resumes from where it stopped when the same source is asked again (an HTTP range request); a copy
whose MD5 is wrong is deleted, never extracted, and the next source is tried. When every source
fails, the message lists each with its failure, and says where to put an archive got another way:
an archive already in the download folder with the right MD5 is extracted without downloading.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.utils import extract_archive
from tqdm.auto import tqdm

from deeplab_kit.data.voc import sbd_folder, voc_ready

__all__ = ["ARCHIVES", "Archive", "DownloadError", "download", "fetch"]


@dataclass(frozen=True)
class Archive:
    """A dataset archive: its file name, MD5, size, the sources that serve it and what it holds."""

    name: str
    filename: str
    md5: str
    size: str
    urls: tuple[str, ...]
    tree: str


ARCHIVES = {
    "voc": Archive(
        "PASCAL VOC 2012",
        "VOCtrainval_11-May-2012.tar",
        "6cd6e144f989b92b3379bac3b3de84fd",  # torchvision's DATASET_YEAR_DICT["2012"]
        "about 2 GB",
        (
            "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar",
            # d2l's copy on AWS S3, the mirror pytorch/vision#9335 tested and proposed
            "http://d2l-data.s3-accelerate.amazonaws.com/VOCtrainval_11-May-2012.tar",
            # the long-standing mirror of YOLO's author (ssd.pytorch#516; reported dead in 2025)
            "https://pjreddie.com/media/files/VOCtrainval_11-May-2012.tar",
        ),
        """\
{root}/VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg                  17,125 images
    SegmentationClass/<id>.png           2,913 palette PNG masks (255 = void)
    ImageSets/Segmentation/train.txt     1,464 ids
    ImageSets/Segmentation/val.txt       1,449 ids
    ImageSets/Segmentation/trainval.txt  2,913 ids""",
    ),
    "sbd": Archive(
        "SBD",
        "benchmark.tgz",
        "82b4d87ceb2ed10f6038a1cba92111cb",  # torchvision's SBDataset.md5
        "about 1.4 GB",
        (
            "http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
            "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours/benchmark.tgz",
        ),
        """\
{root}/benchmark_RELEASE/dataset/        (or {root}/SBD/)
    cls/<id>.mat                         11,355 label files
    img/<id>.jpg                         11,355 images
    train.txt                            8,498 ids
    val.txt                              2,857 ids""",
    ),
}
CHUNK = 1 << 20
TIMEOUT = 60  # seconds a connection may stay silent


class DownloadError(RuntimeError):
    """No source gave a verified archive; the message says what each did and what to do."""


def download(name: str, root: str | os.PathLike = "data", *, progress: bool = True) -> Path:
    """`download("voc" | "sbd", root)`: the dataset's folder under `root`, downloaded and
    extracted if it is not there yet."""
    if name not in ARCHIVES:
        raise ValueError(f"unknown dataset {name!r}; choose 'voc' or 'sbd'")
    root = Path(root)
    found = _ready(name, root)
    if found is not None:
        return found
    archive = fetch(ARCHIVES[name], root, progress=progress)
    extract_archive(str(archive), str(root))
    return _ready(name, root) or root


def _ready(name: str, root: Path) -> Path | None:
    if name == "voc":
        return root / "VOCdevkit" / "VOC2012" if voc_ready(root) else None
    return sbd_folder(root)


def fetch(archive: Archive, folder: Path, *, progress: bool = True) -> Path:
    """`folder/archive.filename` with the right MD5: the one already there, or the first source's
    copy that verifies. Raises DownloadError listing each source and its failure."""
    target = Path(folder) / archive.filename
    if target.is_file() and md5(target) == archive.md5:
        return target
    failures = []
    for url in archive.urls:
        try:
            part = _transfer(url, target, progress)
        except (urllib.error.URLError, OSError, ValueError) as error:
            failures.append((url, _reason(error)))
            continue
        got = md5(part)
        if got == archive.md5:
            return part.replace(target)
        part.unlink()  # a wrong copy is never extracted and never resumed
        failures.append((url, f"wrong MD5 {got}"))
    raise DownloadError(_message(archive, target, failures))


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _transfer(url: str, target: Path, progress: bool) -> Path:
    """Download `url` to `target.part`, resuming a partial copy of the same source (its URL
    is kept beside it) where the server honours a range request; returns the finished file."""
    part = target.with_name(target.name + ".part")
    source = target.with_name(target.name + ".source")
    target.parent.mkdir(parents=True, exist_ok=True)
    resumable = part.is_file() and source.is_file() and source.read_text() == url
    have = part.stat().st_size if resumable else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        if response.status != 206:  # the whole file: start over
            have = 0
        total = have + int(response.headers.get("Content-Length") or 0)
        source.write_text(url)
        bar = tqdm(
            total=total or None,
            initial=have,
            unit="B",
            unit_scale=True,
            disable=not progress,
            desc=target.name,
        )
        with open(part, "ab" if have else "wb") as file, bar:
            while chunk := response.read(CHUNK):
                file.write(chunk)
                bar.update(len(chunk))
    if total and part.stat().st_size != total:
        raise ValueError(f"the transfer ended at {part.stat().st_size} of {total} bytes")
    source.unlink(missing_ok=True)
    return part


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"unreachable ({error.reason})"
    return f"{type(error).__name__}: {error}"


def _message(archive: Archive, target: Path, failures: list[tuple[str, str]]) -> str:
    tried = [f"  - {url}: {reason}" for url, reason in failures]
    return "\n".join(
        [
            f"could not get {archive.name}: no source gave a copy with the right MD5. Tried:",
            *tried,
            "",
            f"Get the archive {archive.filename} ({archive.size}, md5 {archive.md5}) another way",
            "(a colleague, a course drive, a dataset hub: any copy with that md5), put it here",
            "and run this command again; it is checked and extracted without downloading:",
            f"  {target}",
            "",
            "Expected tree afterwards:",
            archive.tree.format(root=target.parent),
            "",
            "No data at hand? `python -m deeplab_kit synth --out data/synthetic` generates a small",
            "VOC-format dataset, and `python -m deeplab_kit demo` trains on one. See data/README.md.",
        ]
    )
