"""`python -m deeplab_kit download`: sources tried in order against a server on 127.0.0.1 (a dead
one, one with a wrong copy, a good one, a transfer that breaks and resumes); no test needs the
network."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import socket
import tarfile
import threading
from pathlib import Path

import pytest

from deeplab_kit.cli import main
from deeplab_kit.data import download as download_module
from deeplab_kit.data.download import ARCHIVES, DownloadError, download, fetch

VOC_TREE = {
    "VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt": "a\n",
    "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": "b\n",
    "VOCdevkit/VOC2012/JPEGImages/a.jpg": "x" * 5000,
}
SBD_TREE = {
    f"benchmark_RELEASE/dataset/{n}": "x\n" for n in ("cls/x.mat", "img/x.jpg", "train.txt")
}


def tar_bytes(tmp_path: Path, files: dict[str, str], mode: str = "w") -> bytes:
    archive = tmp_path / f"archive-{len(list(tmp_path.iterdir()))}.tar"
    with tarfile.open(archive, mode) as tar:
        for name, text in files.items():
            source = tmp_path / "source" / name
            source.parent.mkdir(parents=True, exist_ok=True)
            source.write_text(text)
            tar.add(source, arcname=name)
    return archive.read_bytes()


class Server:
    """Files served on 127.0.0.1 with range requests; `truncate[path] = n` ends the next
    transfer of `path` after n bytes. `ranges` records the Range header of every request."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files, self.truncate, self.ranges = files, {}, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(self.headers.get("Range", "bytes=0-")[6:].split("-")[0])
                server.ranges.append(self.headers.get("Range"))
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.truncate.pop(self.path, None)
                self.wfile.write(body[start:cut])

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def dead_url():
    """An address where nothing listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/VOCtrainval_11-May-2012.tar"


@pytest.fixture
def served(tmp_path):
    good, wrong = tar_bytes(tmp_path, VOC_TREE), tar_bytes(tmp_path, {"WRONG.txt": "never"})
    sbd = tar_bytes(tmp_path, SBD_TREE, mode="w:gz")
    server = Server({"/good.tar": good, "/wrong.tar": wrong, "/benchmark.tgz": sbd})
    yield server, {"voc": hashlib.md5(good).hexdigest(), "sbd": hashlib.md5(sbd).hexdigest()}
    server.httpd.shutdown()


def sources(monkeypatch, name: str, md5: str, *urls: str) -> None:
    archive = dataclasses.replace(ARCHIVES[name], md5=md5, urls=urls)
    monkeypatch.setitem(download_module.ARCHIVES, name, archive)


def test_the_third_source_gives_the_tree_after_a_dead_one_and_a_wrong_copy(
    tmp_path, served, dead_url, monkeypatch
):
    server, md5 = served
    sources(
        monkeypatch, "voc", md5["voc"], dead_url, server.url("/wrong.tar"), server.url("/good.tar")
    )
    root = tmp_path / "data"
    assert download("voc", root, progress=False) == root / "VOCdevkit" / "VOC2012"
    assert (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text() == "b\n"
    assert not (root / "WRONG.txt").exists()  # the wrong copy was never extracted
    assert download("voc", root, progress=False) == root / "VOCdevkit" / "VOC2012"  # a no-op now
    sources(monkeypatch, "sbd", md5["sbd"], dead_url, server.url("/benchmark.tgz"))
    assert download("sbd", root, progress=False) == root / "benchmark_RELEASE" / "dataset"


def test_with_every_source_dead_one_message_names_each_and_its_failure(
    tmp_path, served, dead_url, monkeypatch, capsys
):
    server, md5 = served
    sources(
        monkeypatch,
        "voc",
        md5["voc"],
        dead_url,
        server.url("/missing.tar"),
        server.url("/wrong.tar"),
    )
    with pytest.raises(DownloadError) as error:
        download("voc", tmp_path, progress=False)
    message = str(error.value)
    assert f"{dead_url}: unreachable" in message
    assert f"{server.url('/missing.tar')}: HTTP 404" in message
    assert f"{server.url('/wrong.tar')}: wrong MD5" in message
    assert str(tmp_path / "VOCtrainval_11-May-2012.tar") in message  # where to put a copy
    assert "VOCdevkit/VOC2012/" in message and "deeplab_kit synth" in message
    assert main(["download", "voc", "--root", str(tmp_path)]) == 2
    said = capsys.readouterr().err.splitlines()  # after the wrong copy's progress bar
    assert sum(line.startswith("error: could not get PASCAL VOC 2012") for line in said) == 1


def test_a_broken_transfer_resumes_where_it_stopped(tmp_path, served, monkeypatch):
    server, md5 = served
    sources(monkeypatch, "voc", md5["voc"], server.url("/good.tar"))
    size = len(server.files["/good.tar"])
    server.truncate["/good.tar"] = size // 2
    with pytest.raises(DownloadError, match=f"the transfer ended at {size // 2} of {size} bytes"):
        fetch(download_module.ARCHIVES["voc"], tmp_path, progress=False)
    assert (tmp_path / "VOCtrainval_11-May-2012.tar.part").stat().st_size == size // 2
    assert download("voc", tmp_path, progress=False).is_dir()
    assert server.ranges == [None, f"bytes={size // 2}-"]  # the second asked for the rest only


def test_an_archive_put_in_place_needs_no_network(tmp_path, served, dead_url, monkeypatch):
    server, md5 = served
    (tmp_path / "VOCtrainval_11-May-2012.tar").write_bytes(server.files["/good.tar"])
    sources(monkeypatch, "voc", md5["voc"], dead_url)
    assert download("voc", tmp_path, progress=False) == tmp_path / "VOCdevkit" / "VOC2012"
