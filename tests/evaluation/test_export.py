"""The eval export on reconstruction's executors: local, `--shard i/N`, Ray — the same
predictions and summaries as the in-process export, and resuming after a kill."""

from __future__ import annotations

import importlib.util

import h5py
import numpy as np
import pytest
from helpers import unavailable

from tiepoint.evaluation.runner import run

from .test_runner import Counting, _run, _stable, dataset  # noqa: F401 (dataset: a fixture)


def _matches(d) -> dict:
    with h5py.File(d / "predictions.h5") as f:
        assert all(f[k].attrs["done"] for k in f)
        return {k: f[k]["matches0"][()] for k in f}


def _same_predictions(a, b) -> None:
    ma, mb = _matches(a), _matches(b)
    assert list(ma) == list(mb)
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)


@pytest.fixture(scope="module")
def inline(dataset, tmp_path_factory):  # noqa: F811
    """The in-process export and its summaries: the reference."""
    ref, d_ref, _ = _run(dataset, tmp_path_factory.mktemp("inline"))
    return ref, d_ref


def test_local_and_shards_give_the_inline_summaries(dataset, inline, tmp_path):  # noqa: F811
    ref, d_ref = inline
    local, d_local, made = _run(dataset, tmp_path / "local", executor="local")
    assert made[0].pairs == 5 and _stable(local) == _stable(ref)
    _same_predictions(d_ref, d_local)
    assert not list((d_local / "parts").glob("*.log"))  # merged and removed
    # two shards: the first matches its block and does not evaluate; the second completes it
    s0, d_sh, m0 = _run(dataset, tmp_path / "shards", shard=(0, 2))
    assert s0 is None and m0[0].pairs == 2 and not (d_sh / "summaries.json").exists()
    s1, _, m1 = _run(dataset, tmp_path / "shards", shard=(1, 2))
    assert m1[0].pairs == 3 and _stable(s1) == _stable(ref)
    _same_predictions(d_ref, d_sh)


def test_executor_export_resumes_after_a_kill(dataset, inline, tmp_path):  # noqa: F811
    ref, d_ref = inline
    with pytest.raises(KeyboardInterrupt):
        _run(
            dataset, tmp_path / "x", factory=lambda c: Counting(c, crash_after=2), executor="local"
        )
    summ, d, made = _run(dataset, tmp_path / "x", executor="local")
    assert made[0].pairs == 3  # the two pairs in the part file were merged, not matched again
    assert _stable(summ) == _stable(ref)
    _same_predictions(d_ref, d)


@pytest.mark.slow
def test_ray_actors_give_the_same_summaries(dataset, inline, tmp_path):  # noqa: F811
    if importlib.util.find_spec("ray") is None:
        unavailable("Ray is not installed (pip install 'tiepoint[ray]')")
    ref, d_ref = inline
    summ, d = run(
        "pairs",
        "sift+nn",
        output_dir=tmp_path,
        executor="ray",
        workers=2,
        data_root=dataset,
        progress=False,
    )
    assert _stable(summ) == _stable(ref)
    _same_predictions(d_ref, d)
