"""ZEB, GIM's zero-shot evaluation benchmark: 12 datasets of pre-sampled pose pairs (~46K).

Layout (GIM's `zeb.zip`, manual download):
    zeb/<set>/<scene>_<anything>.txt   one pair: img0 img1 covis0 covis1 K0(9) K1(9) T_0to1(16)
    zeb/<set>/<scene>_<img stem>.png   the images
As in GIM's loaders (`GIM:datasets/*/`), only the first pair line of each text file is read, the
scene is the text file's name up to the first `_` (GL3D, BlendedMVS, RobotCar) or `-` (the other
sets: their scene names contain `_`), and an image name's extension is dropped before adding
`.png`. Each pair also carries GIM's identifier (`scene#name0#name1`, the key of GIM's dumps).

Protocol (GIM): OpenCV essential-matrix RANSAC at 0.5 px / mean focal (confidence 0.99999) on
original-resolution keypoints; pose error max(R, t); a failure counts as 180°; AUC@5° per set and
the mean over the 12 sets. Images are resized to 1024 px (long side) as in Glue Factory's ZEB
evaluation; `data.protocol=gim` runs them as GIM does: native resolution, long side capped at
1240 (KITTI) and 1600 (ETH3D), every other set's sides floored to a multiple of 8 (sparse
pipelines; a dense model resizes to its own input size). GIM's dump files and analysis:
`evaluation/zeb_gim.py`.
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
# GIM's loaders split the scene off the pair file's name at '_' for these sets, at '-' otherwise
UNDERSCORE_SETS = ("gl3d", "blendedmvs", "robotcarweather", "robotcarseason", "robotcarnight")
# how GIM's loaders spell an image in the identifier (`pair_names`), from the name in the file
GIM_NAME = {
    "eth3di": lambda n: image_stem(n) + ".JPG",
    "eth3do": lambda n: image_stem(n) + ".JPG",
    "kitti": lambda n: image_stem(n) + ".png",
    "multifov": lambda n: f"img/{n}.png",
    "scenenet": lambda n: n + ".jpg",
    "iclnuim": lambda n: n + ".jpg",
}
GIM_MAX_SIZE = {"kitti": 1240, "eth3di": 1600, "eth3do": 1600}  # GIM's TEST_*.sh --img_size
GIM_MULTIPLE = 8  # GIM's other loaders floor each side to a multiple of 8 (no cap)


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
        "protocol": None,  # gim: GIM's input sizes (native; KITTI 1240, ETH3D 1600)
    }
    protocols = {"gim": {"resize": None}}
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
            gim = self.conf.get("protocol") == "gim"
            for path in files:
                src, f = first_pair_line(path)
                sep = "_" if name in UNDERSCORE_SETS else "-"
                scene = path.stem.split(sep)[0]
                K0, K1, T = parse_calibrated_pair(src, f[:2] + f[4:])
                im0 = folder / f"{scene}{sep}{image_stem(f[0])}.png"
                im1 = folder / f"{scene}{sep}{image_stem(f[1])}.png"
                yield Pair(
                    f"{name}/{path.stem}",
                    im0,
                    im1,
                    group=name,
                    K0=K0,
                    K1=K1,
                    T_0to1=T,
                    source=src,
                    extra={
                        **dict(
                            zip(
                                ("covisible0", "covisible1"),
                                parse_floats(f[2:4], src, "covisibility").tolist(),
                            )
                        ),
                        "identifier": gim_identifier(name, scene, f[0], f[1]),
                        **(gim_input(name) if gim else {}),
                    },
                )


def gim_input(zeb_set: str) -> dict:
    """GIM's input size for a set, as `Pair.extra` the matching step reads: KITTI/ETH3D long side
    capped (`max_size`), the other sets native with each side floored to ×8 (`multiple`)."""
    if zeb_set in GIM_MAX_SIZE:
        return {"max_size": GIM_MAX_SIZE[zeb_set]}
    return {"multiple": GIM_MULTIPLE}


def gim_identifier(zeb_set: str, scene: str, name0: str, name1: str) -> str:
    """GIM's pair identifier `scene#name0#name1`, spelled as its loader for the set spells it."""
    spell = GIM_NAME.get(zeb_set, image_stem if zeb_set in UNDERSCORE_SETS[:2] else str)
    return "#".join([scene, spell(name0), spell(name1)])
