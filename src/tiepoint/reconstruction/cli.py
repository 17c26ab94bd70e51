"""`tiepoint reconstruct | pairs | extract | match-pairs`: SfM from a folder, or its steps one by one."""

from __future__ import annotations

import argparse

from .executors import parse_shard


def _common(p: argparse.ArgumentParser, matching: bool = True) -> None:
    p.add_argument("images", help="folder of images (searched recursively)")
    p.add_argument("out", help="output folder (features.h5, matches.h5, pairs.txt, sparse/, ...)")
    if not matching:
        return
    p.add_argument("--pipeline", default="aliked+lightglue", help="extractor+matcher preset")
    p.add_argument("--resize", type=int, default=None, help="long side in pixels (0: native)")
    p.add_argument("--device", default=None)
    p.add_argument("--weights", default=None, help="matcher weights: name, file or checkpoint")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--ray-address", default=None, help="existing Ray cluster (default: start one)")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    p.add_argument(
        "--dense-cell",
        type=float,
        default=2.0,
        help="dense pipelines: grid cell (px) on which matches merge into keypoints (default 2)",
    )
    p.add_argument(
        "--shard",
        default=None,
        metavar="i/N",
        help="do only block i of N of the work (batch-scheduler arrays); "
        "finish with a run without --shard",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides right after OUT, e.g. matcher.filter_threshold=0.2",
    )


def _pairs_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pairs",
        default="exhaustive",
        help="exhaustive | sequential:N | retrieval:K (default: exhaustive)",
    )


def _positive(value: float, flag: str) -> float:
    if not value > 0:
        from ..errors import ConfigError

        raise ConfigError(f"{flag} {value}: must be > 0")
    return value


def _options(args):
    from .colmap import MapperOptions
    from .pipeline import Options

    mapper = MapperOptions()
    for key in (
        "mapper",
        "camera_mode",
        "camera_model",
        "camera_params",
        "focal_length_factor",
        "min_match_score",
        "verbose",
    ):
        if getattr(args, key, None) is not None:
            setattr(mapper, key, getattr(args, key))
    if getattr(args, "mapper_option", None):
        from .colmap import parse_option_args

        mapper.extra = parse_option_args(args.mapper_option)
    return Options(
        pipeline=args.pipeline,
        resize=args.resize,
        device=args.device,
        weights=args.weights,
        overrides=list(args.overrides or []),
        pairs=getattr(args, "pairs", "exhaustive"),
        executor=args.executor,
        ray_address=args.ray_address,
        workers=args.workers,
        shard=parse_shard(args.shard),
        dense_cell=_positive(getattr(args, "dense_cell", 2.0), "--dense-cell"),
        mapper=mapper,
    )


def _print_stage(name: str, s) -> None:
    msg = f"{name}: {s.computed} computed, {s.already_done} already done, of {s.total}"
    if s.failed:
        msg += f"; {len(s.failed)} failed: " + "; ".join(f"{k}: {v}" for k, v in s.failed.items())
    print(f"{msg} ({s.seconds:.1f}s)")


def cmd_reconstruct(args) -> int:
    from .pipeline import Reconstruction

    with Reconstruction(args.images, args.out, _options(args)) as r:
        if r.images.skipped:
            print(f"skipped {len(r.images.skipped)} file(s): {r.images.report_skipped()}")
        summary, stats = r.run()
    for k, s in stats.items():
        _print_stage(k, s)
    if summary is None:
        print(f"shard {args.shard} done; run the same command without --shard to merge and map")
        return 0
    print(summary.report())
    return 0 if summary.registered else 1


def cmd_extract(args) -> int:
    from .pipeline import Reconstruction

    with Reconstruction(args.images, args.out, _options(args)) as r:
        if r.images.skipped:
            print(f"skipped {len(r.images.skipped)} file(s): {r.images.report_skipped()}")
        _print_stage("extract", r.extract())
    return 0


def cmd_pairs(args) -> int:
    from pathlib import Path

    from . import pairs as P
    from .inputs import list_images, require_images

    spec = P.PairSpec.parse(args.pairs)
    images = list_images(args.images, exclude=[args.out])
    require_images(images)
    if spec.kind == "retrieval":
        from .pipeline import Reconstruction

        with Reconstruction(args.images, args.out, _options(args)) as r:
            pairs = r.make_pairs()
    else:
        fn = P.exhaustive if spec.kind == "exhaustive" else (lambda n: P.sequential(n, spec.n))
        pairs = fn(images.names)
    path = P.write_pairs(Path(args.output) if args.output else Path(args.out) / "pairs.txt", pairs)
    print(f"{len(pairs)} pairs ({spec}) of {len(images.names)} images → {path}")
    return 0


def cmd_match_pairs(args) -> int:
    from pathlib import Path

    from . import pairs as P
    from .pipeline import Reconstruction

    pairs_file = Path(args.pairs_file) if args.pairs_file else Path(args.out) / "pairs.txt"
    with Reconstruction(args.images, args.out, _options(args)) as r:
        pairs = P.canonical(P.read_pairs(pairs_file), r.images.names)
        _print_stage("match", r.match(pairs))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("reconstruct", help="folder of images → COLMAP model (SfM)")
    _common(p)
    _pairs_arg(p)
    p.add_argument(
        "--mapper",
        choices=["incremental", "global"],
        default="incremental",
        help="incremental retries at a 4° initial triangulation angle, then falls back to global "
        "(with a warning), when its model holds under half of the images",
    )
    p.add_argument(
        "--camera-mode",
        choices=["single", "per-image", "per-folder", "auto"],
        default=None,
        help="one camera for all images, or one per image/folder "
        "(default: single when all images have the same size, else per-image)",
    )
    p.add_argument("--camera-model", default="SIMPLE_RADIAL", help="COLMAP camera model")
    p.add_argument(
        "--camera-params",
        default=None,
        help="known intrinsics in the model's order, e.g. 'fx,fy,cx,cy' for PINHOLE",
    )
    p.add_argument(
        "--focal-length-factor",
        type=float,
        default=None,
        help="initial focal length = factor × the longer image side, for images without EXIF "
        "focal length (COLMAP's default 1.2); unlike --camera-params it fits rotated images too",
    )
    p.add_argument("--min-match-score", type=float, default=None)
    p.add_argument(
        "--mapper-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option of pycolmap's Incremental/GlobalPipelineOptions, e.g. "
        "mapper.init_min_num_inliers=50 (repeatable)",
    )
    p.add_argument("--verbose", action="store_true", help="show COLMAP's log")
    p.set_defaults(func=cmd_reconstruct)

    p = subparsers.add_parser(
        "extract", help="extract local features of a folder → OUT/features.h5"
    )
    _common(p)
    p.set_defaults(func=cmd_extract)

    p = subparsers.add_parser("pairs", help="pair list of a folder → OUT/pairs.txt")
    _common(p)
    _pairs_arg(p)
    p.add_argument("--output", default=None, help="pairs file (default OUT/pairs.txt)")
    p.set_defaults(func=cmd_pairs)

    p = subparsers.add_parser(
        "match-pairs", help="match the pairs of a pairs file → OUT/matches.h5"
    )
    _common(p)
    p.add_argument("--pairs-file", default=None, help="default OUT/pairs.txt")
    p.set_defaults(func=cmd_match_pairs)
