"""`tiepoint video <step>`: GIM's video self-training steps, one subcommand each.

Add a step by writing `_add_<step>(vsub)` (parser + `set_defaults(func=...)`) and listing it
in `STEPS`; `frames`, `masks` and `label` are here, `propagate` and `show` come next.
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
    )
    pairs = ", ".join(f"{len(fs.pairs(s))} at skip {s}" for s in fs.skips)
    print(
        f"{args.video}: {len(fs.listing)} frames of {fs.frame_size[0]}×{fs.frame_size[1]} "
        f"({fs.range[0]}–{fs.range[1]} s, every {fs.gap}th at {fs.fps:g} fps; pairs: {pairs}) "
        f"→ {args.out}"
    )
    return 0


def cmd_label(args) -> int:
    import numpy as np

    from .frames import FrameSet
    from .labels import Labeler, label_video

    fs = FrameSet.load(args.frames)
    labeler = Labeler(
        args.pipeline,
        method=args.method,
        mask_mode=args.mask_mode,
        device=args.device,
        weights=args.weights,
        overrides=args.overrides,
    )
    resize = {"no": (False,), "yes": (True,), "both": (False, True)}[args.resize]
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


def _add_frames(vsub) -> None:
    p = vsub.add_parser("frames", help="sample and cache a video's frames as GIM does")
    p.add_argument("video", help="any video OpenCV (FFmpeg) decodes")
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
    p.add_argument("overrides", nargs="*", help="dotted pipeline overrides")
    p.set_defaults(func=cmd_label)


def _add_masks(vsub) -> None:
    from .masks import register_masks

    register_masks(vsub)


STEPS = [_add_frames, _add_masks, _add_label]  # later: _add_propagate, _add_show


def register(subparsers) -> None:
    video = subparsers.add_parser("video", help="GIM: frames and pseudo-labels from videos")
    # argparse cannot parse intermixed options around a nested sub-parser: this level parses
    # plainly; its subcommands (SubcommandParser) still accept overrides after options
    video._inside = True
    vsub = video.add_subparsers(dest="video_command", required=True)
    for add in STEPS:
        add(vsub)
