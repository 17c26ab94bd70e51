"""Part files survive kills; merged h5 files follow hloc's layout (read back with plain h5py)."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tiepoint import Features, MatchResult
from tiepoint.errors import ConfigError, DatasetError
from tiepoint.reconstruction import features_io as fio
from tiepoint.reconstruction import records


def _arrays(seed, n=5):
    rng = np.random.default_rng(seed)
    return {
        "keypoints": rng.random((n, 2), np.float32),
        "descriptors": rng.random((8, n), np.float32),
    }


def test_torn_tail_is_cut_and_earlier_records_survive(tmp_path):
    path = tmp_path / "w0.log"
    with records.PartWriter(path) as w:
        for i in range(3):
            w.append(f"img{i}", _arrays(i))
    size = path.stat().st_size
    # a kill in the middle of the 4th record leaves part of it on disk
    half = records.encode("img3", _arrays(3))
    with open(path, "ab") as f:
        f.write(half[: len(half) // 2])
    index, end = records.scan(path)
    assert sorted(index) == ["img0", "img1", "img2"] and end == size
    with records.PartWriter(path) as w:  # the owner reopens: tail truncated, appending works
        assert w.names == {"img0", "img1", "img2"}
        assert path.stat().st_size == size
        w.append("img3", _arrays(3))
    got = dict(records.iter_records(path))
    assert sorted(got) == ["img0", "img1", "img2", "img3"]
    np.testing.assert_array_equal(got["img1"]["descriptors"], _arrays(1)["descriptors"])


def test_corrupt_byte_stops_the_scan_at_that_record(tmp_path):
    path = tmp_path / "w0.log"
    with records.PartWriter(path) as w:
        for i in range(3):
            w.append(f"img{i}", _arrays(i))
    index, _ = records.scan(path)
    off, n = index["img1"]
    data = bytearray(path.read_bytes())
    data[off + n // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert sorted(records.scan(path)[0]) == ["img0"]


def test_second_writer_is_refused(tmp_path):
    path = tmp_path / "w0.log"
    with records.PartWriter(path):
        with pytest.raises(DatasetError, match="another process"):
            records.PartWriter(path)
        assert records.try_lock(path) is None


def _features(n, seed, d=16):
    rng = np.random.default_rng(seed)
    return Features(
        keypoints=(rng.random((n, 2)) * [640, 480]).astype(np.float32),
        keypoint_scores=rng.random(n).astype(np.float32),
        descriptors=rng.normal(size=(n, d)).astype(np.float32),
        image_size=(640, 480),
        extra={"scales": rng.random(n).astype(np.float32)},
    )


def test_merged_files_follow_hloc_layout(tmp_path):
    names = ["a.jpg", "sub/b.jpg"]
    feats = {n: _features(7 + i, i) for i, n in enumerate(names)}
    ident = {"extractor": {"name": "test"}}
    with records.PartWriter(tmp_path / "parts" / "f.w0.log") as w:
        for n, f in feats.items():
            w.append(n, fio.features_to_arrays(f))
    added = fio.merge_parts(
        tmp_path / "features.h5", [tmp_path / "parts" / "f.w0.log"], ident, "keypoints"
    )
    assert added == 2 and not (tmp_path / "parts").exists()

    m = np.array([[0, 3], [2, 1], [5, 6]])
    result = MatchResult(
        feats["a.jpg"].keypoints,
        feats["sub/b.jpg"].keypoints,
        m,
        np.array([0.9, 0.5, 0.7], np.float32),
        (640, 480),
        (640, 480),
    )
    with records.PartWriter(tmp_path / "m.w0.log") as w:
        w.append(fio.names_to_pair("a.jpg", "sub/b.jpg"), fio.match_to_arrays(result, 7))
    fio.merge_parts(tmp_path / "matches.h5", [tmp_path / "m.w0.log"], ident, "matches0")

    # read back exactly as hloc's readers do: nested groups, (D,N) descriptors, dense matches0
    with h5py.File(tmp_path / "features.h5") as f:
        assert isinstance(f["sub"], h5py.Group) and "b.jpg" in f["sub"]
        g = f["sub/b.jpg"]
        np.testing.assert_array_equal(g["keypoints"][()], feats["sub/b.jpg"].keypoints)
        np.testing.assert_array_equal(g["descriptors"][()], feats["sub/b.jpg"].descriptors.T)
        assert g["descriptors"].shape == (16, 8)
        np.testing.assert_array_equal(g["image_size"][()], [640, 480])
        assert "scores" in g and "scales" in g
    with h5py.File(tmp_path / "matches.h5") as f:
        g = f["a.jpg"]["sub-b.jpg"]
        m0 = g["matches0"][()]
        assert m0.shape == (7,) and (m0 == -1).sum() == 4
        np.testing.assert_array_equal(np.where(m0 > -1)[0], [0, 2, 5])
        np.testing.assert_array_equal(m0[[0, 2, 5]], [3, 1, 6])
        np.testing.assert_allclose(g["matching_scores0"][()][[0, 2, 5]], [0.9, 0.5, 0.7])
    # our own readers: both orders, and the Features dataclass round trip
    mm, _ = fio.read_matches(tmp_path / "matches.h5", "sub/b.jpg", "a.jpg")
    np.testing.assert_array_equal(mm, m[:, ::-1])
    store = fio.FeatureStore(tmp_path / "features.h5")
    back = fio.arrays_to_features(store.arrays("sub/b.jpg"))
    np.testing.assert_array_equal(back.descriptors, feats["sub/b.jpg"].descriptors)
    np.testing.assert_array_equal(back.extra["scales"], feats["sub/b.jpg"].extra["scales"])
    assert back.image_size == (640, 480)
    store.close()


def test_merge_refuses_another_configuration_and_skips_locked_parts(tmp_path):
    part = tmp_path / "f.w0.log"
    with records.PartWriter(part) as w:
        w.append("a.jpg", fio.features_to_arrays(_features(3, 0)))
    fio.merge_parts(tmp_path / "features.h5", [part], {"extractor": "x"}, "keypoints")
    with records.PartWriter(part) as w:
        w.append("b.jpg", fio.features_to_arrays(_features(3, 1)))
    with pytest.raises(ConfigError, match="another configuration"):
        fio.merge_parts(tmp_path / "features.h5", [part], {"extractor": "y"}, "keypoints")
    with records.PartWriter(part) as w:  # still being written: left alone
        assert (
            fio.merge_parts(tmp_path / "features.h5", [part], {"extractor": "x"}, "keypoints") == 0
        )
        assert part.exists()
    assert fio.merge_parts(tmp_path / "features.h5", [part], {"extractor": "x"}, "keypoints") == 1
    assert fio.list_h5_names(tmp_path / "features.h5", "keypoints") == {"a.jpg", "b.jpg"}
    assert oct(os.stat(tmp_path / "features.h5").st_mode & 0o777) != oct(0o600)


def test_part_files_lock_and_merge_without_fcntl(tmp_path):
    """Windows has no fcntl: importing the package, writing, try-locking and merging part files
    must work with it unimportable, with the same 'held by a writer' answers."""
    script = tmp_path / "parts.py"
    script.write_text(
        "import sys; sys.modules['fcntl'] = None  # as on Windows: `import fcntl` fails\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "import tiepoint.reconstruction.pipeline\n"
        "from tiepoint.errors import DatasetError\n"
        "from tiepoint.reconstruction import features_io as fio, records\n"
        f"root = Path(r'{tmp_path}')\n"
        "part = root / 'parts' / 'f.w0.log'\n"
        "kp = np.arange(6, dtype=np.float32).reshape(3, 2)\n"
        "with records.PartWriter(part) as w:\n"
        "    w.append('a.jpg', {'keypoints': kp})\n"
        "    assert records.try_lock(part) is None\n"
        "    try:\n"
        "        records.PartWriter(part)\n"
        "        raise SystemExit('second writer accepted')\n"
        "    except DatasetError:\n"
        "        pass\n"
        "assert fio.merge_parts(root / 'f.h5', [part], {'x': 1}, 'keypoints') == 1\n"
        "assert sys.modules['fcntl'] is None\n"
        "print(sorted(p.name for p in root.rglob('*') if p.is_file()))\n"
    )
    src = str(Path(records.__file__).resolve().parents[2])
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={"PYTHONPATH": src}
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['f.h5', 'parts.py']"  # part and lock files gone
    with h5py.File(tmp_path / "f.h5") as f:
        np.testing.assert_array_equal(f["a.jpg/keypoints"][()], np.arange(6).reshape(3, 2))
