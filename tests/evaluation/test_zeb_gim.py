"""ZEB as GIM runs it: GIM's dump format and analysis, recomputing GIM's published numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import rotation

from tiepoint import Features, MatchResult
from tiepoint.cli import main
from tiepoint.errors import DatasetError
from tiepoint.evaluation import zeb_gim
from tiepoint.evaluation.benchmarks import get_benchmark
from tiepoint.evaluation.runner import run

from .fixtures import fmt, save, texture

# GIM analysis.py on GIM's shipped dumps (reference-methods §2.6), GL3..GTA, AUC@5° x 100
PUBLISHED = {
    "gim_dkm": [63.5, 53.1, 74.0, 76.6, 43.1, 34.8, 52.4, 24.0, 56.4, 32.2, 42.7, 61.7],
    "gim_lightglue": [46.9, 38.3, 61.9, 62.8, 35.2, 30.9, 50.5, 21.8, 41.9, 6.8, 19.0, 43.0],
    "root_sift": [43.5, 33.6, 49.9, 48.7, 35.2, 22.3, 44.4, 14.2, 33.4, 7.6, 14.8, 35.1],
}
SETS = [name for _, _, name in zeb_gim.ZEB_SETS]


def gim_line(ident, R, t):
    return f"{ident} 0.5 0.5 {R} {t} 0.1 1.0 5000 1.0 3000"


def write_published_dump(folder, model, values, rng):
    """Per set, 1000 pairs with AUC exactly v/100: round(10 v) perfect pairs (0°) and the rest
    failed in GIM's spellings (nan, inf, R or t beyond 5°), plus later duplicates of perfect pairs
    with bad errors, which GIM's analysis ignores (first row wins)."""
    for name, v in zip(SETS, values):
        k = int(round(10 * v))
        rows = [gim_line(f"s#{i:04d}a#{i:04d}b", 0.0, 0.0) for i in range(k)]
        bad = ["nan", "inf", "180.0", "7.5"]
        for i in range(k, 1000):
            R, t = (bad[i % 4], "0.1") if i % 2 else ("0.2", bad[i % 4])
            rows.append(gim_line(f"s#{i:04d}a#{i:04d}b", R, t))
        rows = [rows[i] for i in rng.permutation(len(rows))]
        rows += [gim_line(f"s#{i:04d}a#{i:04d}b", "inf", "inf") for i in range(0, k, 7)]
        text = zeb_gim.HEADER + "\n" + "\n".join(rows) + "\n"
        (folder / f"[T] {model} {name:>15} 100h.txt").write_text(text)


def test_analysis_recomputes_gims_published_numbers(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for model, values in PUBLISHED.items():
        write_published_dump(tmp_path, model, values, rng)
    for model, values in PUBLISHED.items():
        r = zeb_gim.analyse(tmp_path, model, "100h")
        assert [round(r[s], 6) for s in SETS] == values
        assert r["mean"] == pytest.approx(np.mean(values), abs=1e-9)
    assert main(["zeb-analysis", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "gim_dkm 100h" in out and " 63.5  53.1  74.0" in out and out.count("\n") == 5
    assert f"{np.mean(PUBLISHED['gim_dkm']):5.1f}" in out  # 51.2, the README's mean


def hand_auc(R, t, thr=5.0):
    """The SuperGlue AUC by hand: trapezoids between (0, 0) and the sorted errors below thr."""
    e = [180.0 if not np.isfinite(x) else x for x in np.maximum(R, t)]
    e = sorted(e)
    n, area, px, py = len(e), 0.0, 0.0, 0.0
    for i, x in enumerate(e, 1):
        if x >= thr:
            break
        area += (x - px) * py + 0.5 * (x - px) * (i / n - py)  # rise from py to i/n over [px, x]
        px, py = x, i / n
    area += (thr - px) * py
    return area / thr


def test_auc_equals_a_hand_trapezoid_on_random_dumps(tmp_path):
    rng = np.random.default_rng(1)
    R = rng.exponential(4.0, 500)
    t = rng.exponential(6.0, 500)
    R[rng.random(500) < 0.05] = np.nan
    t[rng.random(500) < 0.05] = np.inf
    rows = [{"identifiers": f"sc#{i}#{i + 1}", "covisible0": 0.4, "covisible1": 0.6,
             "R_errs": R[i], "t_errs": t[i], "t_errs2": 0.0, "Bef.Prec": 0.5, "Bef.Num": 1,
             "Aft.Prec": 1.0, "Aft.Num": 1} for i in range(500)]  # fmt: skip
    path = zeb_gim.write_dump(zeb_gim.dump_path(tmp_path, "m", "GL3D", "v"), rows[::-1])
    assert path.name == "[T] m            GL3D v.txt"
    lines = path.read_text().splitlines()
    assert lines[0] == zeb_gim.HEADER and len(lines) == 501
    assert [x.split()[0] for x in lines[1:]] == sorted(r["identifiers"] for r in rows)
    r = zeb_gim.analyse(tmp_path, "m", "v")
    assert r["GL3D"] == pytest.approx(100 * hand_auc(R, t), abs=1e-9)
    assert 5 < r["GL3D"] < 60


def test_bad_dumps_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "[T] m            GL3D v.txt").write_text("a b c\n")
    with pytest.raises(DatasetError, match="not a GIM ZEB dump"):
        zeb_gim.analyse(tmp_path, "m", "v")
    with pytest.raises(DatasetError, match="no dump files of 'x' version 'v'"):
        zeb_gim.analyse(tmp_path, "x", "v")
    assert main(["zeb-analysis", str(tmp_path / "nope")]) == 2
    assert "ZEB dump folder not found" in capsys.readouterr().err


def test_gim_input_sizes():
    assert zeb_gim.gim_input_size("kitti", (1241, 376)) == (1240, 376)  # cap, no x8 floor
    assert zeb_gim.gim_input_size("kitti", (1226, 370)) == (1226, 370)  # never upscaled
    assert zeb_gim.gim_input_size("eth3do", (6048, 4032)) == (1600, 1067)
    assert zeb_gim.gim_input_size("gl3d", (1000, 1000)) == (1000, 1000)
    assert zeb_gim.gim_input_size("multifov", (645, 483)) == (640, 480)  # x8 floor


def synthetic_pose_pair(rng, n=200):
    K = np.array([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation(ry=6, rx=2), [0.8, 0.1, 0.05]
    X = np.c_[rng.uniform(-3, 3, (n, 2)), rng.uniform(5, 12, n)]
    x0, x1 = X @ K.T, (X @ T[:3, :3].T + T[:3, 3]) @ K.T
    return K, T, x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]


def test_pair_row_is_gims_per_pair_metric():
    rng = np.random.default_rng(0)
    K, T, p0, p1 = synthetic_pose_pair(rng)
    p1 = p1.copy()
    p1[:40] = rng.uniform(0, 640, (40, 2))  # 20% outliers
    row = zeb_gim.pair_row("sc#a#b", 0.3, 0.4, p0, p1, K, K, T)
    assert row["R_errs"] < 0.1 and row["t_errs"] < 0.5 and row["t_errs2"] < 0.01
    # epipolar precision: exactly the 160 true matches are below 5e-4 (outliers are far off)
    assert row["Bef.Num"] == 160 and row["Bef.Prec"] == pytest.approx(0.8)
    assert row["Aft.Num"] == 160 and row["Aft.Prec"] > 0.95
    failed = zeb_gim.pair_row("sc#a#b", 0.3, 0.4, p0[:4], p1[:4], K, K, T)
    assert failed["R_errs"] == np.inf and failed["Aft.Num"] == 0 and failed["Aft.Prec"] == 0.0


class Recorder:
    """Fake matcher: true projections (keyed by path), and the resize each image was asked at."""

    table: dict = {}
    asked: dict = {}

    def __init__(self, conf):
        pass

    def extract(self, image, resize=None, multiple=None):
        self.asked[str(image)] = resize, multiple
        kp = self.table[str(image)]
        return Features(kp.astype(np.float32), np.ones(len(kp), np.float32),
                        np.zeros((len(kp), 4), np.float32), (640, 480))  # fmt: skip

    def match_features(self, f0, f1):
        m = np.stack([np.arange(len(f0.keypoints))] * 2, 1)
        return MatchResult(f0.keypoints, f1.keypoints, m, np.ones(len(m), np.float32),
                           f0.image_size, f1.image_size)  # fmt: skip


def test_gim_protocol_run_and_dump_round_trip(tmp_path, capsys):
    rng = np.random.default_rng(2)
    root = tmp_path / "zeb"
    sizes = {"kitti": (1300, 400), "gl3d": (64, 48), "gtasfm": (64, 48)}
    names = {"kitti": ("000005.png", "000006.png"), "gl3d": ("00000012.jpg", "00000031.jpg"),
             "gtasfm": ("image_0", "image_39")}  # fmt: skip
    scene = {"kitti": "2011_09_30_drive_0018_sync", "gl3d": "5b2c6ccb", "gtasfm": "20190127_154841"}
    for s in sizes:
        K, T, p0, p1 = synthetic_pose_pair(rng)
        sep = "_" if s == "gl3d" else "-"
        for n, p in zip(names[s], (p0, p1)):
            img = root / s / f"{scene[s]}{sep}{zeb_gim_stem(n)}.png"
            Recorder.table[str(save(img, texture(*sizes[s])))] = p
        (root / s / f"{scene[s]}{sep}0001.txt").write_text(
            f"{names[s][0]} {names[s][1]} 0.5 0.6 {fmt(K)} {fmt(K)} {fmt(T)}\n"
        )
    bench = get_benchmark("zeb", {"root": str(root), "sets": list(sizes), "protocol": "gim"})
    pairs = {p.group: p for p in bench.load_pairs()}
    assert bench.conf.resize is None
    assert pairs["kitti"].extra["identifier"] == "2011_09_30_drive_0018_sync#000005.png#000006.png"
    assert pairs["gtasfm"].extra["identifier"] == "20190127_154841#image_0#image_39"
    assert pairs["gl3d"].extra["identifier"] == "5b2c6ccb#00000012#00000031"
    summ, out = run("zeb", "sift+nn", output_dir=tmp_path, data_root=root, progress=False,
                    matcher_factory=Recorder,
                    overrides=[f"data.sets=[{','.join(sizes)}]", "data.protocol=gim"])  # fmt: skip
    asked = {k.split("/")[-2]: v for k, v in Recorder.asked.items()}
    # KITTI capped (no x8 floor), the others native with each side floored to x8
    assert asked == {"kitti": (1240, None), "gl3d": (None, 8), "gtasfm": (None, 8)}
    assert main(["zeb-dump", str(out), str(tmp_path / "dump"), "--model", "fake"]) == 0
    files = {p.name for p in (tmp_path / "dump").iterdir()}
    assert files == {f"[T] fake {n:>15} tiepoint.txt" for n in ("KITTI", "GL3D", "GTA-SfM")}
    kitti = (tmp_path / "dump" / "[T] fake           KITTI tiepoint.txt").read_text().splitlines()
    assert kitti[0] == zeb_gim.HEADER
    assert kitti[1].split()[:3] == [
        "2011_09_30_drive_0018_sync#000005.png#000006.png",
        "0.5",
        "0.6",
    ]
    r = zeb_gim.analyse(tmp_path / "dump", "fake", "tiepoint")
    for s, name in (("kitti", "KITTI"), ("gl3d", "GL3D"), ("gtasfm", "GTA-SfM")):
        assert r[name] == pytest.approx(100 * summ[f"{s}/rel_pose_error@5°"], abs=2.0)
        assert r[name] > 90
    capsys.readouterr()


def zeb_gim_stem(name: str) -> str:
    return name.rpartition(".")[0] if "." in name else name


@pytest.mark.parametrize(
    "zeb_set, image",
    [
        ("gl3d", "homography/oxford_boat/img1.png"),  # 850×680 → 848×680
        ("blendedmvs", "homography/oxford_bikes/img1.png"),  # 1000×700 → 1000×696
        ("multifov", "pose/kitti_seq1/000025.png"),  # 1226×370 → 1224×368
        ("kitti", "pose/kitti_seq1/000025.png"),  # KITTI: capped at 1240, never floored
    ],
)
def test_gim_input_size_reaches_the_extractor_on_real_images(data_dir, zeb_set, image):
    """What the network sees under `data.protocol=gim` for real image sizes: each side floored to
    a multiple of 8 (a resize, as GIM's loaders do), keypoints mapped back per axis."""
    from PIL import Image

    import tiepoint
    from tiepoint.evaluation.benchmarks.zeb import gim_input

    path = data_dir / image
    W, H = Image.open(path).size
    want = (W, H) if zeb_set == "kitti" else (W // 8 * 8, H // 8 * 8)  # GIM's get_divisible_wh
    assert zeb_gim.gim_input_size(zeb_set, (W, H)) == want
    m = tiepoint.Matcher("sift+nn", device="cpu")
    seen = []

    class Spy:  # the extractor: records its input, returns the input's two corner pixel centres
        grayscale = True

        def __call__(self, data):
            h, w = data["image"].shape[-2:]
            seen.append((w, h))
            kp = torch.tensor([[[0.0, 0.0], [w - 1.0, h - 1.0]]])
            return {"keypoints": kp, "keypoint_scores": torch.ones(1, 2),
                    "descriptors": torch.zeros(1, 2, 128)}  # fmt: skip

    m.extractor = Spy()
    inp = gim_input(zeb_set)  # what predictions._FeatureCache passes for the set
    cap = inp.get("max_size")
    f = m.extract(path, cap if cap and max(W, H) > cap else 0, inp.get("multiple"))
    assert seen == [want] and f.image_size == (W, H)
    sx, sy = want[0] / W, want[1] / H  # pixel-centre convention, per axis
    corners = np.array([[0.5 / sx - 0.5, 0.5 / sy - 0.5], [W - 0.5 / sx - 0.5, H - 0.5 / sy - 0.5]])
    np.testing.assert_allclose(f.keypoints, corners, atol=1e-4)
