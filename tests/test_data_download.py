"""Tests of `python -m deeplab_kit download`: the network is replaced by a failure in every test."""

from __future__ import annotations

import hashlib
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from torchvision.datasets import SBDataset
from torchvision.datasets.voc import DATASET_YEAR_DICT

from deeplab_kit.cli import main
from deeplab_kit.data.download import DownloadError, download_sbd, download_voc


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every URL open fails as on a machine without network (and none reaches the network)."""

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)


def _tar(archive: Path, files: dict[str, str], mode: str = "w") -> str:
    """Write a tar of small text files; return its md5."""
    source = archive.parent / "source"
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    with tarfile.open(archive, mode) as tar:
        for name in files:
            tar.add(source / name, arcname=name)
    return hashlib.md5(archive.read_bytes()).hexdigest()


def test_offline_voc_says_where_to_get_and_put_the_archive(tmp_path):
    with pytest.raises(DownloadError) as error:
        download_voc(tmp_path)
    message = str(error.value)
    assert "Name or service not known" in message  # the cause
    assert DATASET_YEAR_DICT["2012"]["md5"] in message
    assert "host.robots.ox.ac.uk" in message and "pjreddie.com" in message  # other sources
    assert str(tmp_path / "VOCtrainval_11-May-2012.tar") in message  # where to put it
    assert f"{tmp_path}/VOCdevkit/VOC2012/" in message and "SegmentationClass" in message
    assert "deeplab_kit synth" in message
    assert "does not match" not in message


def test_offline_sbd_says_where_to_get_and_put_the_archive(tmp_path):
    with pytest.raises(DownloadError) as error:
        download_sbd(tmp_path)
    message = str(error.value)
    assert SBDataset.md5 in message and "home.bharathh.info" in message
    assert str(tmp_path / "SBD" / "benchmark.tgz") in message
    assert f"{tmp_path}/benchmark_RELEASE/dataset/" in message and "cls/<id>.mat" in message


def test_a_wrong_archive_in_place_is_reported(tmp_path):
    (tmp_path / "VOCtrainval_11-May-2012.tar").write_bytes(b"half a download")
    with pytest.raises(DownloadError, match="its md5 does not match"):
        download_voc(tmp_path)


def test_cli_prints_the_message_and_exits_2(tmp_path, capsys):
    assert main(["download", "voc", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not get PASCAL VOC 2012") and "VOCdevkit/VOC2012" in err


def test_an_archive_put_in_place_is_extracted_without_the_network(tmp_path, monkeypatch, capsys):
    # The advice of the message, followed: the tar in root, checked against torchvision's md5
    # (here the md5 of a small stand-in tar), extracted, with no network at all.
    tree = {
        "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": "a\n",
        "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": "b\n",
    }
    md5 = _tar(tmp_path / "VOCtrainval_11-May-2012.tar", tree)
    monkeypatch.setitem(DATASET_YEAR_DICT["2012"], "md5", md5)
    assert main(["download", "voc", "--root", str(tmp_path)]) == 0
    assert (tmp_path / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text() == "b\n"
    assert "voc: ready in" in capsys.readouterr().out
    assert download_voc(tmp_path) == tmp_path / "VOCdevkit" / "VOC2012"  # present: a no-op


def test_sbd_archive_put_in_place_is_extracted_into_root_sbd(tmp_path, monkeypatch):
    (tmp_path / "SBD").mkdir()
    names = ("cls/x.mat", "img/x.jpg", "inst/x.mat", "train.txt", "val.txt")
    tree = {f"benchmark_RELEASE/dataset/{name}": "x\n" for name in names}
    md5 = _tar(tmp_path / "SBD" / "benchmark.tgz", tree, mode="w:gz")
    monkeypatch.setattr(SBDataset, "md5", md5)
    assert download_sbd(tmp_path) == tmp_path / "SBD"
    assert (tmp_path / "SBD" / "cls" / "x.mat").is_file()
    assert download_sbd(tmp_path) == tmp_path / "SBD"  # present: a no-op
