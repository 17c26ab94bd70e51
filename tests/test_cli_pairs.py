"""`tiepoint match IMAGES OUT` / `--pairs FILE`: the pairs file's errors by line, one h5 with every
pair in the documented layout equal to matching each pair alone, and resuming after a kill."""

from __future__ import annotations

import itertools
import logging
import shutil

import h5py
import numpy as np
import pytest

import tiepoint
from tiepoint.cli import main
from tiepoint.errors import DatasetError
from tiepoint.match_many import match_many, read_pair, read_pairs_file

PIPE = ["--pipeline", "sift+nn", "--resize", "400"]
NAMES = ["boat/img1.png", "boat/img2.png", "graf/1.png", "graf/2.png"]


@pytest.fixture(scope="module")
def folder(data_dir, tmp_path_factory):
    """Four real images in two subfolders (names with `/`)."""
    root = tmp_path_factory.mktemp("images")
    h = data_dir / "homography"
    for name, src in zip(
        NAMES,
        [
            "oxford_boat/img1.png",
            "oxford_boat/img2.png",
            "hpatches_v_graffiti/1.png",
            "hpatches_v_graffiti/2.png",
        ],
        strict=True,
    ):
        (root / name).parent.mkdir(exist_ok=True)
        shutil.copy(h / src, root / name)
    return root


def test_pairs_file_lines(tmp_path, caplog):
    names = {"a.png", "b.png", "c.png"}
    f = tmp_path / "pairs.txt"
    f.write_text("# a comment\n\na.png b.png\nb.png c.png 1 2 3\n\nb.png a.png\na.png a.png\n")
    with caplog.at_level(logging.WARNING, logger="tiepoint"):
        assert read_pairs_file(f, names) == [("a.png", "b.png"), ("b.png", "c.png")]
    assert f"{f}:6: duplicate of line 3" in caplog.text and f"{f}:7: pair of 'a.png'" in caplog.text
    f.write_text("a.png b.png\n# x\nc.png d.png\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:3: image 'd.png' not found"):
        read_pairs_file(f, names)
    f.write_text("a.png b.png\nc.png\n")
    with pytest.raises(DatasetError, match=r"pairs.txt:2: expected 'name0 name1'"):
        read_pairs_file(f, names)
    f.write_text("# only a comment\n\n")
    with pytest.raises(DatasetError, match=r"pairs.txt: no pairs in the file"):
        read_pairs_file(f, names)


def test_cli_reports_a_bad_pairs_file_in_one_line(folder, tmp_path, capsys):
    f = tmp_path / "pairs.txt"
    f.write_text("boat/img1.png boat/img2.png\nboat/img1.png boat/img9.png\n")
    assert main(["match", "--pairs", str(f), str(folder), str(tmp_path / "m.h5"), *PIPE]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {f}:2: image 'boat/img9.png' not found in the image folder"
    assert not (tmp_path / "m.h5").exists()


def test_folder_to_one_h5_equal_to_single_pairs(folder, tmp_path, capsys):
    out = tmp_path / "all.h5"
    assert main(["match", str(folder), str(out), *PIPE]) == 0
    assert "6 pairs of 4 images (0 already done, 6 matched" in capsys.readouterr().out
    with h5py.File(out) as f:
        assert f.attrs["pipeline"] == "sift+nn"
        feats = {n for n in NAMES if f"features/{n}" in f}
        assert feats == set(NAMES)
        g = f["matches/boat-img1.png/boat-img2.png"]  # hloc's pair key: `/` in names → `-`
        assert g.attrs["tiepoint_format"] == "matches" and "keypoints0" not in g
        assert (g.attrs["image0"], g.attrs["image1"]) == ("boat/img1.png", "boat/img2.png")
        assert f["features/boat/img1.png/descriptors"].shape[1] == len(g["matches0"])
    m = tiepoint.Matcher("sift+nn", resize=400, device="cpu")
    for a, b in itertools.combinations(NAMES, 2):
        stored, alone = read_pair(out, a, b), m.match(folder / a, folder / b)
        for k in ("keypoints0", "keypoints1", "matches", "scores"):
            np.testing.assert_array_equal(getattr(stored, k), getattr(alone, k), err_msg=k)
    assert len(read_pair(out, *NAMES[:2])) > 50  # boat 1→2: a real overlap
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))


def test_resumes_after_a_kill_and_adds_new_pairs(folder, tmp_path):
    m = tiepoint.Matcher("sift+nn", resize=400, device="cpu")
    pairs = list(itertools.combinations(NAMES, 2))
    out = tmp_path / "m.h5"
    real = m.match_pairs

    def killed_after_two(*args, **kwargs):
        for i, item in enumerate(real(*args, **kwargs)):
            if i == 2:
                raise KeyboardInterrupt
            yield item

    m.match_pairs = killed_after_two
    with pytest.raises(KeyboardInterrupt):
        match_many(m, folder, out, pairs[:4])
    assert not out.exists() and (tmp_path / "m.h5.part").exists()  # no half-written h5
    m.match_pairs = real
    s = match_many(m, folder, out, pairs[:4])
    assert (s["matched"], s["skipped"]) == (2, 2)
    s = match_many(m, folder, out, pairs)  # two more pairs: only those are matched
    assert (s["matched"], s["skipped"]) == (2, 4)
    full = tmp_path / "full.h5"
    match_many(m, folder, full, pairs)
    for a, b in pairs:
        np.testing.assert_array_equal(read_pair(out, a, b).matches, read_pair(full, a, b).matches)
    # another pipeline configuration may not add to this file
    other = tiepoint.Matcher("sift+nn", resize=300, device="cpu")
    with pytest.raises(tiepoint.errors.ConfigError, match="another pipeline configuration"):
        match_many(other, folder, out, pairs)
