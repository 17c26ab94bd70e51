"""`tiepoint eval`, `tiepoint compare` and `tiepoint download` subcommands."""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from .benchmarks import BENCHMARKS
from .run_conf import parse_ransac_th


def _ransac_th(value: str):
    try:
        return parse_ransac_th(value)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_eval(args) -> int:
    from ..reconstruction.executors import parse_shard
    from .runner import format_summaries, run

    summaries, out = run(
        args.benchmark,
        args.pipeline,
        estimator=args.estimator,
        ransac_th=args.ransac_th,
        tag=args.tag,
        overwrite=args.overwrite,
        overrides=args.overrides,
        output_dir=args.output_dir,
        data_root=args.data_root,
        device=args.device,
        weights=args.weights,
        download=args.download,
        executor=args.executor,
        shard=parse_shard(args.shard),
        workers=args.workers,
        ray_address=args.ray_address,
    )
    if summaries is None:
        print(
            f"shard {args.shard} done; pairs of other shards are still missing: run them, then "
            f"`tiepoint eval` again (without --shard) evaluates → {out}"
        )
        return 0
    print(f"{args.benchmark} / {out.name} (AUCs and precisions in %):")
    print(format_summaries(summaries, groups=args.groups))
    print(f"→ {out}")
    return 0


def cmd_compare(args) -> int:
    from .compare import compare

    table, png = compare(
        args.benchmark,
        args.tags,
        output_dir=args.output_dir,
        keys=args.keys,
        groups=args.groups,
        out=args.out,
    )
    print(table)
    print(f"→ {png}")
    return 0


def cmd_download(args) -> int:
    from ..errors import DatasetError
    from .benchmarks import get_benchmark
    from .download import data_root, fetch_dataset

    bench = get_benchmark(args.benchmark)
    if bench.resource is None:
        raise DatasetError(f"{args.benchmark} needs no download (it reads your own pairs files)")
    root = args.data_root or data_root()
    print(f"{args.benchmark}: {fetch_dataset(bench.resource, root)}")
    return 0


def cmd_zeb_analysis(args) -> int:
    from .zeb_gim import analyse, format_analysis, models_in

    runs = [(args.model, args.version)] if args.model else models_in(args.dump_dir)
    if args.model and not args.version:
        runs = [(m, v) for m, v in models_in(args.dump_dir) if m == args.model] or runs
    rows = {f"{m} {v}": analyse(args.dump_dir, m, v) for m, v in runs}
    if not rows:
        from ..errors import DatasetError

        raise DatasetError(f"{args.dump_dir}: no '[T] MODEL SET VERSION.txt' ZEB dump files")
    print("ZEB AUC@5° (%), GIM's analysis:")
    print(format_analysis(rows))
    return 0


def cmd_zeb_dump(args) -> int:
    from pathlib import Path

    from .benchmarks import get_benchmark
    from .run_conf import load_conf
    from .zeb_gim import dumps_from_run

    run = Path(args.run_dir)
    conf = load_conf(run / "conf.yaml")
    if conf is None or conf.get("benchmark") != "zeb":
        from ..errors import DatasetError

        raise DatasetError(f"{run}: not a ZEB run folder (conf.yaml with benchmark: zeb)")
    pairs = get_benchmark("zeb", conf["data"]).load_pairs()
    for p in dumps_from_run(pairs, run / "predictions.h5", args.dump_dir, args.model, args.version):
        print(f"→ {p}")
    return 0


def register(subparsers) -> None:
    names = ", ".join(BENCHMARKS)
    p = subparsers.add_parser(
        "eval",
        help=f"evaluate a pipeline on a benchmark ({names})",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a pipeline; results go to "
        "OUTPUT_DIR/results/BENCH/TAG/{conf.yaml,predictions.h5,results.h5,"
        "summaries.json,*.png}.\nDotted overrides: model keys "
        "(matcher.filter_threshold=0.2), data.* (data.max_pairs=10) and eval.*.",
    )
    p.add_argument("benchmark", help=names)
    p.add_argument(
        "--pipeline", required=True, help="pipeline preset (e.g. aliked+lightglue) or YAML file"
    )
    p.add_argument(
        "--estimator",
        default=None,
        help="opencv | poselib | pycolmap | point_line (homographies with lines; default: the benchmark's)",
    )
    p.add_argument(
        "--ransac-th",
        type=_ransac_th,
        default=None,
        help="inlier threshold in pixels; -1 sweeps 0.5..3 and reports the best; sweep6: "
        "0.5..6 in 0.5 steps (Descriptor Reasoning's grid); or a comma-separated list",
    )
    p.add_argument(
        "--tag", default=None, help="name of the run (default: from pipeline and options)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace predictions made with another config"
    )
    p.add_argument(
        "--output-dir",
        default=None,
        help="root of outputs/ (default: $TIEPOINT_OUTPUTS or ./outputs)",
    )
    p.add_argument(
        "--data-root", default=None, help="dataset folder (default: $TIEPOINT_DATA/<dataset>)"
    )
    p.add_argument("--download", action="store_true", help="download the dataset if it is missing")
    p.add_argument(
        "--weights", default=None, help="matcher weights: registered name, file or checkpoint"
    )
    p.add_argument("--device", default=None)
    p.add_argument("--groups", action="store_true", help="also print per-group (scene/set) AUCs")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default=None,
        help="run the export on reconstruction's executors (part files, merged in pair order)",
    )
    p.add_argument("--shard", default=None, help="i/N: match only the i-th block of the pairs")
    p.add_argument("--workers", type=int, default=None, help="Ray workers (default: one a CPU)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster")
    p.add_argument("overrides", nargs="*", help="dotted overrides")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "compare", help="compare runs of a benchmark: table + cumulative curves"
    )
    p.add_argument("benchmark")
    p.add_argument("tags", nargs="+")
    p.add_argument("--output-dir", default=None)
    p.add_argument(
        "--keys", nargs="*", default=None, help="summary keys to show (default: AUCs, counts, time)"
    )
    p.add_argument("--groups", action="store_true", help="include per-group keys")
    p.add_argument("--out", default=None, help="PNG path (default: next to the runs)")
    p.set_defaults(func=cmd_compare)

    p = subparsers.add_parser(
        "download", help="download a benchmark dataset (resumable, checksummed)"
    )
    p.add_argument("benchmark", help=", ".join(b for b in BENCHMARKS if b != "pairs"))
    p.add_argument(
        "--data-root", default=None, help="where datasets live (default: $TIEPOINT_DATA or ./data)"
    )
    p.set_defaults(func=cmd_download)

    p = subparsers.add_parser(
        "zeb-analysis",
        help="GIM's ZEB analysis of '[T] MODEL SET VERSION.txt' dumps: AUC@5° per set and mean",
    )
    p.add_argument("dump_dir", help="folder of GIM-format dumps (GIM's dump/zeb)")
    p.add_argument("--model", default=None, help="model name in the file names (default: all)")
    p.add_argument("--version", default=None, help="version in the file names (default: all)")
    p.set_defaults(func=cmd_zeb_analysis)

    p = subparsers.add_parser(
        "zeb-dump", help="write GIM's per-set ZEB dump files from a `tiepoint eval zeb` run"
    )
    p.add_argument("run_dir", help="outputs/results/zeb/TAG")
    p.add_argument("dump_dir")
    p.add_argument("--model", required=True, help="model name in the file names (no spaces)")
    p.add_argument("--version", default="tiepoint", help="version in the file names")
    p.set_defaults(func=cmd_zeb_dump)
