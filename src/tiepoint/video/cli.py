"""`tiepoint video <step>`: GIM's video self-training steps, one subcommand each.

Add a step by writing `_add_<step>(vsub)` (parser + `set_defaults(func=...)`) and listing it
in `STEPS`: frames → masks → label → propagate → show.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def cmd_frames(args) -> int:
    from .frames import extract_frames

    fs = extract_frames(
        args.video,
        args.out,
        start=args.start,
        end=args.end,
        trim=args.trim,
        max_size=args.max_size,
        ext=args.ext,
        video_id=args.id,
        reader=args.reader,
    )
    pairs = ", ".join(f"{len(fs.pairs(s))} at skip {s}" for s in fs.skips)
    print(
        f"{args.video}: {len(fs.listing)} frames of {fs.frame_size[0]}×{fs.frame_size[1]} "
        f"({fs.range[0]}–{fs.range[1]} s, every {fs.gap}th at {fs.fps:g} fps; pairs: {pairs}; {fs.reader}) "
        f"→ {args.out}"
    )
    return 0


def _executor_options(p) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=None, help="Ray actors (default: one per CPU)")
    p.add_argument("--ray-address", default=None)
    p.add_argument("--shard", default=None, help="i/N: this batch job's block of the work")


def _on_executor(args) -> bool:
    return args.executor != "local" or args.shard is not None


def cmd_label(args) -> int:
    import numpy as np

    from ..reconstruction.executors import parse_shard
    from .frames import FrameSet
    from .labels import Labeler, label_video

    fs = FrameSet.load(args.frames)
    resize = {"no": (False,), "yes": (True,), "both": (False, True)}[args.resize]
    if _on_executor(args):
        from .jobs import VideoJobSpec, label_videos

        spec = VideoJobSpec(
            out=str(args.out),
            pipeline=args.pipeline,
            method=args.method,
            mask_mode=args.mask_mode,
            device=args.device,
            weights=args.weights,
            overrides=list(args.overrides),
            masks=args.masks,
            crop_method=args.crop_method,
            threshold=args.threshold,
        )
        dirs = label_videos(
            [args.frames],
            spec,
            args.skips,
            resize,
            args.executor,
            args.workers,
            parse_shard(args.shard),
            args.ray_address,
        )
        for d in dirs:
            print(f"{d.parent.name}: {len(np.load(d / 'nums.npy'))} pairs labelled → {d}")
        return 0
    labeler = Labeler(
        args.pipeline,
        method=args.method,
        mask_mode=args.mask_mode,
        device=args.device,
        weights=args.weights,
        overrides=args.overrides,
    )
    dirs = label_video(
        labeler,
        fs,
        args.out,
        skips=args.skips,
        resize=resize,
        masks=args.masks,
        crop_method=args.crop_method,
        threshold=args.threshold,
    )
    for d in dirs:
        nums = np.load(d / "nums.npy")
        skip = int(d.name.split(" SP ")[1].split()[0])
        print(
            f"{d.parent.name}: {len(nums)}/{len(fs.pairs(skip))} pairs labelled, "
            f"{int(nums.sum())} labels → {d}"
        )
    return 0


def _videos(args) -> list[str]:
    from ..errors import DatasetError
    from .propagate import list_videos

    found = list_videos(args.pseudo)
    if args.video is not None:
        if args.video not in found:
            raise DatasetError(f"{args.pseudo}: no labels of video '{args.video}' (found {found})")
        return [args.video]
    if not found:
        raise DatasetError(f"{args.pseudo}: no label folders ('WALK METHOD [R] T|F [S] SKIP/...')")
    return found


def _conf(args):
    from .propagate import PropagateConf

    kw = {"step": args.step, "max_samples": args.max_samples}
    kw["min_final_matches"] = args.min_final_matches
    kw["min_inliers"] = args.min_inliers
    kw["require_gim_sets"] = args.gim_sets
    if args.label_sets:
        kw["label_sets"] = tuple(args.label_sets)
    return PropagateConf(**kw)


def cmd_propagate(args) -> int:
    from ..reconstruction.executors import parse_shard
    from .propagate import propagate_video

    conf = _conf(args)
    if _on_executor(args):
        from .jobs import propagate_videos

        shard = parse_shard(args.shard)
        for s in propagate_videos(
            args.pseudo,
            args.out,
            _videos(args),
            conf,
            args.executor,
            args.workers,
            shard,
            args.ray_address,
        ):
            print(f"{s['pairs']} propagated pairs, {s['bad']} rejected → {s['folder']}")
        return 0
    for video in _videos(args):
        s = propagate_video(args.pseudo, video, args.out, conf)
        print(
            f"{video}: {s['pairs']} propagated pairs ({s['written']} new), {s['bad']} rejected "
            f"of {s['targets']} targets, from {len(s['label_sets'])} label sets "
            f"[{', '.join(s['label_sets'])}] → {s['folder']}"
        )
    return 0


def cmd_show(args) -> int:
    from ..errors import DatasetError
    from .propagate import show_chain

    videos = _videos(args)
    if len(videos) > 1:
        raise DatasetError(f"{args.pseudo}: several videos {videos}; choose one with --video")
    s = show_chain(
        args.pseudo,
        videos[0],
        args.out,
        target=args.target,
        frames_dir=args.frames,
        conf=_conf(args),
        dpi=args.dpi,
    )
    print(
        f"{videos[0]}: chain {s['pair'][0]}→{s['pair'][1]}, {len(s['hops'])} hops, "
        f"{s['labels']} labels → {s['path']}"
    )
    return 0


def _propagate_options(p) -> None:
    p.add_argument("pseudo", help="label root written by `tiepoint video label`")
    p.add_argument("--video", default=None, help="video id (default: every video found)")
    p.add_argument(
        "--label-sets",
        nargs="+",
        default=None,
        metavar="SET",
        help="outer folder names to combine, e.g. 'WALK SIFT [R] F [S] 20' (default: all found)",
    )
    p.add_argument("--gim-sets", action="store_true", help="GIM's rule: require its 24 sets")
    p.add_argument("--step", type=int, default=1000, help="target = idx0 + step * largest skip")
    p.add_argument("--max-samples", type=int, default=-1, help="> 0: GIM's seeded subsample")
    p.add_argument("--min-final-matches", type=int, default=512, help="links need this many")
    p.add_argument("--min-inliers", type=int, default=64, help="after the final F-MAGSAC 1 px")


def _add_propagate(vsub) -> None:
    p = vsub.add_parser(
        "propagate", help="propagate labels to wide baselines as GIM does (resumable)"
    )
    _propagate_options(p)
    p.add_argument("out", help="output root ('{methods} {skips} {resizes} FM PM'/<vid>/i0_i1.npy)")
    _executor_options(p)
    p.set_defaults(func=cmd_propagate)


def _add_show(vsub) -> None:
    p = vsub.add_parser("show", help="picture of one propagated chain (frames, hops, labels)")
    _propagate_options(p)
    p.add_argument("out", help="output picture (.png)")
    p.add_argument("--target", type=int, nargs=2, default=None, metavar=("I0", "I1"))
    p.add_argument("--frames", default=None, help="frames folder ({idx}.png) to draw")
    p.add_argument("--dpi", type=int, default=90)
    p.set_defaults(func=cmd_show)


def _add_frames(vsub) -> None:
    p = vsub.add_parser("frames", help="sample and cache a video's frames as GIM does")
    p.add_argument("video", help="any video OpenCV or PyAV (the video extra) decodes")
    p.add_argument("out", help="frames folder (<frame>.png + frames.json); reruns resume")
    p.add_argument("--start", type=float, default=None, help="seconds (default: GIM's 300)")
    p.add_argument("--end", type=float, default=None, help="seconds, -1: the end")
    p.add_argument(
        "--trim",
        type=float,
        default=300,
        help="without --start/--end: drop this many seconds at each end, unless the video is "
        "too short (then it is taken whole); default 300 (GIM)",
    )
    p.add_argument("--max-size", type=int, default=None, help="cap the stored long side")
    p.add_argument("--ext", choices=["png", "jpg"], default="png")
    p.add_argument("--id", default=None, help="video id in label folder names (default: stem)")
    p.add_argument(
        "--reader",
        choices=["auto", "opencv", "pyav"],
        default="auto",
        help="decoder: auto (OpenCV, else PyAV when OpenCV cannot decode the file)",
    )
    p.set_defaults(func=cmd_frames)


def _add_label(vsub) -> None:
    p = vsub.add_parser(
        "label",
        help="pseudo-labels of frame pairs at GIM's skips, in GIM's layout (resumable)",
    )
    p.add_argument("frames", help="folder written by `tiepoint video frames`")
    p.add_argument("out", help="label root (WALK {method} [R] T|F [S] skip/... folders)")
    p.add_argument(
        "--pipeline", default="gim-rootsift", help="gim-rootsift (GIM's RootSIFT) or any pipeline"
    )
    p.add_argument("--method", default=None, help="method name in folder names")
    p.add_argument("--skips", type=int, nargs="+", default=[0, 1, 2], choices=[0, 1, 2])
    p.add_argument(
        "--resize",
        choices=["no", "yes", "both"],
        default="no",
        help="crop-and-rematch runs from --crop-method's labels (GIM's [R] T)",
    )
    p.add_argument("--crop-method", default="GIM_DKM")
    p.add_argument("--masks", default=None, help="folder of <frame>.png masks (non-zero: keep)")
    p.add_argument("--mask-mode", choices=["auto", "keypoints", "image"], default="auto")
    p.add_argument("--threshold", type=float, default=0.5, help="F-MAGSAC pixels (GIM: 0.5)")
    p.add_argument("--device", default=None)
    p.add_argument("--weights", default=None)
    _executor_options(p)
    p.add_argument("overrides", nargs="*", help="dotted pipeline overrides")
    p.set_defaults(func=cmd_label)


def _add_masks(vsub) -> None:
    from .masks import register_masks

    register_masks(vsub)


STEPS = [_add_frames, _add_masks, _add_label, _add_propagate, _add_show]


def register(subparsers) -> None:
    video = subparsers.add_parser(
        "video", help="GIM: frames, pseudo-labels and propagation from videos"
    )
    # argparse cannot parse intermixed options around a nested sub-parser: this level parses
    # plainly; its subcommands (SubcommandParser) still accept overrides after options
    video._inside = True
    vsub = video.add_subparsers(dest="video_command", required=True)
    for add in STEPS:
        add(vsub)
