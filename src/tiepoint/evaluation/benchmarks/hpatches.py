"""HPatches sequences (homography): reference image 1 against images 2..6 of each sequence.

Protocol (Glue Factory / LightGlue): the 8 sequences with very large images are excluded
(108 sequences, 540 pairs), images are resized to 480 px on the short side, H is adjusted to the
resized images, and every error is in pixels of the resized images.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ...errors import DatasetError
from ..download import Resource
from . import HOMOGRAPHY, Benchmark, Pair, check_homography, parse_floats

LARGE_SEQUENCES = (
    "i_contruction",
    "i_crownnight",
    "i_dc",
    "i_pencils",
    "i_whitebuilding",
    "v_artisans",
    "v_astronautis",
    "v_talent",
)


def read_homography_file(path: Path) -> np.ndarray:  # noqa: F821
    """A 3x3 matrix written as 3 whitespace-separated rows (HPatches `H_1_k`, Oxford `H1toKp`)."""
    if not path.is_file():
        raise DatasetError(f"{path}: homography file not found")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if len(rows) != 3 or any(len(r) != 3 for r in rows):
        raise DatasetError(f"{path}: expected 3 rows of 3 numbers, got {[len(r) for r in rows]}")
    return check_homography(parse_floats(sum(rows, []), str(path), "H").reshape(3, 3), str(path))


class HPatches(Benchmark):
    name = "hpatches"
    tasks = (HOMOGRAPHY,)
    resource = Resource(
        url="https://huggingface.co/datasets/vbalnt/hpatches/resolve/main/hpatches-sequences-release.zip",
        filename="hpatches-sequences-release.zip",
        folder="hpatches-sequences-release",
        size=1279545572,
        sha256="99cf7e1ca167896eb4ca2fe3d903beff6566243a3c0c8e07a13a2596648ad670",
    )
    data_conf = {
        "resize": 480,
        "side": "short",
        "subset": None,
        "ignore_large_sequences": True,
        "protocol": None,  # dkm: DKM's protocol (evaluation/dkm_protocol.py)
    }
    protocols = {"dkm": {"resize": None}}
    dkm_auc_thresholds = (3, 5, 10)
    # Glue Factory's official LightGlue configs evaluate HPatches with OpenCV RANSAC at 0.5 px
    eval_conf = {"estimator": "opencv", "ransac_th": 0.5, "options": {}}
    eval_at_resized = True
    auc_thresholds = {HOMOGRAPHY: (1, 3, 5)}
    group_summaries = True  # i/… (illumination) and v/… (viewpoint) AUCs

    def _read_pairs(self) -> Iterator[Pair]:
        if self.conf.subset not in (None, "i", "v"):
            raise DatasetError(
                f"hpatches: data.subset must be i, v or null, got {self.conf.subset!r}"
            )
        seqs = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name[:2] in ("i_", "v_"))
        if not seqs:
            raise DatasetError(f"hpatches: no i_*/v_* sequence folders in {self.root}")
        for seq in seqs:
            if self.conf.ignore_large_sequences and seq.name in LARGE_SEQUENCES:
                continue
            if self.conf.subset and seq.name[0] != self.conf.subset:
                continue
            for k in range(2, 7):
                H = read_homography_file(seq / f"H_1_{k}")
                yield Pair(
                    f"{seq.name}/1-{k}",
                    seq / "1.ppm",
                    seq / f"{k}.ppm",
                    group=seq.name[0],
                    H_0to1=H,
                    source=str(seq / f"H_1_{k}"),
                )
