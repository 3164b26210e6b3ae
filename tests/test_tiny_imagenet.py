"""The Tiny-ImageNet download: a local HTTP server serves a small zip in the official layout.

The expected size and md5 of the official archive are swapped for those of the small zip by
the ``served`` fixture only (monkeypatch); the tests then check what is unpacked, that a file
with the wrong hash or size, or a transfer cut short, leaves nothing behind, and what an
offline user is told.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import pytest
from conftest import write_tiny_layout

from analysis_utils import probes, tiny_imagenet
from analysis_utils.__main__ import main
from analysis_utils.errors import AnalysisUtilsError

pytestmark = pytest.mark.usefixtures("isolated_cache")

TRAIN_PER_WNID = 2


def official_layout_zip(folder: Path) -> tuple[bytes, set[str]]:
    """A small zip laid out as the official one, and the members the probe and trainer need.

    8 wnids (so 4 probe categories) x 3 val images, 2 training images and a boxes file per
    wnid, and a test image: everything the official archive has, so that the test can see
    what is left out.
    """
    root = write_tiny_layout(folder) / "tiny-imagenet-200"
    wnids = (root / "wnids.txt").read_text().split()
    probe_wnids = set(sorted(wnids)[::2])
    val_image = (root / "val/images/val_0.JPEG").read_bytes()
    buffer = io.BytesIO()
    needed = {"wnids.txt", "words.txt", "val/val_annotations.txt"}
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-imagenet-200/", "")
        for path in sorted(root.rglob("*")):
            if path.is_file():
                archive.write(path, f"tiny-imagenet-200/{path.relative_to(root)}")
        for line in (root / "val/val_annotations.txt").read_text().splitlines():
            name, wnid = line.split("\t")[:2]
            if wnid in probe_wnids:
                needed.add(f"val/images/{name}")
        for wnid in wnids:
            archive.writestr(f"tiny-imagenet-200/train/{wnid}/{wnid}_boxes.txt", "0\t0\t9\t9\n")
            archive.writestr(f"tiny-imagenet-200/train/{wnid}/images/", "")
            for i in range(TRAIN_PER_WNID):
                member = f"train/{wnid}/images/{wnid}_{i}.JPEG"
                archive.writestr(f"tiny-imagenet-200/{member}", val_image)
                if wnid in probe_wnids:
                    needed.add(member)
        archive.writestr("tiny-imagenet-200/test/images/test_0.JPEG", val_image)
    return buffer.getvalue(), needed


class _Server:
    """A thread serving ``body`` at ``/full``, ``/cut`` (the connection closes halfway, after a
    Content-Length of the whole file) and ``/cut-no-length`` (the same without a length)."""

    def __init__(self, body: bytes):
        self.body = body
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server name)
                server.requests.append(self.path)
                if self.path not in ("/full", "/cut", "/cut-no-length"):
                    self.send_error(404)
                    return
                body = server.body if self.path == "/full" else server.body[:len(server.body) // 2]
                self.send_response(200)
                if self.path != "/cut-no-length":
                    self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """The small zip on a local server, its size and md5 swapped in, the URL set to it."""
    body, needed = official_layout_zip(tmp_path / "source")
    server = _Server(body)
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_BYTES", len(body))
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_MD5", hashlib.md5(body).hexdigest())
    monkeypatch.setenv(tiny_imagenet.URL_VARIABLE, f"{server.url}/full")
    monkeypatch.delenv("ANALYSIS_UTILS_DATA", raising=False)
    server.needed = needed
    yield server
    server.close()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_the_official_archive_is_pinned_and_only_the_url_can_change(monkeypatch):
    assert tiny_imagenet.ARCHIVE_MD5 == "90528d7ca1a48142e341f4ef8d21d0de"
    assert tiny_imagenet.ARCHIVE_BYTES == 248_100_043
    monkeypatch.delenv(tiny_imagenet.URL_VARIABLE, raising=False)
    assert tiny_imagenet.archive_url() == "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    monkeypatch.setenv(tiny_imagenet.URL_VARIABLE, "http://mirror.example/t.zip")
    assert tiny_imagenet.archive_url() == "http://mirror.example/t.zip"


def test_download_unpacks_only_what_the_probe_and_training_read(served, tmp_path):
    dest = tmp_path / "dest"
    folder = tiny_imagenet.download(dest)
    assert folder == dest / "tiny-imagenet-200"
    assert _files(folder) == served.needed  # no test/, no boxes, no other categories
    assert sorted(p.name for p in dest.iterdir()) == ["tiny-imagenet-200", "tiny-imagenet-200.zip"]
    wnids = (folder / "wnids.txt").read_text().split()
    assert len(wnids) == 8  # the whole list: the probe takes sorted(wnids)[::2] of it
    train = {p.parent.parent.name for p in (folder / "train").rglob("*.JPEG")}
    assert train == set(sorted(wnids)[::2])
    probe = probes.load("tiny", data_dir=dest, images_per_category=3)
    assert len(probe) == 12 and list(probe.category_ids) == sorted(wnids)[::2]
    assert served.requests == ["/full"]

    tiny_imagenet.download(dest)  # there already: nothing is fetched
    import shutil

    shutil.rmtree(folder)
    tiny_imagenet.download(dest)  # unpacked again from the checked archive, not fetched
    assert _files(folder) == served.needed and served.requests == ["/full"]


def test_the_probe_downloads_into_the_user_cache_with_a_message(served, tmp_path, capfd):
    probe = probes.load("tiny", images_per_category=2)
    cache = tmp_path / "user-cache/analysis_utils/data"
    assert probe.source == cache / "tiny-imagenet-200" and len(probe) == 8
    err = capfd.readouterr().err
    assert "Downloading Tiny-ImageNet" in err and f"{served.url}/full" in err and str(cache) in err
    probes.load("tiny", images_per_category=2)
    assert served.requests == ["/full"]


def test_a_named_folder_without_data_is_not_filled_by_a_download(served, tmp_path, monkeypatch):
    monkeypatch.setenv("ANALYSIS_UTILS_DATA", str(tmp_path / "empty"))
    with pytest.raises(AnalysisUtilsError, match="from ANALYSIS_UTILS_DATA.*download tiny-"):
        probes.load("tiny")
    assert served.requests == []


def test_a_wrong_md5_is_deleted_with_one_sentence(served, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_MD5", "0" * 32)
    dest = tmp_path / "dest"
    with pytest.raises(AnalysisUtilsError, match=r"does not have the official md5 0{32}, so "
                                                 r"it was deleted; .*TINY_IMAGENET_URL"):
        tiny_imagenet.download(dest)
    assert _files(dest) == set()


def test_a_wrong_size_is_deleted_with_one_sentence(served, tmp_path, monkeypatch):
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_BYTES", tiny_imagenet.ARCHIVE_BYTES + 1)
    dest = tmp_path / "dest"
    with pytest.raises(AnalysisUtilsError, match=r"has [\d,]+ bytes, not the official [\d,]+, so "
                                                 "it was deleted"):
        tiny_imagenet.download(dest)
    assert _files(dest) == set()


@pytest.mark.parametrize("path, message", [
    ("/cut", r"The download from .*/cut broke off \(.*\), so nothing was kept"),  # with a length
    ("/cut-no-length", r"has [\d,]+ bytes, not the official"),  # no length: the size check
])
def test_an_interrupted_transfer_leaves_nothing(served, tmp_path, monkeypatch, path, message):
    monkeypatch.setenv(tiny_imagenet.URL_VARIABLE, f"{served.url}{path}")
    dest = tmp_path / "dest"
    with pytest.raises(AnalysisUtilsError, match=message):
        tiny_imagenet.download(dest)
    assert served.requests == [path] and _files(dest) == set()


def test_offline_says_in_one_sentence_where_to_put_the_data(tmp_path, monkeypatch):
    with socket.socket() as probe_socket:  # a port nothing listens on
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    monkeypatch.setenv(tiny_imagenet.URL_VARIABLE, f"http://127.0.0.1:{port}/t.zip")
    monkeypatch.delenv("ANALYSIS_UTILS_DATA", raising=False)
    with pytest.raises(AnalysisUtilsError) as info:
        probes.load("tiny")
    message = str(info.value)
    cache = tmp_path / "user-cache/analysis_utils/data"
    assert message.startswith(f"Could not download http://127.0.0.1:{port}/t.zip (")
    assert "without internet, put the official tiny-imagenet-200/ folder" in message
    assert f"in {cache}, or point data_dir / ANALYSIS_UTILS_DATA" in message
    assert "\n" not in message and message.endswith(".")
    assert not cache.exists() or _files(cache) == set()


def test_a_damaged_cached_archive_is_deleted_and_fetched_again(served, tmp_path, capfd):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "tiny-imagenet-200.zip").write_bytes(b"not the archive")
    folder = tiny_imagenet.download(dest)
    assert _files(folder) == served.needed and served.requests == ["/full"]
    assert "has 15 bytes, not the official" in capfd.readouterr().err


def test_an_archive_in_another_layout_is_refused(served, tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "../../etc\n")
    served.body = buffer.getvalue()
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_BYTES", len(served.body))
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_MD5", hashlib.md5(served.body).hexdigest())
    dest = tmp_path / "dest"
    with pytest.raises(AnalysisUtilsError, match=r"wnids.txt lists '\.\./\.\./etc', not wnids"):
        tiny_imagenet.download(dest)
    assert not (dest / "tiny-imagenet-200").exists()
    assert [p.name for p in dest.iterdir()] == ["tiny-imagenet-200.zip"]


def test_the_command_line_downloads_and_reports_errors(served, tmp_path, monkeypatch, capsys):
    dest = tmp_path / "dest"
    assert main(["download", "tiny-imagenet", "--dest", str(dest)]) == 0
    assert f"Tiny-ImageNet is in {dest / 'tiny-imagenet-200'}" in capsys.readouterr().out
    monkeypatch.setattr(tiny_imagenet, "ARCHIVE_MD5", "0" * 32)
    assert main(["download", "tiny-imagenet", "--dest", str(tmp_path / "other")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: The file downloaded from") and "md5" in err[-1]
