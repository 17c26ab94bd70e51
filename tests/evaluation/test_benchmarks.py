"""Each loader on a tiny fixture written in the dataset's exact format, plus bad inputs."""

import numpy as np
import pytest
from PIL import Image

from tiepoint.errors import ConfigError, DatasetError
from tiepoint.evaluation.benchmarks import get_benchmark

from .fixtures import fmt, save, texture, write_pairs_dataset


def tiny(path, w=64, h=48):
    return save(path, texture(w, h))


# ---------------------------------------------------------------- pairs
def test_pairs_reads_both_manifests(tmp_path):
    gt = write_pairs_dataset(tmp_path, n_h=2, n_pose=2)
    pairs = get_benchmark("pairs", {"root": str(tmp_path)}).load_pairs()
    assert [p.task for p in pairs] == ["homography"] * 2 + ["relative_pose"] * 2
    assert np.allclose(pairs[1].H_0to1, gt["H"][1])
    assert pairs[0].group == "seq0" and pairs[0].image1 == tmp_path / "homography/seq0/b.png"
    K, R, t = gt["pose"][1]
    p = pairs[3]
    assert (
        np.allclose(p.K0, K)
        and np.allclose(p.T_0to1[:3, :3], R)
        and np.allclose(p.T_0to1[:3, 3], t)
    )
    only_h = get_benchmark("pairs", {"root": str(tmp_path), "tasks": ["homography"]}).load_pairs()
    assert len(only_h) == 2


def test_pairs_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'}.*not found"):
        get_benchmark("pairs", {"root": str(tmp_path / "nope")}).load_pairs()


def test_pairs_without_root_uses_only_tiepoint_data(tmp_path, monkeypatch):
    """No data.root: $TIEPOINT_DATA/pairs or a one-line error, never a folder outside the
    working directory such as ../shared/data (even when one is there)."""
    work = tmp_path / "work"
    work.mkdir()
    write_pairs_dataset(tmp_path / "shared" / "data", n_h=1, n_pose=1)
    monkeypatch.chdir(work)
    monkeypatch.delenv("TIEPOINT_DATA", raising=False)
    with pytest.raises(DatasetError) as e:
        get_benchmark("pairs").load_pairs()
    msg = str(e.value)
    assert "\n" not in msg and "pass --data-root DIR" in msg and "homography/pairs.txt" in msg
    monkeypatch.setenv("TIEPOINT_DATA", str(tmp_path / "env"))
    write_pairs_dataset(tmp_path / "env" / "pairs", n_h=2, n_pose=0)
    pairs = get_benchmark("pairs").load_pairs()
    assert [p.image0.parent.parent.parent for p in pairs] == [tmp_path / "env" / "pairs"] * 2


def test_pairs_malformed_line_names_file_and_line(tmp_path):
    write_pairs_dataset(tmp_path, n_h=2, n_pose=1)
    path = tmp_path / "homography" / "pairs.txt"
    lines = path.read_text().splitlines()
    lines[2] = " ".join(lines[2].split()[:8])  # line 3: a truncated H
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:3: expected 11 fields, got 8"):
        get_benchmark("pairs", {"root": str(tmp_path)}).load_pairs()
    lines[2] = lines[1].replace("1.0", "one", 1)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:3: 'one' in H is not a number"):
        get_benchmark("pairs", {"root": str(tmp_path)}).load_pairs()


def test_pairs_missing_image_names_pair(tmp_path):
    write_pairs_dataset(tmp_path, n_h=1, n_pose=1)
    (tmp_path / "pose" / "scene" / "0_1.png").unlink()
    with pytest.raises(
        DatasetError, match=r"pose/pairs.txt:1: image .*0_1.png of pair .* not found"
    ):
        get_benchmark("pairs", {"root": str(tmp_path)}).load_pairs()


def test_pairs_bad_values(tmp_path):
    (tmp_path / "pose").mkdir()
    tiny(tmp_path / "pose" / "a.png")
    tiny(tmp_path / "pose" / "b.png")
    bad_R = np.eye(3) * 2
    (tmp_path / "pose" / "pairs.txt").write_text(
        f"a.png b.png 100 100 32 24 100 100 32 24 {fmt(bad_R)} 1 0 0\n"
    )
    with pytest.raises(DatasetError, match="pairs.txt:1: T_0to1 rotation block"):
        get_benchmark("pairs", {"root": str(tmp_path)}).load_pairs()
    with pytest.raises(ConfigError, match="unknown config key"):
        get_benchmark("pairs", {"root": str(tmp_path), "resise": 3})


# ---------------------------------------------------------------- HPatches
def write_hpatches(root, seqs=("i_ajuntament", "v_graffiti", "v_talent")):
    Hs = {}
    for s in seqs:
        for k in range(1, 7):
            p = root / s / f"{k}.ppm"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(texture(96, 64, seed=k)).save(p)  # PPM, like the release
        for k in range(2, 7):
            H = np.array([[1.0, 0, k], [0, 1.0, 2.0 * k], [1e-5 * k, 0, 1.0]])
            # the release writes rows with irregular spacing and a trailing newline
            (root / s / f"H_1_{k}").write_text(
                "\n".join("  ".join(f"{x:.8e}" for x in r) + " " for r in H) + "\n"
            )
            Hs[(s, k)] = H
    return Hs


def test_hpatches_pairs_exclude_large_sequences(tmp_path):
    root = tmp_path / "hpatches-sequences-release"
    Hs = write_hpatches(root)
    b = get_benchmark("hpatches", {"root": str(root)})
    pairs = b.load_pairs()
    assert len(pairs) == 10  # v_talent is one of the 8 large sequences
    assert all("v_talent" not in p.name for p in pairs)
    p = pairs[7]
    assert p.name == "v_graffiti/1-4" and p.image0.name == "1.ppm" and p.image1.name == "4.ppm"
    assert np.allclose(p.H_0to1, Hs[("v_graffiti", 4)])
    assert len(get_benchmark("hpatches", {"root": str(root), "subset": "i"}).load_pairs()) == 5
    assert (
        len(
            get_benchmark(
                "hpatches", {"root": str(root), "ignore_large_sequences": False}
            ).load_pairs()
        )
        == 15
    )
    # 480 px on the short side: a 96x64 image is scaled by 7.5
    assert np.allclose(b.scale((96, 64)), [7.5, 7.5])


def test_hpatches_errors(tmp_path):
    with pytest.raises(DatasetError, match="tiepoint download hpatches"):
        get_benchmark("hpatches", {"root": str(tmp_path / "missing")}).load_pairs()
    root = tmp_path / "hp"
    write_hpatches(root, seqs=("v_bird",))
    (root / "v_bird" / "H_1_3").write_text("1 0 0\n0 1 0\n")
    with pytest.raises(DatasetError, match="H_1_3: expected 3 rows of 3 numbers"):
        get_benchmark("hpatches", {"root": str(root)}).load_pairs()


# ---------------------------------------------------------------- MegaDepth-1500
def test_megadepth1500_views_and_pairs(tmp_path):
    root = tmp_path / "megadepth1500"
    rng = np.random.default_rng(0)
    poses = {}
    lines = []
    for _i, name in enumerate(["0015_a.jpg", "0015_b.jpg", "0022_c.jpg"]):
        tiny(root / "images" / name)
        R = np.linalg.qr(rng.normal(size=(3, 3)))[0]
        R *= np.sign(np.linalg.det(R))
        t = rng.normal(size=3)
        poses[name] = (R, t)
        lines.append(f"{name} {fmt(R)} {fmt(t)} PINHOLE 64 48 50.0 51.0 32.0 24.0")
    (root / "views.txt").write_text("\n".join(lines) + "\n")
    (root / "pairs.txt").write_text("0015_a.jpg 0015_b.jpg\n0015_b.jpg 0022_c.jpg\n")
    pairs = get_benchmark("megadepth1500", {"root": str(root)}).load_pairs()
    assert len(pairs) == 2
    (R0, t0), (R1, t1) = poses["0015_b.jpg"], poses["0022_c.jpg"]
    T = pairs[1].T_0to1
    # X1 = R1 (R0ᵀ (X0 − t0)) + t1
    assert np.allclose(T[:3, :3], R1 @ R0.T) and np.allclose(T[:3, 3], t1 - R1 @ R0.T @ t0)
    # COLMAP principal point (pixel corners at integers) → pixel centres: −0.5
    assert np.allclose(pairs[0].K0, [[50, 0, 31.5], [0, 51, 23.5], [0, 0, 1]])


def test_megadepth1500_errors(tmp_path):
    root = tmp_path / "md"
    tiny(root / "images" / "a.jpg")
    (root / "views.txt").write_text(f"a.jpg {fmt(np.eye(3))} 0 0 0 FISHEYE 64 48 1 2 3 4\n")
    (root / "pairs.txt").write_text("a.jpg b.jpg\n")
    with pytest.raises(DatasetError, match="views.txt:1: unsupported camera model FISHEYE"):
        get_benchmark("megadepth1500", {"root": str(root)}).load_pairs()
    (root / "views.txt").write_text(f"a.jpg {fmt(np.eye(3))} 0 0 0 PINHOLE 64 48 1 2 3 4\n")
    with pytest.raises(DatasetError, match="pairs.txt:1: image b.jpg has no entry"):
        get_benchmark("megadepth1500", {"root": str(root)}).load_pairs()


# ---------------------------------------------------------------- ScanNet-1500
def test_scannet1500_pairs_calibrated(tmp_path):
    root = tmp_path / "scannet1500"
    tiny(root / "scene0707_00" / "color" / "15.jpg")
    tiny(root / "scene0707_00" / "color" / "585.jpg")
    K0 = np.array([[1165.7, 0, 649.1], [0, 1165.7, 484.8], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]]), [0.3, -0.2, 1.0]
    (root / "pairs_calibrated.txt").write_text(
        f"scene0707_00/color/15.jpg scene0707_00/color/585.jpg {fmt(K0)} {fmt(K0)} {fmt(T)}\n"
    )
    (p,) = get_benchmark("scannet1500", {"root": str(root)}).load_pairs()
    assert np.allclose(p.T_0to1, T) and np.allclose(p.K1, K0) and p.group == "scene0707_00"
    (root / "pairs_calibrated.txt").write_text("a b 1 2 3\n")
    with pytest.raises(
        DatasetError, match="pairs_calibrated.txt:1: expected 32 or 36 fields, got 5"
    ):
        get_benchmark("scannet1500", {"root": str(root)}).load_pairs()


# ---------------------------------------------------------------- ZEB
def test_zeb_one_pair_per_file(tmp_path):
    root = tmp_path / "zeb"
    K = np.array([[300.0, 0, 32], [0, 300, 24], [0, 0, 1]])
    T = np.eye(4)
    T[:3, 3] = [1, 0, 0]
    for s in ("gl3d", "robotcarnight"):
        d = root / s
        if s == "gl3d":  # names with extensions, stripped before '.png' is added
            tiny(d / "5b2c6ccb_00000012.png")
            tiny(d / "5b2c6ccb_00000031.png")
            line = "00000012.jpg 00000031.jpg 0.51 0.47"
        else:  # RobotCar timestamps without extension
            tiny(d / "night_1418236185.png")
            tiny(d / "night_1418236199.png")
            line = "1418236185 1418236199 0.4 0.6"
        scene = "5b2c6ccb" if s == "gl3d" else "night"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{scene}_0001.txt").write_text(
            f"{line} {fmt(K)} {fmt(K)} {fmt(T)}\nignored second line\n"
        )
    b = get_benchmark("zeb", {"root": str(root), "sets": ["gl3d", "robotcarnight"]})
    pairs = b.load_pairs()
    assert [p.group for p in pairs] == ["gl3d", "robotcarnight"]
    assert (
        pairs[0].image0.name == "5b2c6ccb_00000012.png"
        and pairs[1].image1.name == "night_1418236199.png"
    )
    assert pairs[0].extra == {
        "covisible0": 0.51,
        "covisible1": 0.47,
        "identifier": "5b2c6ccb#00000012#00000031",  # GIM's spelling of the pair in its dumps
    }
    assert np.allclose(pairs[1].T_0to1, T)
    with pytest.raises(DatasetError, match="zeb: set folder .*blendedmvs not found"):
        get_benchmark("zeb", {"root": str(root)}).load_pairs()  # default: all 12 sets


def test_zeb_manual_download_message(tmp_path):
    with pytest.raises(DatasetError, match="GIM README"):
        get_benchmark("zeb", {"root": str(tmp_path / "zeb")}).load_pairs()


def test_unknown_benchmark():
    with pytest.raises(DatasetError, match="did you mean 'hpatches'"):
        get_benchmark("hpatch")
