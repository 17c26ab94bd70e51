"""The runner end to end on tiny synthetic datasets: outputs, caching, resume, config guard."""

import json

import h5py
import numpy as np
import pytest

from tiepoint import Features, Matcher, MatchResult
from tiepoint.errors import ConfigError, DatasetError
from tiepoint.evaluation.runner import read_results, run

from .fixtures import write_pairs_dataset


class Counting:
    """The real sift+nn matcher, counting pairs and optionally failing after `crash_after` pairs."""

    def __init__(self, conf, crash_after=None):
        self.m = Matcher(conf, device="cpu")
        self.pairs, self.crash_after = 0, crash_after

    def extract(self, image):
        return self.m.extract(image)

    def match_features(self, f0, f1):
        if self.crash_after is not None and self.pairs >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        self.pairs += 1
        return self.m.match_features(f0, f1)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_pairs_dataset(root, n_h=3, n_pose=2)
    return root


def _run(dataset, out, factory=None, **kw):
    made = []

    def make(conf):
        made.append(factory(conf) if factory else Counting(conf))
        return made[-1]

    kw.setdefault("data_root", dataset)
    summ, d = run("pairs", "sift+nn", output_dir=out, progress=False, matcher_factory=make, **kw)
    return summ, d, made


def _stable(summaries):  # timings differ between runs
    return {k: v for k, v in summaries.items() if "time" not in k}


def test_run_writes_all_outputs_with_sensible_numbers(dataset, tmp_path):
    summ, d, made = _run(dataset, tmp_path)
    assert d == tmp_path / "results" / "pairs" / "sift+nn"
    for name in (
        "conf.yaml",
        "predictions.h5",
        "results.h5",
        "summaries.json",
        "homography_recall.png",
        "pose_recall.png",
    ):
        assert (d / name).exists(), name
    assert made[0].pairs == 5
    # easy synthetic warps: SIFT + RANSAC recovers every homography to well under 3 px
    assert summ["homography/H_error_ransac@3px"] > 0.7
    assert summ["homography/mprec@3px"] > 0.8
    for k in (
        "homography/H_error_dlt@5px",
        "homography/H_error_ransac_mAA",
        "pose/rel_pose_error@10°",
        "pose/mepi_prec@1e-4",
        "pose/mnum_matches",
        "homography/mtime_ms",
        "pose/ransac_th",
        "homography/seq0/H_error_ransac@3px",
    ):
        assert k in summ, k
    assert (
        summ["homography/ransac_th"] == 3.0 and summ["pose/ransac_th"] == 0.5
    )  # estimator defaults
    assert json.loads((d / "summaries.json").read_text()) == summ
    res = read_results(d / "results.h5")
    assert list(res["homography"]["names"]) == [
        f"homography/seq{i}/a.png seq{i}/b.png" for i in range(3)
    ]
    assert len(res["pose"]["rel_pose_error"]) == 2
    with h5py.File(d / "predictions.h5") as f:
        assert len(f) == 5 and all(f[k].attrs["done"] for k in f)


def test_resume_after_crash_gives_the_same_summaries(dataset, tmp_path):
    ref, _, _ = _run(dataset, tmp_path / "ref")
    with pytest.raises(KeyboardInterrupt):
        _run(dataset, tmp_path / "crash", factory=lambda c: Counting(c, crash_after=2))
    pred = tmp_path / "crash" / "results" / "pairs" / "sift+nn" / "predictions.h5"
    with h5py.File(pred, "a") as f:
        assert len(f) == 2
        f.create_group("half-written")  # no `done` mark: must be dropped and redone
    summ, _, made = _run(dataset, tmp_path / "crash")
    assert made[0].pairs == 3  # only the missing pairs were matched
    assert _stable(summ) == _stable(ref)


def test_corrupt_predictions_file_is_set_aside(dataset, tmp_path):
    d = tmp_path / "results" / "pairs" / "sift+nn"
    _run(dataset, tmp_path)
    (d / "predictions.h5").write_bytes(b"not an hdf5 file")
    summ, _, made = _run(dataset, tmp_path)
    assert made[0].pairs == 5 and list(d.glob("predictions.h5.corrupt-*"))


def test_changed_model_refused_without_overwrite_and_estimator_reuses_predictions(
    dataset, tmp_path
):
    _run(dataset, tmp_path, tag="t")
    with pytest.raises(ConfigError, match=r"matcher.ratio_thresh: 0.8 → 0.9.*--overwrite"):
        _run(dataset, tmp_path, tag="t", overrides=["matcher.ratio_thresh=0.9"])
    summ, _, made = _run(
        dataset, tmp_path, tag="t", overrides=["matcher.ratio_thresh=0.9"], overwrite=True
    )
    assert made[0].pairs == 5
    # another estimator (and the sweep) on the same tag: evaluation only, no matching
    summ2, _, made = _run(
        dataset,
        tmp_path,
        tag="t",
        overrides=["matcher.ratio_thresh=0.9"],
        estimator="poselib",
        ransac_th=-1,
    )
    assert made == []
    assert summ2["homography/ransac_th"] in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    assert summ2["homography/mnum_matches"] == summ["homography/mnum_matches"]
    # a new tag with the same data+model copies the predictions of the existing one
    _, d, made = _run(
        dataset, tmp_path, estimator="pycolmap", overrides=["matcher.ratio_thresh=0.9"]
    )
    assert made == [] and d.name == "sift+nn_pycolmap_matcher.ratio_thresh=0.9"


class FewMatches:
    """A fake matcher that returns 2 matches: too few for any estimator."""

    def __init__(self, conf):
        pass

    def extract(self, image):
        kp = np.array([[10, 10], [50, 20], [30, 40]], np.float32)
        return Features(kp, np.ones(3, np.float32), np.eye(3, 8, dtype=np.float32), (240, 180))

    def match_features(self, f0, f1):
        m = np.array([[0, 0], [1, 1]])
        return MatchResult(
            f0.keypoints, f1.keypoints, m, np.ones(2, np.float32), f0.image_size, f1.image_size
        )


def test_degenerate_pairs_are_failures_not_crashes(dataset, tmp_path):
    summ, d, _ = _run(dataset, tmp_path, factory=FewMatches)
    assert summ["homography/H_error_ransac@10px"] == 0.0 and summ["pose/rel_pose_error@20°"] == 0.0
    assert summ["homography/mnum_matches"] == 2
    res = read_results(d / "results.h5")
    assert (
        np.isinf(res["homography"]["H_error_ransac"]).all()
        and np.isinf(res["pose"]["rel_pose_error"]).all()
    )
    assert json.loads((d / "summaries.json").read_text())["homography/mH_error_ransac"] == "inf"


def test_missing_image_and_folder_fail_before_matching(dataset, tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        _run(tmp_path / "nowhere", tmp_path)
    root = tmp_path / "data"
    write_pairs_dataset(root, n_h=1, n_pose=1)
    (root / "homography" / "seq0" / "b.png").unlink()
    with pytest.raises(DatasetError, match=r"homography/pairs.txt:2: image .*b.png"):
        _run(root, tmp_path)


def test_compare_and_cli(dataset, tmp_path, capsys):
    from tiepoint.cli import main
    from tiepoint.evaluation.compare import compare

    _run(dataset, tmp_path, tag="a")
    _run(dataset, tmp_path, tag="b", estimator="poselib")
    table, png = compare("pairs", ["a", "b"], output_dir=tmp_path)
    header, *rows = table.splitlines()
    assert header.split() == ["a", "b"]
    row = next(r for r in rows if r.startswith("homography/H_error_ransac@3px"))
    assert len(row.split()) == 3
    assert png.exists() and png.stat().st_size > 1000
    with pytest.raises(DatasetError, match="no results for tag 'zz'.*runs with results: a, b"):
        compare("pairs", ["a", "zz"], output_dir=tmp_path)
    # the CLI prints bad input as one line with exit code 2
    assert (
        main(
            [
                "eval",
                "pairs",
                "--pipeline",
                "sift+nn",
                "--data-root",
                str(tmp_path / "none"),
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pairs: dataset folder")
    assert main(["compare", "pairs", "a", "b", "--output-dir", str(tmp_path)]) == 0
    assert "H_error_ransac@3px" in capsys.readouterr().out


def test_hpatches_protocol_evaluates_at_480px_short_side(tmp_path):
    """Errors are measured on images resized to 480 px (short side), with H adjusted to them."""
    from PIL import Image

    from .fixtures import homographies, texture, warp

    root = tmp_path / "hpatches-sequences-release"
    for s, seed in (("i_test", 0), ("v_test", 1)):
        img = texture(200, 150, seed=seed)
        (root / s).mkdir(parents=True)
        Image.fromarray(img).save(root / s / "1.ppm")
        for k in range(2, 7):
            H = homographies()[k % 3]
            Image.fromarray(warp(img, H)).save(root / s / f"{k}.ppm")
            (root / s / f"H_1_{k}").write_text(
                "\n".join(" ".join(f"{x:.10e}" for x in r) for r in H) + "\n"
            )
    summ, d = run(
        "hpatches",
        "sift+nn",
        output_dir=tmp_path,
        data_root=root,
        progress=False,
        matcher_factory=lambda c: Counting(c),
        overrides=["data.max_pairs=6"],
    )
    assert summ["ransac_th"] == 0.5  # Glue Factory's official HPatches setting
    assert summ["H_error_ransac@5px"] > 0.6 and summ["mprec@3px"] > 0.7
    assert set(summ) >= {"i/H_error_ransac@1px", "v/H_error_dlt@5px", "H_error_dlt_mAA"}
    with h5py.File(d / "predictions.h5") as f:
        r = MatchResult.from_h5(f["i_test|1-2"])
        assert r.image_size0 == (200, 150)  # stored in original pixels
        assert r.keypoints0.max() < 200


class Oracle:
    """Fake matcher returning the true projections of 3D points (keyed by image path)."""

    table: dict = {}

    def __init__(self, conf):
        pass

    def extract(self, image):
        kp = self.table[str(image)]
        return Features(
            kp.astype(np.float32),
            np.ones(len(kp), np.float32),
            np.zeros((len(kp), 4), np.float32),
            (64, 48),
        )

    def match_features(self, f0, f1):
        m = np.stack([np.arange(len(f0.keypoints))] * 2, 1)
        return MatchResult(
            f0.keypoints, f1.keypoints, m, np.ones(len(m), np.float32), f0.image_size, f1.image_size
        )


def test_zeb_per_set_auc_and_mean_of_sets(tmp_path):
    from helpers import rotation

    from .fixtures import fmt, save, texture

    rng = np.random.default_rng(0)
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    root = tmp_path / "zeb"
    for s, good in (("gl3d", True), ("robotcarnight", False)):
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rotation(ry=4), [1.0, 0.1, 0.0]
        X = np.c_[rng.uniform(-2, 2, (80, 2)), rng.uniform(4, 8, 80)]
        x0, x1 = X @ K.T, (X @ T[:3, :3].T + T[:3, 3]) @ K.T
        p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
        if not good:
            p1 = rng.permutation(p1)  # matches with no geometric consistency
        for name, p in (("a", p0), ("b", p1)):
            Oracle.table[str(save(root / s / f"sc_{name}.png", texture(64, 48)))] = p
        (root / s / "sc_0.txt").write_text(f"a.jpg b.jpg 0.5 0.5 {fmt(K)} {fmt(K)} {fmt(T)}\n")
    summ, d = run(
        "zeb",
        "sift+nn",
        output_dir=tmp_path,
        data_root=root,
        progress=False,
        matcher_factory=Oracle,
        overrides=["data.sets=[gl3d,robotcarnight]", "eval.options.method=usac_magsac"],
    )
    assert summ["gl3d/rel_pose_error@5°"] > 0.95 and summ["robotcarnight/rel_pose_error@5°"] == 0.0
    assert summ["rel_pose_error@5°_mean_of_sets"] == pytest.approx(
        summ["gl3d/rel_pose_error@5°"] / 2, abs=1e-4
    )
    assert summ["mrel_pose_error"] <= 180  # ZEB counts a failure as 180°, not inf
    assert "method: usac_magsac" in (d / "conf.yaml").read_text()
    from tiepoint.errors import EstimatorError

    with pytest.raises(EstimatorError, match="unknown opencv method 'nope'"):
        run(
            "zeb",
            "sift+nn",
            output_dir=tmp_path,
            data_root=root,
            progress=False,
            matcher_factory=Oracle,
            overrides=["data.sets=[gl3d]", "eval.options.method=nope"],
        )


def test_predictions_of_the_old_layout_are_still_read(dataset, tmp_path):
    """Files written before format version 1 ((K,2) `matches`, sizes and times as attrs) still
    evaluate, to the same numbers, without matching again."""
    ref, d, _ = _run(dataset, tmp_path)
    with h5py.File(d / "predictions.h5", "a") as f:
        for key in list(f):
            r = MatchResult.from_h5(f[key])
            del f[key]
            g = f.create_group(key)  # exactly what the runner wrote before types.py
            g.create_dataset("keypoints0", data=r.keypoints0)
            g.create_dataset("keypoints1", data=r.keypoints1)
            g.create_dataset("matches", data=r.matches)
            g.create_dataset("scores", data=r.scores)
            g.attrs["image_size0"] = np.asarray(r.image_size0, np.int64)
            g.attrs["image_size1"] = np.asarray(r.image_size1, np.int64)
            g.attrs["time_extract"] = r.timings["extract"]
            g.attrs["time_match"] = r.timings["match"]
            g.attrs["done"] = True
    summ, _, made = _run(dataset, tmp_path)
    assert made == []
    assert summ == ref  # timings included: they are read back from the old attrs
