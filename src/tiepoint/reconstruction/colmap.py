"""From hloc-layout features and matches to a COLMAP model, through pycolmap 4.2.1.

Steps: a fresh database (it is derived data, rebuilt on every run), `import_images` for cameras,
keypoints shifted by +0.5 (COLMAP puts the origin at the top-left pixel corner, we put it at the
top-left pixel centre), raw matches, COLMAP's own geometric verification (which always sets the
TwoViewGeometry `config`; pycolmap ≥ 4.2 drops pairs whose config is UNDEFINED), then incremental
or global mapping. The largest model goes to `OUT/sparse/`, its points to `OUT/points.ply`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_dir, atomic_path
from ..config import unknown_name
from ..errors import ConfigError, DatasetError
from .features_io import arrays_to_matches, find_pair, read_group

log = logging.getLogger("tiepoint")

CAMERA_MODES = {
    "single": "SINGLE",
    "per-image": "PER_IMAGE",
    "per-folder": "PER_FOLDER",
    "auto": "AUTO",
}
MAPPERS = ("incremental", "global")


@dataclass
class MapperOptions:
    mapper: str = "incremental"
    camera_mode: str | None = None  # None: single if all images have one size, else per-image
    camera_model: str = "SIMPLE_RADIAL"
    camera_params: str | None = None  # e.g. "fx,fy,cx,cy" for PINHOLE: known intrinsics
    # initial focal = factor × longer side when EXIF has none (COLMAP: 1.2); one value fits images
    # stored in either orientation, where one camera_params string cannot (cx, cy swap)
    focal_length_factor: float | None = None
    refine_intrinsics: bool | None = None  # default: refine unless camera_params are given
    min_match_score: float | None = None
    min_num_inliers: int = 15
    max_error: float = 4.0  # RANSAC threshold of the verification, pixels
    num_threads: int = -1
    seed: int = 0
    verbose: bool = False
    # extra options of the pycolmap class that receives them (IncrementalPipelineOptions or
    # GlobalPipelineOptions), dotted: {"mapper.init_min_num_inliers": 50}
    extra: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.mapper not in MAPPERS:
            raise ConfigError(f"--mapper '{self.mapper}': expected one of {', '.join(MAPPERS)}")
        if self.camera_mode is not None and self.camera_mode not in CAMERA_MODES:
            raise ConfigError(
                f"--camera-mode '{self.camera_mode}': expected one of {', '.join(CAMERA_MODES)}"
            )
        check_camera(self.camera_model, self.camera_params)
        if self.focal_length_factor is not None and not self.focal_length_factor > 0:
            raise ConfigError(f"--focal-length-factor {self.focal_length_factor}: must be > 0")


def check_camera(model: str, params: str | None) -> None:
    """COLMAP only says 'Check failed: options_.Check()': name the actual problem instead."""
    import pycolmap

    models = [m for m in pycolmap.CameraModelId.__members__ if m != "INVALID"]
    if model not in models:
        raise ConfigError(f"--camera-model '{model}': expected one of {', '.join(models)}")
    if params:
        expected = [
            s.strip()
            for s in pycolmap.Camera(model=model, width=1, height=1).params_info.split(",")
        ]
        try:
            values = [float(x) for x in params.split(",")]
        except ValueError:
            raise ConfigError(f"--camera-params '{params}': not comma-separated numbers") from None
        if len(values) != len(expected):
            raise ConfigError(
                f"--camera-params '{params}': {model} takes {len(expected)} values "
                f"({', '.join(expected)}), got {len(values)}"
            )


@dataclass
class Summary:
    """What the mapper achieved, and why images are missing from the model."""

    num_images: int
    num_pairs: int
    num_verified_pairs: int
    registered: int = 0
    points: int = 0
    mean_track_length: float = 0.0
    mean_reprojection_error: float = 0.0
    num_models: int = 0
    mapper: str = "incremental"
    unregistered: dict[str, str] = field(default_factory=dict)  # name → reason
    skipped_files: dict[str, str] = field(default_factory=dict)
    model_path: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def report(self) -> str:
        lines = []
        if self.registered:
            lines.append(
                f"model: {self.registered}/{self.num_images} images registered, {self.points} points, "
                f"mean track length {self.mean_track_length:.2f}, "
                f"mean reprojection error {self.mean_reprojection_error:.3f} px ({self.mapper}) "
                f"→ {self.model_path}"
            )
        else:
            why = (
                "no image pair has enough geometrically verified matches: the images do not seem "
                "to overlap"
                if self.num_verified_pairs == 0
                else "the mapper could not initialise from the verified pairs"
            )
            lines.append(
                f"no model: {why} ({self.num_verified_pairs}/{self.num_pairs} pairs verified)"
            )
        lines.append(f"pairs: {self.num_verified_pairs}/{self.num_pairs} geometrically verified")
        if self.unregistered:
            lines.append(f"{len(self.unregistered)} image(s) not registered:")
            lines += [f"  {n}: {why}" for n, why in sorted(self.unregistered.items())]
        if self.skipped_files:
            lines.append(f"{len(self.skipped_files)} file(s) skipped:")
            lines += [f"  {n}: {why}" for n, why in sorted(self.skipped_files.items())]
        return "\n".join(lines)


@contextlib.contextmanager
def colmap_logging(log_path: Path, verbose: bool):
    """Send COLMAP's glog output to a file unless verbose (it is long and mostly irrelevant)."""
    import pycolmap

    lg = pycolmap.logging
    saved = (lg.stderrthreshold, lg.logtostderr, lg.alsologtostderr)
    try:
        if not verbose:
            lg.logtostderr = lg.alsologtostderr = False
            lg.stderrthreshold = 2  # errors only on the terminal
            lg.set_log_destination(lg.INFO, str(log_path) + ".")  # glog appends a timestamp
        yield
    finally:
        if not verbose:
            lg.set_log_destination(lg.INFO, "")
        lg.stderrthreshold, lg.logtostderr, lg.alsologtostderr = saved


def _camera_mode(name: str):
    import pycolmap

    return getattr(pycolmap.CameraMode, CAMERA_MODES[name])


def choose_camera_mode(mode: str | None, features_h5: Path, names: list[str]) -> str:
    """One shared camera needs one image size: check it before COLMAP fails image by image."""
    with h5py.File(features_h5, "r") as f:
        sizes = {n: tuple(int(x) for x in f[n]["image_size"][()]) for n in names}
    distinct = sorted(set(sizes.values()))
    if mode is None:
        mode = "single" if len(distinct) == 1 else "per-image"
        log.info("camera mode: %s (%d image size(s))", mode, len(distinct))
    if mode == "single" and len(distinct) > 1:
        examples = ", ".join(
            f"{n} {w}x{h}" for (w, h), n in {v: k for k, v in sorted(sizes.items())}.items()
        )
        raise ConfigError(
            f"--camera-mode single needs images of one size, found {len(distinct)} ({examples}); "
            "use --camera-mode per-image or per-folder"
        )
    return mode


def build_database(
    db_path: Path,
    image_dir: Path,
    names: list[str],
    features_h5: Path,
    matches_h5: Path,
    pairs: list[tuple[str, str]],
    opts: MapperOptions,
) -> dict:
    """Create the database: cameras and images, keypoints (+0.5), raw matches. Returns name → id."""
    import pycolmap

    if db_path.exists():
        db_path.unlink()
    with pycolmap.Database.open(db_path):  # creates the tables
        pass
    mode = choose_camera_mode(opts.camera_mode, features_h5, names)
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = opts.camera_model
    if opts.camera_params:
        reader.camera_params = opts.camera_params
    if opts.focal_length_factor is not None:
        reader.default_focal_length_factor = opts.focal_length_factor
    try:
        pycolmap.import_images(
            db_path, image_dir, _camera_mode(mode), image_names=names, options=reader
        )
    except (ValueError, RuntimeError) as e:  # pycolmap's failed checks
        raise ConfigError(f"COLMAP could not import the images: {str(e).splitlines()[0]}") from None
    with pycolmap.Database.open(db_path) as db:
        ids = {im.name: im.image_id for im in db.read_all_images()}
        missing = sorted(set(names) - set(ids))
        if missing:
            raise DatasetError(f"COLMAP did not import {len(missing)} image(s): {missing[:5]}")
        with pycolmap.DatabaseTransaction(db), h5py.File(features_h5, "r") as f:
            for name in tqdm(names, desc="colmap keypoints", leave=False):
                kpts = np.asarray(f[name]["keypoints"][()], np.float32)
                db.write_keypoints(ids[name], kpts + 0.5)
        with pycolmap.DatabaseTransaction(db), h5py.File(matches_h5, "r") as f:
            for a, b in tqdm(pairs, desc="colmap matches", leave=False):
                found = find_pair(f, a, b)
                if found is None:
                    continue
                m, s = arrays_to_matches(read_group(f, found[0]), reverse=found[1])
                if opts.min_match_score is not None:
                    m = m[s >= opts.min_match_score]
                db.write_matches(ids[a], ids[b], m.astype(np.uint32))
    return ids


def verify(
    db_path: Path, pairs: list[tuple[str, str]], opts: MapperOptions, chunk: int = 256
) -> dict[tuple[str, str], int]:
    """COLMAP geometric verification of `pairs`, in chunks so there is a progress bar.

    Returns the number of inlier matches of each verified pair.
    """
    import pycolmap

    vopts = pycolmap.TwoViewGeometryOptions()
    vopts.min_num_inliers = opts.min_num_inliers
    vopts.ransac.max_error = opts.max_error
    vopts.ransac.max_num_trials = 20000
    vopts.ransac.min_inlier_ratio = 0.1
    vopts.ransac.random_seed = opts.seed
    chunk = max(chunk, len(pairs) // 100)
    with tempfile.TemporaryDirectory(dir=db_path.parent) as tmp:
        pairs_txt = Path(tmp) / "pairs.txt"
        bar = tqdm(total=len(pairs), desc="verify", unit="pair")
        for s in range(0, len(pairs), chunk):
            block = pairs[s : s + chunk]
            pairs_txt.write_text("".join(f"{a} {b}\n" for a, b in block))
            pycolmap.verify_matches(db_path, pairs_txt, options=vopts)
            bar.update(len(block))
        bar.close()
    inliers: dict[tuple[str, str], int] = {}
    with pycolmap.Database.open(db_path) as db:
        id_to_name = {im.image_id: im.name for im in db.read_all_images()}
        pair_ids, geoms = db.read_two_view_geometries()
        for pid, g in zip(pair_ids, geoms):
            i, j = pycolmap.pair_id_to_image_pair(pid)
            if len(g.inlier_matches) and int(g.config) not in (0, 1):  # not UNDEFINED/DEGENERATE
                a, b = sorted((id_to_name[i], id_to_name[j]))
                inliers[(a, b)] = len(g.inlier_matches)
    return inliers


def parse_option_args(items: list[str] | None) -> dict:
    """`["mapper.init_min_num_inliers=50", ...]` → dict; values parsed as YAML (never eval)."""
    import yaml

    out = {}
    for it in items or []:
        if "=" not in it:
            raise ConfigError(f"--mapper-option '{it}' must look like key=value")
        k, v = it.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def apply_options(options, extra: dict, where: str):
    """Set dotted `extra` keys on a pycolmap options object, refusing keys it does not have.

    Checked against the class that actually receives the options (hloc validates against another
    class, so some documented keys are refused there).
    """
    for key, value in extra.items():
        obj = options
        parts = key.split(".")
        for i, part in enumerate(parts):
            valid = [a for a in dir(obj) if not a.startswith("_") and not callable(getattr(obj, a))]
            if part not in valid:
                dotted = [".".join([*parts[:i], v]) for v in valid]
                raise unknown_name(f"{where} option", key, dotted)
            if i < len(parts) - 1:
                obj = getattr(obj, part)
        try:
            setattr(obj, parts[-1], value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where} option '{key}={value}': {str(e).splitlines()[0]}") from None
    return options


def _mapper_options(opts: MapperOptions, num_images: int):
    import pycolmap

    refine = (
        opts.refine_intrinsics if opts.refine_intrinsics is not None else not opts.camera_params
    )
    if opts.mapper == "incremental":
        o = pycolmap.IncrementalPipelineOptions()
        o.num_threads = opts.num_threads
        o.random_seed = opts.seed
        o.min_model_size = min(o.min_model_size, max(2, num_images // 2))
        o.ba_refine_focal_length = refine
        o.ba_refine_extra_params = refine
        o.ba_refine_principal_point = False
        # The one initialisation default we change. COLMAP refuses initial pairs that move almost straight
        # ahead (cos > 0.95): every good pair of a drive or a walk-through video. It then starts
        # from whatever pair passes, e.g. two distant KITTI frames whose verified geometry is
        # weak, and drifts (5 % trajectory error instead of 0.05 % on kitti_seq1 with
        # ALIKED+LightGlue; SIFT found no initial pair at all). The median triangulation angle
        # check (16°) still guards the initial pair. Restore with
        # `--mapper-option mapper.init_max_forward_motion=0.95`.
        o.mapper.init_max_forward_motion = 1.0
        return apply_options(o, opts.extra, "IncrementalPipelineOptions")
    o = pycolmap.GlobalPipelineOptions()
    o.num_threads = opts.num_threads
    o.random_seed = opts.seed
    o.min_model_size = min(o.min_model_size, max(2, num_images // 2))
    ba = o.mapper.bundle_adjustment
    for attr in ("refine_focal_length", "refine_extra_params"):
        if hasattr(ba, attr):
            setattr(ba, attr, refine)
    return apply_options(o, opts.extra, "GlobalPipelineOptions")


def _largest(models: dict) -> int:
    return max((m.num_reg_images() for m in models.values()), default=0)


def run_mapping(
    db_path: Path, image_dir: Path, work_dir: Path, opts: MapperOptions, num_images: int
) -> tuple[dict, str]:
    """Map with COLMAP; returns ({index: Reconstruction}, the mapper that built them).

    Incremental mapping that leaves most images out is retried twice, each try kept only if its
    largest model is larger: first with a 4° initial triangulation angle, then with the global
    mapper. Why: COLMAP relaxes its 16° initial angle only to 8°, which the well-matched pairs of
    a forward-moving sequence never reach (1.5–6° on 11 KITTI frames), and the pairs that do pass
    are few-inlier pairs of distant frames (24–31 inliers, "17.9°", "53.8°") with wrong geometry.
    Which of those comes first hinges on a match or two: the upright frames get no model, the
    same frames with 5 of 11 EXIF-rotated a 2-image one, though their verified inliers agree
    (identical for unrotated pairs, median 5 % apart with a rotated image: re-encoded pixels).
    Retrying on "too few", not only on "none", maps both: 11/11 at 4°.
    """
    import pycolmap

    options = _mapper_options(opts, num_images)
    work_dir.mkdir(parents=True, exist_ok=True)
    if opts.mapper == "global":
        with tqdm(total=1, desc="global mapping") as bar:
            models = pycolmap.global_mapping(db_path, image_dir, work_dir, options=options)
            bar.update(1)
        return dict(models), "global"
    enough = (num_images + 1) // 2  # the model should hold at least half of the images
    models = _incremental(db_path, image_dir, work_dir / "incremental", options, num_images)
    if _largest(models) < enough and "mapper.init_min_tri_angle" not in opts.extra:
        log.info(
            "incremental mapping registered %d/%d images; retrying with a 4° initial "
            "triangulation angle",
            _largest(models),
            num_images,
        )
        options.mapper.init_min_tri_angle = 4.0
        retry = _incremental(db_path, image_dir, work_dir / "incremental-4deg", options, num_images)
        if _largest(retry) > _largest(models):
            models = retry
    if _largest(models) >= enough:
        return models, "incremental"
    log.warning(
        "incremental mapping registered only %d/%d images; trying the global mapper "
        "(choose it with --mapper global)%s",
        _largest(models),
        num_images,
        f"; --mapper-option {sorted(opts.extra)} not applied to it" if opts.extra else "",
    )
    gopts = replace(opts, mapper="global", extra={})
    with tqdm(total=1, desc="global mapping") as bar:
        fallback = dict(
            pycolmap.global_mapping(
                db_path, image_dir, work_dir / "global", options=_mapper_options(gopts, num_images)
            )
        )
        bar.update(1)
    if _largest(fallback) > _largest(models):
        return fallback, "global"
    return models, "incremental"


def _incremental(db_path, image_dir, work_dir, options, num_images) -> dict:
    import pycolmap

    work_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=num_images, desc="mapping", unit="img") as bar:
        return dict(
            pycolmap.incremental_mapping(
                db_path,
                image_dir,
                work_dir,
                options=options,
                initial_image_pair_callback=lambda: bar.update(2),
                next_image_callback=lambda: bar.update(1),
            )
        )


def write_model(rec, sparse_dir: Path, ply_path: Path) -> None:
    with atomic_dir(sparse_dir) as tmp:
        rec.write(tmp)
    with atomic_path(ply_path, suffix=".tmp.ply") as tmp:
        rec.export_PLY(tmp)


def summarize(
    models: dict,
    names: list[str],
    pairs: list[tuple[str, str]],
    verified: dict[tuple[str, str], int],
    opts: MapperOptions,
    mapper: str | None = None,
) -> tuple[Summary, object]:
    """Pick the largest model and explain every image that is not in it.

    `mapper`: the one that built `models` (run_mapping may fall back to global), default opts'.
    """
    best = max(models.values(), key=lambda r: r.num_reg_images(), default=None)
    s = Summary(
        num_images=len(names),
        num_pairs=len(pairs),
        num_verified_pairs=len(verified),
        num_models=len(models),
        mapper=mapper or opts.mapper,
    )
    registered: set[str] = set()
    if best is not None and best.num_reg_images() > 0:
        registered = {best.image(i).name for i in best.reg_image_ids()}
        s.registered = len(registered)
        s.points = best.num_points3D()
        s.mean_track_length = float(best.compute_mean_track_length()) if s.points else 0.0
        s.mean_reprojection_error = (
            float(best.compute_mean_reprojection_error()) if s.points else 0.0
        )
    degree = {n: 0 for n in names}
    for a, b in verified:
        degree[a] += 1
        degree[b] += 1
    other = {}
    for _k, rec in enumerate(models.values()):
        if rec is best:
            continue
        for i in rec.reg_image_ids():
            other[rec.image(i).name] = rec.num_reg_images()
    for n in names:
        if n in registered:
            continue
        if degree[n] == 0:
            s.unregistered[n] = "no geometrically verified pair: does not overlap any other image"
        elif n in other:
            s.unregistered[n] = f"in a separate, smaller model ({other[n]} images)"
        else:
            s.unregistered[n] = f"not registered by the mapper ({degree[n]} verified pair(s))"
    return s, best
