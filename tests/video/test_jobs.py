"""Labelling and propagation on the reconstruction executors give the same files whichever ran
them: local = shard 0/2 + shard 1/2 = Ray actors = the plain API (`label_video`,
`propagate_video`)."""

from __future__ import annotations

import importlib.util

import pytest

from tiepoint.video.jobs import VideoJobSpec, label_videos, propagate_videos
from tiepoint.video.labels import Labeler, label_video
from tiepoint.video.propagate import propagate_video

from .synthetic_labels import Scene, write_gim_labels

OVR = ["extractor.max_num_keypoints=1500"]


def tree(root):
    """{relative path: bytes} of every non-hidden file (hidden: markers, temporaries)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def test_labelling_is_identical_on_every_executor(synthetic_frames, tmp_path):
    folder = str(synthetic_frames.folder)
    ref = tmp_path / "api"
    label_video(
        Labeler("gim-rootsift", device="cpu", overrides=OVR),
        synthetic_frames,
        ref,
        skips=(0, 1),
        progress=False,
    )
    want = tree(ref)
    assert len(want) >= 2 * 2 + 4  # two sets: indexes + at least 4 labelled pairs

    def spec(out):
        return VideoJobSpec(out=str(out), device="cpu", overrides=OVR)

    label_videos([folder], spec(tmp_path / "local"), skips=(0, 1))
    assert tree(tmp_path / "local") == want
    for i in (1, 0):  # shards in any order
        label_videos([folder], spec(tmp_path / "shard"), skips=(0, 1), shard=(i, 2))
    assert tree(tmp_path / "shard") == want


def test_propagation_is_identical_on_every_executor(tmp_path):
    small = dict(frames=81, resizes=("F",))
    pseudo = write_gim_labels(tmp_path / "pseudo", Scene(methods=("SIFT",)), "walk a", **small)
    write_gim_labels(pseudo, Scene(methods=("SIFT",), seed=1), "walk b", **small)
    kw = dict(max_samples=3, step=2)
    from tiepoint.video.propagate import PropagateConf

    for v in ("walk a", "walk b"):
        propagate_video(pseudo, v, tmp_path / "api", **kw)
        propagate_video(pseudo, v, tmp_path / "api_bad", min_inliers=1200, **kw)
    for conf, ref in [
        (PropagateConf(**kw), "api"),
        (PropagateConf(min_inliers=1200, **kw), "api_bad"),
    ]:
        want = tree(tmp_path / ref)
        assert sum(n.endswith(".npy") for n in want) >= 2
        s = propagate_videos(pseudo, tmp_path / f"local_{ref}", ["walk a", "walk b"], conf)
        assert tree(tmp_path / f"local_{ref}") == want and len(s) == 2
        for i in (0, 1):
            propagate_videos(
                pseudo, tmp_path / f"shard_{ref}", ["walk a", "walk b"], conf, shard=(i, 2)
            )
        assert tree(tmp_path / f"shard_{ref}") == want
    assert any(n.endswith("bad_pairs.txt") for n in tree(tmp_path / "api_bad"))


@pytest.mark.slow
def test_ray_actors_write_the_same_files(synthetic_frames, tmp_path):
    """Ray (an extra): two actors that keep the labeler loaded; same files as the API."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray not installed (extra 'ray')")
    label_video(
        Labeler("gim-rootsift", device="cpu", overrides=OVR),
        synthetic_frames,
        tmp_path / "api",
        skips=(0, 1),
        progress=False,
    )
    spec = VideoJobSpec(out=str(tmp_path / "ray"), device="cpu", overrides=OVR)
    label_videos([str(synthetic_frames.folder)], spec, skips=(0, 1), executor="ray", workers=2)
    assert tree(tmp_path / "ray") == tree(tmp_path / "api")
    pseudo = write_gim_labels(
        tmp_path / "pseudo", Scene(methods=("SIFT",)), "walk a", frames=81, resizes=("F",)
    )
    propagate_video(pseudo, "walk a", tmp_path / "papi", max_samples=3)
    from tiepoint.video.propagate import PropagateConf

    propagate_videos(
        pseudo,
        tmp_path / "pray",
        ["walk a"],
        PropagateConf(max_samples=3),
        executor="ray",
        workers=2,
    )
    assert tree(tmp_path / "pray") == tree(tmp_path / "papi")
