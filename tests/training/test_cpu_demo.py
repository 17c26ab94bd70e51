"""The CPU demonstration (slow), reduced: LightGlue trained from scratch on synthetic homographies
of real photographs, then used through `tiepoint.match` on Oxford Leuven; and the official ALIKED
LightGlue weights fine-tuned on the same cached features.

Images: Debian's opencv-doc sample photographs (fetched with apt-get download + dpkg-deb unless
$TIEPOINT_OPENCV_DOC names a folder where the package is unpacked already); the Leuven and Graffiti
evaluation scenes are excluded from training.
Reduced configuration (the test's only; the presets `aliked+lightglue_cpu_demo` / `_cpu_finetune`
and the README's 12-minute runs are unchanged): 96 training pairs of 320×240 views, 128 ALIKED
keypoints, 24 validation pairs, 60 steps from scratch and 6 fine-tuning steps — a fixed step budget,
so the claims do not depend on the machine's speed (about 70 s on 2 idle cores). The scratch model
goes from no correct match to recall ≈ 0.39 / precision ≈ 0.43 in those 60 steps.
TIEPOINT_DEMO_MINUTES (a wall-clock budget instead of steps, fine-tuning half of it),
TIEPOINT_DEMO_PAIRS and TIEPOINT_DEMO_OUTPUTS change the budget, the pairs and the output folder.
"""

import json
import os
from pathlib import Path

import pytest
from helpers import read_h

pytestmark = pytest.mark.slow

# the test's smaller data (both runs share its feature cache): views, keypoints, validation pairs
REDUCED = [
    "data.homography.patch_shape=[320,240]",
    "model.extractor.max_num_keypoints=128",
    "data.val_pairs=24",
]


def leuven_corner_error(checkpoint: Path, data_dir: Path) -> float:
    import tiepoint
    from tiepoint.geometry.homography import homography_corner_error

    seq = data_dir / "homography" / "oxford_leuven"
    H_gt = read_h(seq / "H1to2p")
    r = tiepoint.match(
        seq / "img1.png",
        seq / "img2.png",
        pipeline="aliked+lightglue",
        device="cpu",
        weights=str(checkpoint),  # the checkpoint carries its (smaller) architecture
    )
    H, _ = r.homography(estimator="opencv", threshold=3.0)
    from PIL import Image

    size = Image.open(seq / "img1.png").size
    return homography_corner_error(H, H_gt, size)


def test_cpu_demo(tmp_path, data_dir, official_weights, opencv_doc_images):
    from tiepoint.config import parse_dotlist
    from tiepoint.training import train

    official_weights("aliked-n16", "aliked_lightglue")
    images = opencv_doc_images
    out = Path(os.environ.get("TIEPOINT_DEMO_OUTPUTS", tmp_path / "outputs"))
    pairs = int(os.environ.get("TIEPOINT_DEMO_PAIRS", 96))
    extra = [f"data.data_dir={images}", f"data.train_size={pairs}", *REDUCED]
    minutes = os.environ.get("TIEPOINT_DEMO_MINUTES")
    if minutes:  # a wall-clock budget, as the presets' runs
        budget = [f"train.max_minutes={float(minutes)}", "train.max_iterations=null"]
        budget_ft = [f"train.max_minutes={float(minutes) / 2}", "train.max_iterations=null"]
    else:
        budget = ["train.max_minutes=null", "train.max_iterations=60", "train.eval_every_iter=0"]
        budget_ft = ["train.max_minutes=null", "train.max_iterations=6", "train.eval_every_iter=3"]

    scratch = train(
        "cpu_demo_scratch",
        "aliked+lightglue_cpu_demo",
        parse_dotlist([*extra, *budget]),
        output_dir=out,
        progress=False,
    )
    hist = json.loads((scratch / "val_history.json").read_text())
    first, last = hist[0], hist[-1]
    # validation recall and precision rise from chance (random init: almost no correct match)
    assert first["match_recall"] < 0.05
    assert last["match_recall"] > first["match_recall"] + 0.2 and last["match_recall"] > 0.25
    assert last["match_precision"] > 0.3
    err = leuven_corner_error(scratch / "checkpoint_best.tar", data_dir)
    assert err < 5.0, f"Leuven img1→img2 corner error {err:.2f} px"

    fine = train(
        "cpu_demo_finetune",
        "aliked+lightglue_cpu_finetune",
        parse_dotlist([*extra, *budget_ft]),
        output_dir=out,
        progress=False,
    )
    fh = json.loads((fine / "val_history.json").read_text())
    # fine-tuning the official weights does not degrade validation
    assert fh[-1]["match_recall"] >= fh[0]["match_recall"] - 0.01
    assert fh[-1]["match_precision"] >= fh[0]["match_precision"] - 0.01
    assert leuven_corner_error(fine / "checkpoint_best.tar", data_dir) < 5.0

    from tiepoint.viz.curves import plot_validation_curves

    png = plot_validation_curves(
        {"from scratch (4 layers)": scratch, "fine-tuned official": fine},
        out / "training" / "cpu_demo_curves.png",
    )
    assert png.exists()
