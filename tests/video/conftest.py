"""A small synthetic video with exact per-frame homographies, made once per session."""

import pytest

from tiepoint.video.synthetic import make_homography_video

PHOTO = "pose/megadepth_sample/345822933_b5fb7b6feb_o.jpg"


@pytest.fixture(scope="session")
def synthetic_video(data_dir, tmp_path_factory):
    """41 frames at 25 fps (GIM: gap 10, skips 10/20/40 → 5 sampled frames), 320×240."""
    out = tmp_path_factory.mktemp("synthetic") / "walk.avi"
    return make_homography_video(data_dir / PHOTO, out, num_frames=41, fps=25, size=(320, 240))


@pytest.fixture(scope="session")
def synthetic_frames(synthetic_video, tmp_path_factory):
    from tiepoint.video.frames import extract_frames

    return extract_frames(synthetic_video.path, tmp_path_factory.mktemp("frames"), progress=False)
