"""`tiepoint train EXP --conf CONF [key=value ...]`: run, resume or fine-tune an experiment."""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger("tiepoint")


def cmd_train(args) -> int:
    from ..config import parse_dotlist
    from .launch import train

    hook = args.benchmark_hook if args.run_benchmarks else None
    if args.run_benchmarks and hook is None:
        logger.warning("--run-benchmarks: tiepoint.evaluation is not available; skipped")
    items = list(args.overrides)
    if args.mixed_precision:
        items.append(f"train.mixed_precision={args.mixed_precision}")
    if args.device:
        items.append(f"train.device={args.device}")
    overrides = parse_dotlist(items)
    exp_dir = train(
        args.experiment,
        args.conf,
        overrides,
        restore=args.restore,
        output_dir=args.output_dir,
        distributed=args.distributed,
        num_processes=args.num_processes,
        benchmark_hook=hook,
    )
    print(f"{args.experiment}: {exp_dir}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a matcher or a dense matcher (homographies, MegaDepth, your data)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a matcher on a frozen extractor, or a dense matcher (DKM). Outputs go to "
        "OUTPUT_DIR/training/EXP/: config.yaml, log.txt,\nTensorBoard events, val_history.json, "
        "val_curves.png, checkpoint_*.tar "
        "(usable as `tiepoint match --weights`).\nDotted overrides: data.*, model.*, train.* "
        "(e.g. train.lr=1e-5 data.data_dir=/my/images).",
    )
    p.add_argument("experiment", help="experiment name (a folder under OUTPUT_DIR/training)")
    p.add_argument(
        "--conf",
        default=None,
        help="packaged training preset (e.g. aliked+lightglue_homography) or YAML file",
    )
    p.add_argument(
        "--restore",
        action="store_true",
        help="resume the experiment exactly from its last checkpoint",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over processes (NCCL on GPUs, gloo on CPU)",
    )
    p.add_argument(
        "--num-processes",
        type=int,
        default=None,
        help="with --distributed: processes (default: all GPUs, or 2 on CPU)",
    )
    p.add_argument(
        "--run-benchmarks",
        action="store_true",
        help="run the config's `benchmarks` at the start of each epoch",
    )
    p.add_argument("--mixed-precision", choices=["float16", "bfloat16"], default=None)
    p.add_argument("--device", default=None)
    p.add_argument(
        "--output-dir",
        default=None,
        help="root of outputs/ (default: $TIEPOINT_OUTPUTS or ./outputs)",
    )
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=10")
    # the benchmark hook comes from evaluation/, which training/ never imports: the top-level CLI
    # sets it (tiepoint.cli.build_parser) when the evaluation package is there
    p.set_defaults(func=cmd_train, benchmark_hook=None)
