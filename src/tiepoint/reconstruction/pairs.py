"""Which image pairs to match: exhaustive, sequential (window N) or retrieval (top-K).

A pair list is a list of `(name0, name1)`; on disk it is hloc's pairs txt (`name0 name1` a line).
Pairs are canonical (each unordered pair once, in the order of the sorted image list) and sorted,
so pairs sharing their first image are adjacent and shards keep that image's features cached.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError, DatasetError

Pair = tuple[str, str]


@dataclass(frozen=True)
class PairSpec:
    """A parsed `--pairs` value: `exhaustive`, `sequential:N` or `retrieval:K`."""

    kind: str
    n: int = 0

    @classmethod
    def parse(cls, spec: str) -> PairSpec:
        m = re.fullmatch(r"(exhaustive|sequential|retrieval)(?::(\d+))?", spec.strip())
        if not m:
            raise ConfigError(
                f"--pairs '{spec}': expected 'exhaustive', 'sequential:N' or 'retrieval:K'"
            )
        kind, n = m.group(1), m.group(2)
        if kind == "exhaustive":
            if n is not None:
                raise ConfigError(f"--pairs '{spec}': exhaustive takes no number")
            return cls(kind)
        n = int(n) if n is not None else (10 if kind == "sequential" else 20)
        if n < 1:
            raise ConfigError(f"--pairs '{spec}': the number must be at least 1")
        return cls(kind, n)

    def __str__(self) -> str:
        return self.kind if self.kind == "exhaustive" else f"{self.kind}:{self.n}"


def canonical(pairs, names: list[str]) -> list[Pair]:
    """Drop self-pairs and duplicates (in either order); order each pair and the list by `names`."""
    index = {n: i for i, n in enumerate(names)}
    seen: set[tuple[int, int]] = set()
    for a, b in pairs:
        if a not in index or b not in index:
            missing = a if a not in index else b
            raise DatasetError(f"pair ({a}, {b}): image '{missing}' is not in the image list")
        i, j = index[a], index[b]
        if i != j:
            seen.add((min(i, j), max(i, j)))
    return [(names[i], names[j]) for i, j in sorted(seen)]


def exhaustive(names: list[str]) -> list[Pair]:
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential(names: list[str], window: int) -> list[Pair]:
    """Each image with the next `window` images in name order (video frames, drone strips)."""
    return [
        (names[i], names[j])
        for i in range(len(names))
        for j in range(i + 1, min(i + 1 + window, len(names)))
    ]


def retrieval(names: list[str], descriptors: np.ndarray, k: int, chunk: int = 1024) -> list[Pair]:
    """Each image with its `k` most similar others by global descriptor (cosine), symmetrised.

    The similarity matrix is computed in row chunks so memory stays O(chunk·N), not O(N²).
    """
    desc = np.asarray(descriptors, dtype=np.float32)
    if desc.shape[0] != len(names):
        raise ValueError(f"{desc.shape[0]} descriptors for {len(names)} images")
    desc = desc / np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)
    k = min(k, len(names) - 1)
    out = []
    for s in range(0, len(names), chunk):
        sim = desc[s : s + chunk] @ desc.T
        rows = np.arange(sim.shape[0])
        sim[rows, s + rows] = -np.inf  # no self-pairs
        # stable tie-break by index so the list is deterministic
        order = np.argsort(-sim, axis=1, kind="stable")[:, :k]
        for r, js in enumerate(order):
            out.extend((names[s + r], names[j]) for j in js)
    return canonical(out, names)


def write_pairs(path: str | os.PathLike, pairs: list[Pair]) -> Path:
    for a, b in pairs:
        if any(c.isspace() for c in a + b):
            raise DatasetError(
                f"image name '{a if any(c.isspace() for c in a) else b}' contains "
                "whitespace, which a pairs file cannot hold"
            )
    atomic_write_text(path, "".join(f"{a} {b}\n" for a, b in pairs))
    return Path(path)


def pair_lines(path: str | os.PathLike) -> Iterator[tuple[int, str, str]]:
    """(line number, name0, name1) of each pair line of a pairs file; `#` comments and blank
    lines skipped, further columns ignored; a line that is not a pair is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such pairs file")
    for ln, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise DatasetError(f"{path}:{ln}: expected 'name0 name1', got '{line}'")
        yield ln, parts[0], parts[1]


def read_pairs(path: str | os.PathLike) -> list[Pair]:
    return [(a, b) for _, a, b in pair_lines(path)]
