"""`tiepoint <verb>`: match, models, weights; eval, compare, train, reconstruct, ... from feature packages.

Errors of the TiepointError family print as one line (exit 2); `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from pathlib import Path

from .errors import ConfigError, TiepointError

# feature packages that add subcommands through `register(subparsers)`
COMMAND_MODULES = [
    "tiepoint.evaluation.cli",
    "tiepoint.training.cli",
    "tiepoint.reconstruction.cli",
    "tiepoint.video.cli",
    "tiepoint.ui.cli",
    "tiepoint.evaluation.eth3d",
    "tiepoint.export.cli",
]


class SubcommandParser(argparse.ArgumentParser):
    """Lets dotted overrides (positionals) follow options: `match A B --pipeline P matcher.x=1`.

    Plain argparse stops filling positionals at the first option; a sub-parser can parse
    intermixed even though the top-level parser (which holds the sub-parsers) cannot.
    """

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def write_matches_h5(path: Path, result, meta: dict) -> None:
    """One pair's `MatchResult` at the root of an h5 file (docs/formats.md), plus `meta` attrs."""
    import h5py

    from .atomic import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        result.to_h5(f)
        for k, v in meta.items():
            f.attrs[k] = v


def cmd_match_many(args) -> int:
    """`match IMAGES OUT` / `match --pairs FILE IMAGES OUT`: many pairs into one h5 (match_many)."""
    from .api import Matcher
    from .match_many import match_many, output_file, plan

    if args.out is not None:
        raise TiepointError("matching a folder takes OUT as its second argument, not --out")
    out = output_file(args.image1)
    names, pairs = plan(args.image0, out, args.pairs)
    matcher = Matcher(
        args.pipeline,
        resize=args.resize,
        device=args.device,
        weights=args.weights,
        overrides=args.overrides,
    )
    s = match_many(matcher, args.image0, out, pairs, batch_size=args.batch_size)
    rate = s["matched"] / s["seconds"] if s["seconds"] > 0 else float("nan")
    print(
        f"{s['pairs']} pairs of {len(names)} images ({s['skipped']} already done, "
        f"{s['matched']} matched, {rate:.2f} pairs/s, {matcher.name}) → {out}"
    )
    return 0


def add_hard_pair_options(p) -> None:
    """`--rotations` / `--view-synthesis`: the pipeline's `hard_pairs` options (docs/hard_pairs.md)."""
    p.add_argument(
        "--rotations",
        default=None,
        help="try image 1 at these rotations (degrees, comma-separated multiples of 90, e.g. "
        "0,90,180,270) and keep the one with most inliers",
    )
    p.add_argument(
        "--view-synthesis",
        action="store_true",
        help="when the plain attempt finds too few inliers, also match affine-simulated views "
        "(ASIFT tilts) and merge (extreme viewpoint changes)",
    )


def hard_pair_overrides(args) -> list[str]:
    out = []
    if getattr(args, "rotations", None):
        out.append(f"hard_pairs.rotations=[{args.rotations}]")
    if getattr(args, "view_synthesis", False):
        out.append("hard_pairs.view_synthesis=true")
    return out


def cmd_match(args) -> int:
    from . import images

    if args.pairs is not None or Path(args.image0).is_dir():
        return cmd_match_many(args)
    if args.batch_size != 1:
        raise TiepointError("--batch-size applies to matching a folder or a pairs file")
    args.out = args.out or "outputs/match"
    from .api import Matcher
    from .viz.matches import DISPLAY_SIZE, plot_matches, to_display
    from .viz.warp import plot_warp

    for p in (args.image0, args.image1):
        images.read_image(p, max_size=64)  # fail fast with a clear message before loading any model
    matcher = Matcher(
        args.pipeline,
        resize=args.resize,
        device=args.device,
        weights=args.weights,
        overrides=[*args.overrides, *hard_pair_overrides(args)],
    )
    result = matcher.match(args.image0, args.image1)
    H, inliers = result.homography(estimator=args.estimator) if len(result) >= 4 else (None, None)
    model = "homography"
    if args.color_inliers == "fundamental":  # GIM's demo: inliers of an F-MAGSAC fit
        model = "fundamental-matrix"
        inliers = result.fundamental(estimator=args.estimator)[1] if len(result) >= 8 else None
    out = Path(args.out)
    stem = f"{Path(args.image0).stem}_{Path(args.image1).stem}"
    write_matches_h5(
        out / f"{stem}_matches.h5",
        result,
        {"pipeline": matcher.name, "image0": str(args.image0), "image1": str(args.image1)},
    )
    # pictures at display size: decode reduced, draw the keypoints scaled (viz.matches.to_display)
    img0, img1 = (
        to_display(images.read_image(p, max_size=DISPLAY_SIZE)[0], size)[0]
        for p, size in ((args.image0, result.image_size0), (args.image1, result.image_size1))
    )
    img0, img1 = (a.repeat(3, -1) if a.shape[-1] == 1 else a for a in (img0, img1))
    sizes = {"size0": result.image_size0, "size1": result.image_size1}
    n_in = int(inliers.sum()) if inliers is not None else 0
    title = f"{matcher.name}: {len(result)} matches, {n_in} {model} inliers"
    if result.line_matches is not None:
        title += f", {len(result.line_matches)} line matches"
    plot_matches(
        img0,
        img1,
        result.points0,
        result.points1,
        result.scores,
        inliers,
        out / f"{stem}_match.png",
        title=title,
        lines0=result.lines0,
        lines1=result.lines1,
        line_matches=result.line_matches,
        **sizes,
    )
    plot_warp(img0, img1, H, out / f"{stem}_warp.png", **sizes)
    if result.dense is not None:
        from .viz.certainty import plot_certainty

        plot_certainty(img0, img1, result.dense, out / f"{stem}_certainty.png", title=matcher.name)
    times = ", ".join(f"{k} {v:.2f}s" for k, v in result.timings.items())
    what = (
        "dense"
        if result.dense is not None
        else f"{len(result.keypoints0)}/{len(result.keypoints1)} keypoints"
    )
    print(
        f"{args.image0} ↔ {args.image1}: {what}, {len(result)} matches, {n_in} {model} inliers "
        f"({matcher.name}, {times}) → {out}/{stem}_*"
    )
    return 0


def cmd_models(args) -> int:
    from . import weights
    from .api import list_pipelines, pipeline_conf, pipeline_weights

    for name in list_pipelines():
        try:
            needed = pipeline_weights(name)
        except ImportError as e:  # a model whose code or dependency is missing here
            print(f"{name:24s} unavailable ({e})")
            continue
        except ConfigError as e:  # no official weights (e.g. aliked+lsd+gluestick): say so
            print(f"{name:24s} needs weights: {e}")
            continue
        state = (
            ", ".join(f"{w} {'✓' if weights.is_cached(w) else '✗'}" for w in needed)
            or "no weights needed"
        )
        kind = "dense " if pipeline_conf(name).get("dense") else ""
        terms = sorted(
            {weights.WEIGHTS[w].licence for w in needed if w in weights.WEIGHTS} - {None}
        )
        print(f"{name:24s} {kind}{state}" + "".join(f" [licence: {t}]" for t in terms))
    return 0


def cmd_weights(args) -> int:
    from . import weights

    if args.action == "list":
        for name, w in sorted(weights.WEIGHTS.items()):
            check = "sha256" if w.sha256 else "UNVERIFIED"  # no known checksum: accepted as is
            print(
                f"{name:22s} {'cached' if weights.is_cached(name) else 'missing':8s} {check:10s} {w.url}"
                + (f" [licence: {w.licence}]" if w.licence else "")
            )
        unverified = sorted(n for n, w in weights.WEIGHTS.items() if w.unverified)
        if unverified:
            reasons = sorted({weights.WEIGHTS[n].unverified for n in unverified})
            print(
                f"UNVERIFIED ({', '.join(unverified)}): no sha256 is recorded ({'; '.join(reasons)}),"
                " so these files are used without a checksum check"
            )
    elif args.action == "fetch":
        for name in args.names:
            print(f"{name}: {weights.resolve(name)}")
    elif args.action == "place":
        if len(args.names) != 2:
            raise TiepointError("usage: tiepoint weights place NAME FILE")
        print(f"{args.names[0]}: {weights.place(args.names[0], Path(args.names[1]))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiepoint", description="Local image feature matching.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=SubcommandParser)

    p = sub.add_parser(
        "match",
        help="match two images, write matches (h5) and pictures (dense pipelines: also the "
        "certainty and dense warp); keypoints are in the upright (EXIF-rotated, as displayed) frame. "
        "`match IMAGES OUT` matches every pair of a folder, `match --pairs FILE IMAGES OUT` those of "
        "a pairs file, into one h5 (OUT, or OUT/matches.h5), resuming after a kill",
    )
    p.add_argument("image0", help="first image, or a folder of images")
    p.add_argument("image1", help="second image, or (with a folder) the output h5 / folder")
    p.add_argument("--pipeline", default="aliked+lightglue")
    p.add_argument("--resize", type=int, default=None, help="long side in pixels (0: native)")
    p.add_argument("--out", default=None, help="output folder of a two-image match (outputs/match)")
    p.add_argument(
        "--pairs", default=None, help="pairs file, `name0 name1` a line relative to the folder"
    )
    p.add_argument(
        "--batch-size", type=int, default=1, help="pairs per padded matcher batch (LightGlue)"
    )
    p.add_argument(
        "--weights",
        default=None,
        help="matcher (or dense model) weights: registered name, file or training checkpoint",
    )
    p.add_argument("--estimator", default="opencv")
    p.add_argument(
        "--color-inliers",
        choices=["homography", "fundamental"],
        default="homography",
        help="colour matches by the inliers of a homography, or of a fundamental matrix "
        "(any 3-D scene; GIM's demo)",
    )
    p.add_argument("--device", default=None)
    add_hard_pair_options(p)
    p.add_argument(
        "overrides",
        nargs="*",
        help="dotted overrides, e.g. matcher.filter_threshold=0.2; extractor.tile=1024 extracts "
        "in tiles (native resolution within bounded memory, docs/large_images.md)",
    )
    p.set_defaults(func=cmd_match)

    p = sub.add_parser("models", help="list pipelines and whether their weights are present")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("weights", help="list | fetch NAME... | place NAME FILE")
    p.add_argument("action", choices=["list", "fetch", "place"])
    p.add_argument("names", nargs="*")
    p.set_defaults(func=cmd_weights)

    for module in COMMAND_MODULES:
        if importlib.util.find_spec(module.rsplit(".", 1)[0]) is None:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        mod.register(sub)
    if "train" in sub.choices and "eval" in sub.choices:
        # `train --run-benchmarks` evaluates checkpoints; training/ does not import evaluation/
        from .evaluation.training_hook import run_benchmarks

        sub.choices["train"].set_defaults(benchmark_hook=run_benchmarks)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="[tiepoint] %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except TiepointError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
