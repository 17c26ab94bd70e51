"""`tiepoint export onnx --pipeline P OUT`: the extractor and matcher graphs of a sparse pipeline."""

from __future__ import annotations

from .onnx import EXPORTABLE


def cmd_export(args) -> int:
    import time

    from .onnx import export_pipeline

    t = time.perf_counter()
    out = export_pipeline(args.pipeline, args.out, overrides=args.overrides)
    print(
        f"{args.pipeline}: extractor.onnx + matcher.onnx (fixed depth) → {out} "
        f"({time.perf_counter() - t:.0f} s)"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "export",
        help="export a pipeline for deployment: `export onnx --pipeline P OUT` writes the "
        "extractor and matcher ONNX graphs (dynamic image size and keypoint count)",
    )
    p.add_argument("format", choices=["onnx"])
    p.add_argument("out", help="output folder (replaced atomically)")
    p.add_argument("--pipeline", default="aliked+lightglue", choices=list(EXPORTABLE))
    p.add_argument(
        "overrides", nargs="*", help="dotted overrides, e.g. extractor.max_num_keypoints=1024"
    )
    p.set_defaults(func=cmd_export)
