"""Fixtures of the ui tests: benchmark runs written by the real `tiepoint eval pairs`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tiepoint.cli import main

PAIRS = ("oxford_boat/img1.png oxford_boat/img2.png", "oxford_bikes/img1.png oxford_bikes/img2.png")
# two tags: the same pipeline at two keypoint budgets, so the pair pictures differ per tag
TAGS = {
    "sift2k": ["extractor.max_num_keypoints=2048"],
    "sift512": ["extractor.max_num_keypoints=512"],
}


@pytest.fixture(scope="session")
def eval_results(data_dir, tmp_path_factory) -> Path:
    """outputs/results of two `tiepoint eval pairs` runs on a copy of two shared homography pairs
    (shrunk to 512 px for speed); returns the results folder (<out>/results)."""
    tmp = tmp_path_factory.mktemp("ui_eval")
    root = tmp / "data"
    lines = []
    for line in (data_dir / "homography" / "pairs.txt").read_text().splitlines():
        if line.startswith(PAIRS):
            lines.append(line)
            for name in line.split()[:2]:
                (root / "homography" / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(data_dir / "homography" / name, root / "homography" / name)
    assert len(lines) == len(PAIRS), "shared homography pairs moved"
    (root / "homography" / "pairs.txt").write_text("\n".join(lines) + "\n")
    out = tmp / "outputs"
    for tag, overrides in TAGS.items():
        rc = main(
            [
                "eval",
                "pairs",
                "--pipeline",
                "sift+nn",
                "--data-root",
                str(root),
                "--output-dir",
                str(out),
                "--tag",
                tag,
                "data.resize=512",
                *overrides,
            ]
        )
        assert rc == 0
    return out / "results"
