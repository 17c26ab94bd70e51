"""Downloader against a local HTTP server (loopback only) that honours Range requests."""

import hashlib
import http.server
import io
import os
import threading
import zipfile

import pytest

from tiepoint.errors import DatasetError
from tiepoint.evaluation.download import Resource, download_file, fetch_dataset

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


def make_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("myset/pairs.txt", "a.png b.png\n")
        z.writestr("myset/a.png", b"x")
    return buf.getvalue()


def make_flat_zip() -> bytes:  # no top-level folder
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pairs.txt", "c.png d.png\n")
        z.writestr("sub/c.png", b"y")
    return buf.getvalue()


FILES = {"/data.bin": PAYLOAD, "/myset.zip": make_zip(), "/flat.zip": make_flat_zip()}


class Handler(http.server.BaseHTTPRequestHandler):
    log = []

    def do_GET(self):
        body = FILES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        rng = self.headers.get("Range")
        Handler.log.append((self.path, rng))
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_download_verifies_and_renames(server, tmp_path):
    dest = download_file(
        f"{server}/data.bin", tmp_path / "d.bin", len(PAYLOAD), sha(PAYLOAD), progress=False
    )
    assert dest.read_bytes() == PAYLOAD and not (tmp_path / "d.bin.part").exists()


def test_download_resumes_with_range(server, tmp_path):
    (tmp_path / "d.bin.part").write_bytes(PAYLOAD[:30000])
    Handler.log.clear()
    download_file(
        f"{server}/data.bin", tmp_path / "d.bin", len(PAYLOAD), sha(PAYLOAD), progress=False
    )
    assert Handler.log == [("/data.bin", "bytes=30000-")]
    assert (tmp_path / "d.bin").read_bytes() == PAYLOAD


def test_download_checksum_mismatch(server, tmp_path):
    with pytest.raises(DatasetError, match="sha256 .* does not match"):
        download_file(f"{server}/data.bin", tmp_path / "d.bin", None, "0" * 64, progress=False)
    assert not (tmp_path / "d.bin").exists() and not (tmp_path / "d.bin.part").exists()
    with pytest.raises(DatasetError, match="got 102400 bytes, expected 5; the file was removed"):
        download_file(f"{server}/data.bin", tmp_path / "e.bin", 5, None, progress=False)
    assert not (tmp_path / "e.bin").exists() and not (tmp_path / "e.bin.part").exists()


def test_fetch_dataset_extracts_atomically(server, tmp_path):
    body = FILES["/myset.zip"]
    res = Resource(f"{server}/myset.zip", "myset.zip", "myset", size=len(body), sha256=sha(body))
    target = fetch_dataset(res, tmp_path, progress=False)
    assert (target / "pairs.txt").read_text() == "a.png b.png\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myset"]  # no archive or temp left


def test_archive_without_top_folder_becomes_the_folder(server, tmp_path):
    body = FILES["/flat.zip"]
    res = Resource(f"{server}/flat.zip", "flat.zip", "flat", size=len(body), sha256=sha(body))
    target = fetch_dataset(res, tmp_path, progress=False)
    assert (target / "pairs.txt").read_text() == "c.png d.png\n"
    assert (target / "sub" / "c.png").read_bytes() == b"y"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # not the 0700 of a temp folder


def test_unreachable_and_manual_say_where_to_put_files(server, tmp_path):
    res = Resource(f"{server}/missing.zip", "m.zip", "mset")
    with pytest.raises(
        DatasetError, match=r"could not download .*extract it so that .*mset exists"
    ):
        fetch_dataset(res, tmp_path, progress=False)
    manual = Resource(None, "z.zip", "zeb", instructions="ask the authors")
    with pytest.raises(DatasetError, match=r"cannot be downloaded automatically: ask the authors"):
        fetch_dataset(manual, tmp_path, progress=False)
