"""Ray actors and a killed run give exactly the matches of an uninterrupted local run."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tiepoint.reconstruction import records
from tiepoint.reconstruction.pipeline import Reconstruction

from .conftest import copy_frames, kitti_frames, sift_options
from .test_pipeline import assert_same_h5


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # a local two-worker cluster owned by this test module
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def local_run(images, out, **kw):
    with Reconstruction(images, out, sift_options(**kw)) as r:
        r.extract()
        pairs = r.make_pairs()
        r.match(pairs)
    return pairs


@pytest.mark.slow
def test_ray_two_workers_equal_local(kitti_dir, tmp_path, ray_cluster):
    images = copy_frames(kitti_dir, tmp_path / "images", kitti_frames(kitti_dir, count=6))
    local_run(images, tmp_path / "local", pairs="sequential:2")
    with Reconstruction(
        images, tmp_path / "ray", sift_options(pairs="sequential:2", executor="ray", workers=2)
    ) as r:
        ex = r.extract()
        assert ex.computed == 6
        pairs = r.make_pairs()
        st = r.match(pairs)
        assert st.computed == len(pairs) == 9
        # both actors did part of the work (extraction and matching), each into its own part file
        assert all(n > 0 for n in r.executor.items_per_worker)
        assert sum(r.executor.items_per_worker) == 6 + 9
    assert_same_h5(tmp_path / "local" / "features.h5", tmp_path / "ray" / "features.h5")
    assert_same_h5(tmp_path / "local" / "matches.h5", tmp_path / "ray" / "matches.h5")


def count_part_records(part_dir):
    return sum(len(records.scan(p)[0]) for p in part_dir.glob("*.log")) if part_dir.exists() else 0


@pytest.mark.slow
def test_killed_run_resumes_without_recomputing(kitti_dir, tmp_path):
    images = copy_frames(kitti_dir, tmp_path / "images", kitti_frames(kitti_dir))
    opts = sift_options(pairs="exhaustive")
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "tiepoint.cli",
        "reconstruct",
        str(images),
        str(out),
        *opts.overrides,
        "--pipeline",
        opts.pipeline,
        "--resize",
        str(opts.resize),
        "--device",
        "cpu",
        "--camera-model",
        "PINHOLE",
        "--camera-params",
        opts.mapper.camera_params,
    ]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    match_parts = out / "parts" / "matches"
    deadline = time.time() + 240
    try:
        while count_part_records(match_parts) < 8:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "matching did not start"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = count_part_records(match_parts)  # what survived, read independently of the pipeline
    assert 8 <= finished < 55
    assert not (out / "matches.h5").exists()

    with Reconstruction(images, out, opts) as r:
        ex = r.extract()
        assert ex.computed == 0 and ex.already_done == 11  # extraction had finished and been merged
        pairs = r.make_pairs()
        st = r.match(pairs)
    assert st.already_done == finished and st.computed == 55 - finished
    # and the result is that of a run that was never interrupted
    local_run(images, tmp_path / "clean", pairs="exhaustive")
    assert_same_h5(tmp_path / "clean" / "matches.h5", out / "matches.h5")
