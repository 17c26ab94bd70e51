"""Benchmarks: export predictions once, evaluate them with any robust estimator, summarise, compare.

`tiepoint eval BENCH --pipeline P` (see `runner.py`) writes `summaries.json` with the field's keys:

homography (pairs, hpatches) — errors in pixels (HPatches: of the 480-px-short-side images)
    H_error_dlt@{t}px, H_error_ransac@{t}px   AUC of the mean corner error, DLT on all matches
                                              (score-weighted) / robust estimate; t = 1,3,5 (HPatches)
                                              or 3,5,10 (pairs); `_mAA` is their mean
    mprec@1px, mprec@3px                      share of matches with symmetric reprojection error < t
    mH_error_dlt, mH_error_ransac             median corner errors (inf = failure)
relative pose (pairs, megadepth1500, scannet1500, zeb)
    rel_pose_error@{5,10,20}°                 AUC of max(rotation, translation-direction) error
    mepi_prec@{1e-4,5e-4,1e-3}                share of matches with symmetric epipolar distance
                                              (normalised coordinates) < t
    mrel_pose_error, mR_error, mt_error       median angular errors (inf = failure; ZEB: 180)
both
    mnum_matches, mnum_keypoints              per-pair mean (pose) or median (homography)
    mransac_inl, mransac_inl%                 median inlier count / ratio of the robust estimate
    mtime_ms                                  mean wall time per pair: extraction of both images
                                              + matching (excludes the robust estimator)
    ransac_th                                 the inlier threshold used (best one with `-1`)
AUCs are fractions in [0, 1] (SuperGlue / Glue Factory `cal_error_auc`). Per-group AUCs are
prefixed by the group (`kitti_seq1/rel_pose_error@5°`, `gl3d/…`, `i/…`); a benchmark with both
tasks (`pairs`) prefixes every key with `homography/` or `pose/`. ZEB adds
`rel_pose_error@5°_mean_of_sets`, the mean of the 12 per-set AUC@5° (GIM's headline number).
"""
