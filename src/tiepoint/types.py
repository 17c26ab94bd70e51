"""The result types every layer shares, `Features` and `MatchResult`, and their one h5 form.

Imports nothing of tiepoint at module level, so any module can use them. Arrays are in pixels of
the original upright image, pixel centres at integer coordinates (docs/formats.md).

On disk a result is one h5 group (the caller picks it: a file's root, a pair key, an image name)
holding the arrays of `to_arrays()` as datasets, plus attrs `tiepoint_format` and
`tiepoint_format_version`. Features use hloc's feature layout and matches hloc's per-pair
`matches0`/`matching_scores0`, so hloc-style readers can use either. Optional fields (None by
default) are written only when present and read when there; unknown datasets become `extra`.
A dense matcher's warp and certainty (`DenseResult`) form a sub-group `dense/` of a match group.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DatasetError

FORMAT_ATTR = "tiepoint_format"
VERSION_ATTR = "tiepoint_format_version"
FORMAT_VERSION = 1
TIME_PREFIX = "time_"  # timings are attrs `time_<name>` (seconds)


def write_group(group, arrays: dict[str, np.ndarray], fmt: str, attrs: dict | None = None) -> None:
    """Write `arrays` as datasets of an h5 `group` (its old datasets removed) and stamp the format."""
    import h5py

    for k in list(group.keys()):
        if isinstance(group[k], h5py.Dataset):
            del group[k]
    for k, v in arrays.items():
        group.create_dataset(k, data=v)
    group.attrs[FORMAT_ATTR] = fmt
    group.attrs[VERSION_ATTR] = FORMAT_VERSION
    for k, v in (attrs or {}).items():
        group.attrs[k] = v


def read_group(group) -> dict[str, np.ndarray]:
    """The datasets directly inside an h5 group (sub-groups skipped), as arrays."""
    import h5py

    return {k: group[k][()] for k in group if isinstance(group[k], h5py.Dataset)}


def _where(group) -> str:
    f = getattr(group, "file", None)
    return f"{getattr(f, 'filename', '?')}:{getattr(group, 'name', '?')}"


def _check_version(group) -> None:
    v = group.attrs.get(VERSION_ATTR)
    if v is not None and int(v) > FORMAT_VERSION:
        raise DatasetError(
            f"{_where(group)}: format version {int(v)} is newer than this tiepoint reads "
            f"({FORMAT_VERSION}); upgrade tiepoint"
        )


def _opt(a, dtype) -> np.ndarray | None:
    return None if a is None else np.asarray(a, dtype)


# ------------------------------------------------------------------------------------ features
@dataclass
class Features:
    """Local features of one image, in original-image pixels."""

    keypoints: np.ndarray  # (N, 2) float32, x right, y down
    keypoint_scores: np.ndarray  # (N,) float32
    descriptors: np.ndarray  # (N, D) float32
    image_size: tuple[int, int]  # (W, H) of the original image
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. SIFT `scales`, `oris`
    lines: np.ndarray | None = None  # (L, 2, 2) float32 segment end points
    line_scores: np.ndarray | None = None  # (L,) float32

    FORMAT = "features"
    OPTIONAL = ("lines", "line_scores")
    # stored name ← attribute: hloc calls the keypoint scores `scores`
    CORE = ("keypoints", "descriptors", "scores", "image_size")

    def __len__(self) -> int:
        return len(self.keypoints)

    def to_data(self, suffix: str, device) -> dict:
        """Matcher input keys with a batch dimension (`keypoints0`, `descriptors0`, `image_size0`, ...)."""
        import torch

        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
        data = {
            f"keypoints{suffix}": t(self.keypoints).float(),
            f"keypoint_scores{suffix}": t(self.keypoint_scores).float(),
            f"descriptors{suffix}": t(self.descriptors).float(),
            f"image_size{suffix}": torch.tensor(
                [self.image_size], dtype=torch.float32, device=device
            ),
        }
        for k, v in self.extra.items():
            data[f"{k}{suffix}"] = t(v).float()
        for k in self.OPTIONAL:
            if getattr(self, k) is not None:
                data[f"{k}{suffix}"] = t(getattr(self, k)).float()
        return data

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The datasets of one feature group (hloc layout: descriptors transposed to (D, N))."""
        kpts = np.asarray(self.keypoints, dtype=np.float32).reshape(-1, 2)
        desc = np.asarray(self.descriptors, dtype=np.float32)
        if desc.ndim != 2 or len(desc) != len(kpts):
            raise ValueError(f"descriptors of shape {desc.shape} for {len(kpts)} keypoints")
        out = {
            "keypoints": kpts,
            "descriptors": np.ascontiguousarray(desc.T),
            "scores": np.asarray(self.keypoint_scores, dtype=np.float32).reshape(-1),
            "image_size": np.asarray(self.image_size, dtype=np.int64).reshape(2),
        }
        if self.lines is not None:
            out["lines"] = np.asarray(self.lines, np.float32).reshape(-1, 2, 2)
        if self.line_scores is not None:
            out["line_scores"] = np.asarray(self.line_scores, np.float32).reshape(-1)
        for k, v in self.extra.items():
            v = np.asarray(v)
            if k in out or k == "keypoint_scores" or v.dtype == object:
                continue
            out[k] = v.astype(np.float32) if v.dtype == np.float64 else v
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str = "features") -> Features:
        """Inverse of `to_arrays`; also reads hloc's files (no scores: all ones)."""
        missing = [k for k in ("keypoints", "descriptors", "image_size") if k not in arrays]
        if missing:
            raise DatasetError(f"{where}: feature group lacks {missing}")
        kpts = np.asarray(arrays["keypoints"], dtype=np.float32).reshape(-1, 2)
        scores = arrays.get("scores", arrays.get("keypoint_scores"))
        skip = set(cls.CORE) | set(cls.OPTIONAL) | {"keypoint_scores"}
        size = np.asarray(arrays["image_size"]).reshape(2)
        return cls(
            keypoints=kpts,
            keypoint_scores=(
                np.ones(len(kpts), np.float32) if scores is None else np.asarray(scores, np.float32)
            ),
            descriptors=np.ascontiguousarray(np.asarray(arrays["descriptors"], np.float32).T),
            image_size=(int(size[0]), int(size[1])),
            extra={k: np.asarray(v) for k, v in arrays.items() if k not in skip},
            lines=_opt(arrays.get("lines"), np.float32),
            line_scores=_opt(arrays.get("line_scores"), np.float32),
        )

    def to_h5(self, group) -> None:
        write_group(group, self.to_arrays(), self.FORMAT)

    @classmethod
    def from_h5(cls, group) -> Features:
        _check_version(group)
        return cls.from_arrays(read_group(group), where=_where(group))


# ------------------------------------------------------------------------------------ matches
@dataclass
class DenseResult:
    """A dense matcher's output for one pair, kept as the model gave it (DKM's convention).

    `warp` (H, W, 4) float32: each cell holds a match (x0, y0, x1, y1), coordinates normalised to
    [-1, 1] over each image with align_corners=False: −1 is the left (top) edge of the first
    pixel, +1 the right (bottom) edge of the last, so a W-pixel image's pixel centres sit at
    −1 + (2i + 1)/W. `tiepoint.models.dense.sampling.to_pixel_coordinates` turns them into pixels
    of the original image (centres at integers). The grid is the model's output grid, not the
    image's pixels. A symmetric model (DKM's default) concatenates both directions along the
    width, as DKM does: W = 2·Wg, the left half a grid over image 0 ((x0, y0) the cell centres,
    (x1, y1) where they land in image 1), the right half a grid over image 1 in the same
    (x0, y0, x1, y1) order ((x1, y1) the cell centres).
    `certainty` (H, W) float32 in [0, 1]: the model's confidence in each cell's match.
    """

    warp: np.ndarray
    certainty: np.ndarray

    FORMAT = "dense"
    GROUP = "dense"  # the sub-group of a match group, and the `dense/` prefix in `to_arrays`

    def __post_init__(self):
        self.warp = np.asarray(self.warp, np.float32)
        self.certainty = np.asarray(self.certainty, np.float32)
        if self.warp.ndim != 3 or self.warp.shape[-1] != 4:
            raise ValueError(f"dense warp of shape {self.warp.shape}, expected (H, W, 4)")
        if self.certainty.shape != self.warp.shape[:2]:
            raise ValueError(
                f"dense certainty of shape {self.certainty.shape} for a warp of {self.warp.shape}"
            )

    @property
    def symmetric(self) -> bool:
        """Whether the warp holds both directions (DKM's symmetric layout): its left half's
        (x0, y0) are exactly the cell centres of a grid half as wide."""
        h, w = self.warp.shape[:2]
        if w % 2:
            return False
        return _is_grid(self.warp[:, : w // 2, :2]) and not _is_grid(self.warp[..., :2])

    def grid0(self) -> tuple[np.ndarray, np.ndarray]:
        """The part of (warp, certainty) that is a grid over image 0 (the left half if symmetric)."""
        if self.symmetric:
            w = self.warp.shape[1] // 2
            return self.warp[:, :w], self.certainty[:, :w]
        return self.warp, self.certainty


def _is_grid(xy: np.ndarray, tol: float = 1e-4) -> bool:
    h, w = xy.shape[:2]
    xs = -1 + (2 * np.arange(w) + 1) / w
    ys = -1 + (2 * np.arange(h) + 1) / h
    return bool(
        np.abs(xy[..., 0] - xs[None]).max(initial=0) < tol
        and np.abs(xy[..., 1] - ys[:, None]).max(initial=0) < tol
    )


def matches_from_arrays(
    arrays: dict[str, np.ndarray], where: str = "matches"
) -> tuple[np.ndarray, np.ndarray]:
    """(K,2) int64 index pairs and (K,) float32 scores of a match group.

    Reads hloc's `matches0` (−1: unmatched) + `matching_scores0`, and the (K,2) `matches` +
    `scores` that the evaluation runner wrote before format version 1.
    """
    if "matches0" in arrays:
        m0 = np.asarray(arrays["matches0"]).astype(np.int64).reshape(-1)
        idx = np.flatnonzero(m0 != -1)
        s0 = arrays.get("matching_scores0")
        scores = np.ones(len(m0), np.float32) if s0 is None else np.asarray(s0, np.float32)
        return np.stack([idx, m0[idx]], -1), scores.reshape(-1)[idx]
    if "matches" in arrays:  # before version 1
        m = np.asarray(arrays["matches"]).astype(np.int64).reshape(-1, 2)
        return m, np.asarray(arrays.get("scores", np.ones(len(m))), np.float32).reshape(-1)
    raise DatasetError(f"{where}: no `matches0` dataset")


@dataclass
class MatchResult:
    """Correspondences between two images."""

    keypoints0: np.ndarray  # (N0, 2)
    keypoints1: np.ndarray  # (N1, 2)
    matches: np.ndarray  # (K, 2) int64 indices into keypoints0 / keypoints1
    scores: np.ndarray  # (K,) confidence in [0, 1]
    image_size0: tuple[int, int]
    image_size1: tuple[int, int]
    timings: dict[str, float] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    # lines (L, 2, 2) of each image and their matches (Kl, 2) / scores (Kl,)
    lines0: np.ndarray | None = None
    lines1: np.ndarray | None = None
    line_matches: np.ndarray | None = None
    line_scores: np.ndarray | None = None
    # dense matchers: the warp and certainty the matches were sampled from
    dense: DenseResult | None = None

    FORMAT = "matches"
    OPTIONAL = ("lines0", "lines1", "line_matches", "line_scores")
    CORE = (
        "keypoints0",
        "keypoints1",
        "matches0",
        "matching_scores0",
        "image_size0",
        "image_size1",
    )
    _DTYPES = {
        "lines0": np.float32,
        "lines1": np.float32,
        "line_matches": np.int64,
        "line_scores": np.float32,
    }

    @property
    def points0(self) -> np.ndarray:
        return self.keypoints0[self.matches[:, 0]]

    @property
    def points1(self) -> np.ndarray:
        return self.keypoints1[self.matches[:, 1]]

    def __len__(self) -> int:
        return len(self.matches)

    def to_arrays(self, keypoints: bool = True) -> dict[str, np.ndarray]:
        """The datasets of one match group; `keypoints=False` leaves the keypoints to features.h5.

        Matches are stored per keypoint of image 0 (hloc's `matches0`), so a keypoint of image 0
        may match at most once; reading back gives the matches sorted by that index. A dense
        result is under the keys `dense/warp`, `dense/certainty` (the h5 sub-group `dense/`).
        """
        n0 = len(self.keypoints0)
        m = np.asarray(self.matches, np.int64).reshape(-1, 2)
        s = np.asarray(self.scores, np.float32).reshape(-1)
        if len(s) != len(m):
            raise ValueError(f"{len(m)} matches but {len(s)} scores")
        if len(m) and (m.min() < 0 or m[:, 0].max() >= n0 or m[:, 1].max() >= len(self.keypoints1)):
            raise ValueError("match indices outside the keypoints")
        if len(np.unique(m[:, 0])) != len(m):
            raise ValueError("a keypoint of image 0 is matched twice; matches0 cannot store it")
        matches0 = np.full(n0, -1, dtype=np.int32)
        scores0 = np.zeros(n0, dtype=np.float32)
        matches0[m[:, 0]] = m[:, 1]
        scores0[m[:, 0]] = s
        out = {}
        if keypoints:
            out["keypoints0"] = np.asarray(self.keypoints0, np.float32).reshape(-1, 2)
            out["keypoints1"] = np.asarray(self.keypoints1, np.float32).reshape(-1, 2)
        out |= {
            "matches0": matches0,
            "matching_scores0": scores0,
            "image_size0": np.asarray(self.image_size0, np.int64).reshape(2),
            "image_size1": np.asarray(self.image_size1, np.int64).reshape(2),
        }
        for k in self.OPTIONAL:
            if getattr(self, k) is not None:
                out[k] = np.asarray(getattr(self, k), self._DTYPES[k])
        if self.dense is not None:
            out[f"{DenseResult.GROUP}/warp"] = self.dense.warp
            out[f"{DenseResult.GROUP}/certainty"] = self.dense.certainty
        for k, v in self.extra.items():
            if k not in out and k not in ("matches", "scores"):
                out[k] = np.asarray(v)
        return out

    @classmethod
    def from_arrays(
        cls,
        arrays: dict[str, np.ndarray],
        keypoints0: np.ndarray | None = None,
        keypoints1: np.ndarray | None = None,
        attrs: dict | None = None,
        where: str = "matches",
    ) -> MatchResult:
        """Inverse of `to_arrays`; keypoints not stored in the group must be given."""
        attrs = attrs or {}
        kp = []
        for i, given in enumerate((keypoints0, keypoints1)):
            a = given if given is not None else arrays.get(f"keypoints{i}")
            if a is None:
                raise DatasetError(f"{where}: no keypoints{i} stored or given")
            kp.append(np.asarray(a, np.float32).reshape(-1, 2))
        m, s = matches_from_arrays(arrays, where)
        sizes = []
        for i in (0, 1):
            size = arrays.get(f"image_size{i}", attrs.get(f"image_size{i}"))
            if size is None:
                raise DatasetError(f"{where}: no image_size{i}")
            size = np.asarray(size).reshape(2)
            sizes.append((int(size[0]), int(size[1])))
        skip = set(cls.CORE) | set(cls.OPTIONAL) | {"matches", "scores"}
        prefix = f"{DenseResult.GROUP}/"
        dense = {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
        skip |= {prefix + k for k in dense}
        if dense and set(dense) != {"warp", "certainty"}:
            raise DatasetError(f"{where}: dense group holds {sorted(dense)}, not warp + certainty")
        try:
            dense = DenseResult(dense["warp"], dense["certainty"]) if dense else None
        except ValueError as e:
            raise DatasetError(f"{where}: {e}") from None
        timings = {
            k[len(TIME_PREFIX) :]: float(v) for k, v in attrs.items() if k.startswith(TIME_PREFIX)
        }
        return cls(
            kp[0],
            kp[1],
            m,
            s,
            sizes[0],
            sizes[1],
            timings=timings,
            extra={k: np.asarray(v) for k, v in arrays.items() if k not in skip},
            **{k: _opt(arrays.get(k), cls._DTYPES[k]) for k in cls.OPTIONAL},
            dense=dense,
        )

    def to_h5(self, group, keypoints: bool = True) -> None:
        """Write into an h5 group (a file's root, or a group the caller named); timings as attrs.

        The dense result, if any, goes to the sub-group `dense/` (an old one is replaced or removed).
        """
        attrs = {f"{TIME_PREFIX}{k}": float(v) for k, v in self.timings.items()}
        arrays = self.to_arrays(keypoints)
        prefix = f"{DenseResult.GROUP}/"
        dense = {k[len(prefix) :]: arrays.pop(k) for k in list(arrays) if k.startswith(prefix)}
        old = group.get(DenseResult.GROUP)
        if old is not None and old.attrs.get(FORMAT_ATTR) == DenseResult.FORMAT:
            del group[DenseResult.GROUP]
        write_group(group, arrays, self.FORMAT, attrs)
        if dense:
            write_group(group.create_group(DenseResult.GROUP), dense, DenseResult.FORMAT)

    @classmethod
    def from_h5(cls, group, keypoints0=None, keypoints1=None) -> MatchResult:
        _check_version(group)
        arrays = read_group(group)
        sub = group.get(DenseResult.GROUP)
        if sub is not None and sub.attrs.get(FORMAT_ATTR) == DenseResult.FORMAT:
            _check_version(sub)
            arrays |= {f"{DenseResult.GROUP}/{k}": v for k, v in read_group(sub).items()}
        return cls.from_arrays(
            arrays, keypoints0, keypoints1, dict(group.attrs), where=_where(group)
        )

    def homography(self, estimator: str = "opencv", threshold: float | None = None, **options):
        """Robust homography mapping image 0 to image 1: (H or None, inlier mask (K,)).

        With OpenCV this defaults to MAGSAC++ (`method="usac_magsac"`), its most accurate method;
        benchmarks keep Glue Factory's plain RANSAC so their numbers stay comparable.
        """
        from .estimators import estimate_homography  # a floor above: imported on use

        if estimator == "opencv":
            options.setdefault("method", "usac_magsac")

        est = estimate_homography(
            self.points0, self.points1, estimator=estimator, threshold=threshold, **options
        )
        return est.H, est.inliers

    def fundamental(self, estimator: str = "opencv", threshold: float | None = None, **options):
        """Robust fundamental matrix (x1ᵀ F x0 = 0): (F or None, inlier mask (K,)).

        Needs no intrinsics, so it filters matches of any video or photo pair (GIM's labels and
        demo); OpenCV uses MAGSAC++ with GIM's confidence 0.999999.
        """
        from .estimators import estimate_fundamental

        est = estimate_fundamental(
            self.points0, self.points1, estimator=estimator, threshold=threshold, **options
        )
        return est.F, est.inliers

    def relative_pose(
        self, K0, K1, estimator: str = "opencv", threshold: float | None = None, **options
    ):
        """Robust relative pose X1 = R·X0 + t (t unit length): (R or None, t or None, inlier mask)."""
        from .estimators import estimate_relative_pose

        est = estimate_relative_pose(
            self.points0,
            self.points1,
            np.asarray(K0),
            np.asarray(K1),
            estimator=estimator,
            threshold=threshold,
            **options,
        )
        return est.R, est.t, est.inliers


__all__ = ["Features", "MatchResult", "DenseResult", "matches_from_arrays", "FORMAT_VERSION"]
