"""End to end on the real pairs of ../shared/data (slow: ~1-2 min of SIFT on CPU)."""

import pytest

from tiepoint.evaluation.benchmarks import get_benchmark
from tiepoint.evaluation.runner import run


def test_shared_manifests_load(data_dir):
    pairs = get_benchmark("pairs", {"root": str(data_dir)}).load_pairs()
    assert sum(p.task == "homography" for p in pairs) == 20
    assert sum(p.task == "relative_pose" for p in pairs) == 26
    assert {p.group for p in pairs} >= {
        "oxford_boat",
        "hpatches_v_graffiti",
        "kitti_seq1",
        "scannet_sample",
    }


@pytest.mark.slow
def test_sift_nn_on_shared_data(data_dir, tmp_path):
    summ, out = run(
        "pairs", "sift+nn", output_dir=tmp_path, data_root=data_dir, device="cpu", progress=False
    )
    # the data README's own SIFT check: every Oxford Leuven pair within 0.6 px, every KITTI pose
    # within 0.61° (R) / 0.48° (t); graffiti 1-5 and 1-6 are known SIFT failures
    assert summ["homography/oxford_leuven/H_error_ransac@3px"] > 0.75
    assert summ["homography/hpatches_v_graffiti/H_error_ransac@10px"] < 0.7
    assert summ["pose/kitti_seq1/rel_pose_error@5°"] > 0.8
    assert summ["pose/scannet_sample/rel_pose_error@5°"] < 0.3
    assert summ["homography/mprec@3px"] > 0.5
