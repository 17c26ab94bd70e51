"""ZEB, GIM's zero-shot evaluation benchmark: 12 datasets of pre-sampled pose pairs (~46K).

Layout (GIM's `zeb.zip`, manual download):
    zeb/<set>/<scene>_<anything>.txt   one pair: img0 img1 covis0 covis1 K0(9) K1(9) T_0to1(16)
    zeb/<set>/<scene>_<img stem>.png   the images
As in GIM's loaders, only the first pair line of each text file is read, the scene is the text
file's name up to the first `_`, and an image name's extension is dropped before adding `.png`.

Protocol (GIM): OpenCV essential-matrix RANSAC at 0.5 px / mean focal (confidence 0.99999) on
original-resolution keypoints; pose error max(R, t); a failure counts as 180°; AUC@5° per set and
the mean over the 12 sets. Images are resized to 1024 px (long side) as in Glue Factory's ZEB
evaluation; GIM itself runs most sets at native resolution (KITTI 1240, ETH3D 1600).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ...errors import DatasetError
from ..download import Resource
from . import POSE, Benchmark, Pair, parse_floats, read_manifest
from .scannet1500 import parse_calibrated_pair

# column of the GIM README table → folder name in zeb/
SETS = {
    "GL3": "gl3d",
    "BLE": "blendedmvs",
    "ETI": "eth3di",
    "ETO": "eth3do",
    "KIT": "kitti",
    "WEA": "robotcarweather",
    "SEA": "robotcarseason",
    "NIG": "robotcarnight",
    "MUL": "multifov",
    "SCE": "scenenet",
    "ICL": "iclnuim",
    "GTA": "gtasfm",
}
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp")


def image_stem(name: str) -> str:
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_EXTENSIONS else name


def first_pair_line(path: Path):
    for src, fields in read_manifest(path, 38):
        return src, fields
    raise DatasetError(f"{path}: no pair line")


class ZEB(Benchmark):
    name = "zeb"
    tasks = (POSE,)
    resource = Resource(
        url=None,
        filename="zeb.zip",
        folder="zeb",
        instructions="download zeb.zip from the link in the GIM README (github.com/xuelunshen/gim, "
        "'ZEB' section)",
    )
    data_conf = {
        "resize": 1024,
        "side": "long",
        "sets": list(SETS.values()),
        "max_pairs_per_set": None,
    }
    eval_conf = {"estimator": "opencv", "ransac_th": 0.5, "options": {}}
    auc_thresholds = {POSE: (5, 10, 20)}
    group_summaries = True
    failure_error = 180.0
    headline = ("rel_pose_error@5°", "sets")  # mean of the per-set AUC@5°

    def _read_pairs(self) -> Iterator[Pair]:
        for name in self.conf.sets:
            folder = self.root / name
            if not folder.is_dir():
                raise DatasetError(
                    f"zeb: set folder {folder} not found (valid sets: "
                    f"{', '.join(SETS.values())}; restrict with data.sets=[...])"
                )
            files = sorted(folder.glob("*.txt"))
            if not files:
                raise DatasetError(f"zeb: no pair files (*.txt) in {folder}")
            if self.conf.max_pairs_per_set:
                files = files[: int(self.conf.max_pairs_per_set)]
            for path in files:
                src, f = first_pair_line(path)
                scene = path.stem.split("_")[0]
                K0, K1, T = parse_calibrated_pair(src, f[:2] + f[4:])
                im0 = folder / f"{scene}_{image_stem(f[0])}.png"
                im1 = folder / f"{scene}_{image_stem(f[1])}.png"
                yield Pair(
                    f"{name}/{path.stem}",
                    im0,
                    im1,
                    group=name,
                    K0=K0,
                    K1=K1,
                    T_0to1=T,
                    source=src,
                    extra=dict(
                        zip(
                            ("covisible0", "covisible1"),
                            parse_floats(f[2:4], src, "covisibility").tolist(),
                        )
                    ),
                )
