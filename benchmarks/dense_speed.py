"""DKMv3 per-pair time and peak memory on the CPU, ours against the reference code (Parskatt/DKM)
timed in the same run, plus where our time goes (per-stage breakdown).

    PYTHONPATH=src python benchmarks/dense_speed.py [--presets outdoor indoor] [--rounds 2] \\
        [--ref-python /tmp/dkm_ref/bin/python] [--dkm-src /tmp/DKM] [--threads 2]

Each side runs in its own subprocess (ours: this interpreter with tiepoint; the reference: the venv
of benchmarks/dkm_parity.py, which has the reference's dependencies and no tiepoint), the two
alternated for `--rounds` rounds with the first side swapped every round; each subprocess makes
`--warmup` untimed calls (default 1) then `--repeats` timed calls, and a side's time is the
minimum over all its timed calls.
Both sides load the same random weights (the reference DKMv3 at seed 0 with randomised BatchNorm,
saved once, loaded into ours through our official loader), run symmetric matching on the same
pair at the preset's native resolution (outdoor: 540×720 then the 864×1152 upsample pass; indoor:
480×640) with `--threads` intra-op threads, and are timed around the whole match call: ours
`DKM(...)({"image0", "image1"})` under `torch.inference_mode` (as `tiepoint.Matcher` runs it), the
reference `model.match(PIL, PIL)` (its own `torch.no_grad`, PIL resize included).

Peak memory: the process's peak resident set (VmHWM in /proc/self/status) after the calls, with
the peak reset (`/proc/self/clear_refs` ← 5) once the model and images are loaded; printed as
the absolute peak and as the increase over the resident set before the calls.

Stage breakdown (ours, the best timed call): wall time inside the encoder, the scale-32/16 1×1
projections, each GP, the DFN decoder, each refiner scale (and within it the local correlation),
for the main and upsample passes; `other` is the rest (resize, upsampling between scales, the
certainty rule and warp assembly).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve()
DATA = HERE.parent.parent.parent / "shared" / "data" / "homography" / "oxford_bikes"
PRESETS = {  # (internal h, w), upsample (h, w) or None — as DKMv3_outdoor / DKMv3_indoor
    "outdoor": ((540, 720), (864, 1152)),
    "indoor": ((480, 640), None),
}


# ------------------------------------------------------------------ memory (both sides)
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # not permitted: the peak then includes loading
        Path("/proc/self/clear_refs").write_text("5")


def _check_threads(torch, n: int) -> None:
    """Threads come from OMP_NUM_THREADS / MKL_NUM_THREADS set by the driver, not from
    `torch.set_num_threads`: with torch 2.13's MKL, `set_num_threads(2)` makes batched LU
    (`linalg.inv`, which the reference GP calls) fail with "Pivots given to lu_solve must all be
    greater or equal to 1"."""
    if torch.get_num_threads() != n:
        sys.exit(f"expected {n} intra-op threads, torch has {torch.get_num_threads()}")


def _timed_calls(fn, repeats: int, warmup: int, after=None) -> dict:
    """`warmup` untimed calls, then `repeats` timed ones; memory measured across all of them."""
    rss0 = _status_kib("VmRSS")
    _reset_peak()
    times, extra = [], []
    for i in range(warmup + repeats):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        if i >= warmup:
            times.append(dt)
            extra.append(after() if after else None)
    return {
        "times": times,
        "extra": extra,
        "rss_before_mib": rss0 / 1024,
        "peak_rss_mib": _status_kib("VmHWM") / 1024,
    }


# ------------------------------------------------------------------ the reference side
def reference_worker(args) -> dict:
    import torch
    from dkm_parity import build_reference_dkmv3, randomize_batchnorm  # same folder
    from PIL import Image

    _check_threads(torch, args.threads)
    (h, w), up = PRESETS[args.preset]
    model = build_reference_dkmv3(args.src, h, w, up is not None, torch)
    state = Path(args.state)
    if state.exists():
        model.load_state_dict(torch.load(state))
    else:
        randomize_batchnorm(model, torch)
        torch.save(model.state_dict(), state)
    if up:
        model.upsample_res = up
    model.eval()
    im0, im1 = (Image.open(p).convert("RGB") for p in (args.image0, args.image1))
    res = _timed_calls(
        lambda: model.match(im0, im1, device=torch.device("cpu")), args.repeats, args.warmup
    )
    warp, cert = model.match(im0, im1, device=torch.device("cpu"))
    res["shape"] = list(warp.shape)
    return res


# ------------------------------------------------------------------ our side
def _stage_timers(model):
    """Wrap the model's parts with wall-clock timers; returns the dict they fill (per call)."""
    import tiepoint.models.dense.refiner as refiner_mod

    acc = defaultdict(float)
    phase = ["main"]

    def timed(name_fn, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            acc[name_fn()] += time.perf_counter() - t
            return out

        return wrapper

    original_pyr = model._pyramids

    def pyramids(image0, image1, size, max_stride=32):
        phase[0] = "main" if max_stride == 32 else "upsample"
        return original_pyr(image0, image1, size, max_stride)

    model._pyramids = pyramids
    net = model.encoder.net
    net.features = timed(lambda: f"{phase[0]}/encoder (+resize)", net.features)
    dec = model.decoder
    for s, m in dec.proj.items():
        m.forward = timed(lambda s=s: f"{phase[0]}/proj {s}", m.forward)
    for s, m in dec.gps.items():
        m.forward = timed(lambda s=s: f"{phase[0]}/GP {s}", m.forward)
    dfn = dec.embedding_decoder
    dfn.forward = timed(lambda: f"{phase[0]}/DFN decoder 32+16", dfn.forward)
    current = ["?"]
    for s, m in dec.conv_refiner.items():
        inner = m.forward

        def ref_fwd(*a, s=s, inner=inner, **k):
            current[0] = s
            return inner(*a, **k)

        m.forward = timed(lambda s=s: f"{phase[0]}/refiner {s}", ref_fwd)
    refiner_mod.local_correlation = timed(
        lambda: f"{phase[0]}/  (local corr {current[0]})", refiner_mod.local_correlation
    )
    return acc


def ours_worker(args) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    from tiepoint.models.dense.dkm import DKM

    _check_threads(torch, args.threads)
    (h, w), up = PRESETS[args.preset]
    conf = {"preset": args.preset, "weights": args.state, "resize": [h, w]}
    conf["upsample_res"] = list(up) if up else None
    model = DKM(conf).eval()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    imgs = [
        torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255).permute(
            2, 0, 1
        )[None]
        for p in (args.image0, args.image1)
    ]
    stages = _stage_timers(model) if args.stages else None
    out = {}

    def call():
        if stages is not None:
            stages.clear()
        with torch.inference_mode():
            out["pred"] = model({"image0": imgs[0], "image1": imgs[1]})

    res = _timed_calls(
        call, args.repeats, args.warmup, after=(lambda: dict(stages)) if args.stages else None
    )
    res["shape"] = list(out["pred"]["warp"][0].shape)
    if args.save_output:
        torch.save(
            {k: out["pred"][k][0] for k in ("warp", "certainty")}, args.save_output
        )  # for equality checks of speed-ups against earlier outputs
    return res


# ------------------------------------------------------------------ driver
def _run(cmd, env=None) -> dict:
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"worker failed: {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def driver(args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    state = out / "ref_state.pth"
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    src = str(HERE.parent.parent / "src")
    ours_env = {**env, "PYTHONPATH": src + os.pathsep + env.get("PYTHONPATH", "")}
    common = ["--state", str(state), "--image0", args.image0, "--image1", args.image1]
    common += ["--threads", str(args.threads), "--repeats", str(args.repeats)]
    common += ["--warmup", str(args.warmup)]
    load = os.getloadavg()
    print(f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} CPUs")
    results = {}
    for preset in args.presets:
        sides = {"ours": [], "ref": []}
        for r in range(args.rounds):
            order = ("ours", "ref") if r % 2 == 0 else ("ref", "ours")
            if not state.exists():  # the reference creates the shared weights first
                order = ("ref", "ours")
            for side in order:
                if side == "ref" and not args.ref_python:
                    continue
                if side == "ours":
                    cmd = [sys.executable, str(HERE), "--worker", "ours", "--preset", preset]
                    cmd += common + ["--no-stages"] * (not args.stages)
                    cmd += ["--channels-last"] * args.channels_last
                    if args.save_output:
                        cmd += ["--save-output", f"{args.save_output}_{preset}.pt"]
                    res = _run(cmd, ours_env)
                else:
                    cmd = [args.ref_python, str(HERE), "--worker", "ref", "--preset", preset]
                    cmd += common + ["--src", args.dkm_src]
                    res = _run(cmd, env)
                sides[side].append(res)
                print(
                    f"  {preset} round {r} {side}: "
                    + " ".join(f"{t:.2f}s" for t in res["times"])
                    + f", peak {res['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
        results[preset] = sides
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    _report(results, args)
    (out / "dense_speed.json").write_text(json.dumps(results, indent=1))
    print("wrote", out / "dense_speed.json")


def _best(runs):
    """(best time, the run that has it, index of the call within that run)."""
    return min(((t, r, i) for r in runs for i, t in enumerate(r["times"])), key=lambda x: x[0])


def _report(results, args) -> None:
    print(f"\nDKMv3 symmetric, per pair, {args.threads} threads, best of all timed calls")
    head = f"{'preset':8s} {'ours s':>8s} {'ref s':>8s} {'ref/ours':>9s} "
    print(head + f"{'peak ours MiB':>14s} {'peak ref MiB':>13s} {'Δ ours':>7s} {'Δ ref':>7s}")
    for preset, sides in results.items():
        t_o, _, _ = _best(sides["ours"])
        p_o = max(r["peak_rss_mib"] for r in sides["ours"])
        d_o = max(r["peak_rss_mib"] - r["rss_before_mib"] for r in sides["ours"])
        if sides["ref"]:
            t_r, _, _ = _best(sides["ref"])
            p_r = max(r["peak_rss_mib"] for r in sides["ref"])
            d_r = max(r["peak_rss_mib"] - r["rss_before_mib"] for r in sides["ref"])
            ref = f"{t_r:8.2f} {t_r / t_o:9.2f} "
            mem = f"{p_o:14.0f} {p_r:13.0f} {d_o:7.0f} {d_r:7.0f}"
        else:
            ref, mem = f"{'-':>8s} {'-':>9s} ", f"{p_o:14.0f} {'-':>13s} {d_o:7.0f} {'-':>7s}"
        print(f"{preset:8s} {t_o:8.2f} {ref}{mem}")
    if not args.stages:
        return
    for preset, sides in results.items():
        t_o, run, i = _best(sides["ours"])
        stages = run["extra"][i]
        print(f"\nwhere ours spends its best {preset} call ({t_o:.2f} s):")
        timed = sum(v for k, v in stages.items() if "local corr" not in k)
        for k, v in sorted(stages.items(), key=lambda kv: (kv[0].split("/")[0] != "main",)):
            print(f"  {k:40s} {v:7.2f} s {100 * v / t_o:5.1f} %")
        print(f"  {'other':40s} {t_o - timed:7.2f} s {100 * (t_o - timed) / t_o:5.1f} %")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--worker", choices=["ours", "ref"], help="internal: run one side")
    p.add_argument("--preset", choices=list(PRESETS), help="internal")
    p.add_argument("--state", help="internal: the shared random weights")
    p.add_argument("--src", help="internal: the reference checkout")
    p.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    p.add_argument("--rounds", type=int, default=2, help="subprocess pairs per preset")
    p.add_argument("--repeats", type=int, default=1, help="timed calls per subprocess")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per subprocess first")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ref-python", default="/tmp/dkm_ref/bin/python", help="'' to skip")
    p.add_argument("--dkm-src", default="/tmp/DKM")
    p.add_argument("--image0", default=str(DATA / "img1.png"))
    p.add_argument("--image1", default=str(DATA / "img3.png"))
    p.add_argument("--out", default="/tmp/dense_speed")
    p.add_argument("--no-stages", dest="stages", action="store_false", help="skip the breakdown")
    p.add_argument("--channels-last", action="store_true", help="ours in channels_last")
    p.add_argument("--save-output", help="ours: save warp/certainty to <this>_<preset>.pt")
    args = p.parse_args()
    if args.worker:
        res = (ours_worker if args.worker == "ours" else reference_worker)(args)
        print(json.dumps(res))
    else:
        driver(args)


if __name__ == "__main__":
    main()
