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

import os
from pathlib import Path

import pytest
from helpers import match_leuven, train_demo

pytestmark = pytest.mark.slow

# the test's smaller data (both runs share its feature cache): views, keypoints, validation pairs
REDUCED = [
    "data.homography.patch_shape=[320,240]",
    "model.extractor.max_num_keypoints=128",
    "data.val_pairs=24",
]


def test_cpu_demo(tmp_path, data_dir, official_weights, opencv_doc_images):
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

    scratch, hist = train_demo(
        "cpu_demo_scratch", "aliked+lightglue_cpu_demo", [*extra, *budget], out
    )
    first, last = hist[0], hist[-1]
    # validation recall and precision rise from chance (random init: almost no correct match)
    assert first["match_recall"] < 0.05
    assert last["match_recall"] > first["match_recall"] + 0.2 and last["match_recall"] > 0.25
    assert last["match_precision"] > 0.3
    _, _, err = match_leuven(data_dir, "aliked+lightglue", scratch / "checkpoint_best.tar")
    assert err < 5.0, f"Leuven img1→img2 corner error {err:.2f} px"

    fine, fh = train_demo(
        "cpu_demo_finetune", "aliked+lightglue_cpu_finetune", [*extra, *budget_ft], out
    )
    # fine-tuning the official weights does not degrade validation
    assert fh[-1]["match_recall"] >= fh[0]["match_recall"] - 0.01
    assert fh[-1]["match_precision"] >= fh[0]["match_precision"] - 0.01
    assert match_leuven(data_dir, "aliked+lightglue", fine / "checkpoint_best.tar")[2] < 5.0

    from tiepoint.viz.curves import plot_validation_curves

    png = plot_validation_curves(
        {"from scratch (4 layers)": scratch, "fine-tuned official": fine},
        out / "training" / "cpu_demo_curves.png",
    )
    assert png.exists()
