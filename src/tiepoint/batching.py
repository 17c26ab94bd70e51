"""Padded batches of feature pairs for matchers that accept masks (`supports_padding`).

Pairs have different keypoint counts; each set is padded to the longest one in the batch (zeros,
keypoints at (0, 0)) and `mask0`/`mask1` (B, M) say which points are real. The matcher masks
padded points out of every attention, so a pair's matches do not depend on its batch-mates.
"""

from __future__ import annotations

import numpy as np
import torch

from .types import Features, MatchResult


def _pad(arrays: list[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(arrays), length, *arrays[0].shape[1:]), np.float32)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return torch.from_numpy(out)


def collate_pairs(pairs: list[tuple[Features, Features]], device) -> dict:
    """Matcher input for B pairs: `keypoints0` (B,M,2), `descriptors0`, `keypoint_scores0`,
    `image_size0` (B,2), extras (`scales0`, `oris0`, ...), `mask0` (B,M) bool; same for 1;
    `padded_batch`: True."""
    data = {}
    for i in (0, 1):
        feats = [p[i] for p in pairs]
        length = max(1, max(len(f) for f in feats))
        fields = {
            "keypoints": [f.keypoints.reshape(-1, 2) for f in feats],
            "keypoint_scores": [f.keypoint_scores for f in feats],
            "descriptors": [f.descriptors for f in feats],
        }
        for key in feats[0].extra:
            if all(key in f.extra for f in feats):
                fields[key] = [f.extra[key] for f in feats]
        for key, arrays in fields.items():
            data[f"{key}{i}"] = _pad([np.asarray(a, np.float32) for a in arrays], length).to(device)
        mask = torch.zeros((len(feats), length), dtype=torch.bool)
        for j, f in enumerate(feats):
            mask[j, : len(f)] = True
        data[f"mask{i}"] = mask.to(device)
        data[f"image_size{i}"] = torch.tensor(
            [f.image_size for f in feats], dtype=torch.float32, device=device
        )
    data["padded_batch"] = True  # the matcher's masked path (`mask0/1` alone do not choose it)
    return data


def split_results(pred: dict, pairs: list[tuple[Features, Features]]) -> list[MatchResult]:
    """One `MatchResult` per pair from a padded prediction (`matches0`, `matching_scores0`)."""
    m0_all = pred["matches0"].cpu().numpy()
    s0_all = pred["matching_scores0"].float().cpu().numpy()
    out = []
    for j, (f0, f1) in enumerate(pairs):
        m0 = m0_all[j, : len(f0)]
        valid = m0 > -1
        matches = np.stack([np.where(valid)[0], m0[valid]], -1).astype(np.int64).reshape(-1, 2)
        out.append(
            MatchResult(
                f0.keypoints,
                f1.keypoints,
                matches,
                s0_all[j, : len(f0)][valid].astype(np.float32),
                f0.image_size,
                f1.image_size,
            )
        )
    return out
