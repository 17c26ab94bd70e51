"""The pipeline's `runtime` section: bf16 autocast per part, its CPU fallback, torch.compile."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import read_h

import tiepoint
from tiepoint import runtime
from tiepoint.errors import ConfigError

PIPELINE = "xfeat+lighterglue"
WEIGHTS = ["xfeat", "xfeat-lighterglue"]


def output_dtypes(matcher: tiepoint.Matcher, image0, image1) -> tuple[dict[str, set], object]:
    """dtypes of every Conv2d output of the extractor and Linear output of the matcher in a match,
    and the MatchResult."""
    seen = {"extractor": set(), "matcher": set()}
    hooks = []
    for part, kind in (("extractor", torch.nn.Conv2d), ("matcher", torch.nn.Linear)):
        for module in getattr(matcher, part).modules():
            if isinstance(module, kind):
                hooks.append(
                    module.register_forward_hook(
                        lambda _m, _i, out, part=part: seen[part].add(out.dtype)
                    )
                )
    try:
        result = matcher.match(image0, image1)
    finally:
        for h in hooks:
            h.remove()
    return seen, result


@pytest.fixture(scope="module")
def bikes(data_dir):
    folder = data_dir / "homography" / "oxford_bikes"
    return folder / "img1.png", folder / "img2.png", read_h(folder / "H1to2p")


def test_bf16_runs_where_asked_and_matches_like_fp32(bikes, official_weights):
    official_weights(*WEIGHTS)
    a, b, H = bikes
    fp32 = tiepoint.Matcher(PIPELINE, resize=512, device="cpu")
    mixed = tiepoint.Matcher(
        PIPELINE, resize=512, device="cpu", overrides=["runtime.matcher_precision=bf16"]
    )
    dtypes32, r32 = output_dtypes(fp32, a, b)
    dtypes16, r16 = output_dtypes(mixed, a, b)
    assert dtypes32 == {"extractor": {torch.float32}, "matcher": {torch.float32}}
    if runtime.bf16_supported(torch.device("cpu")):
        assert dtypes16 == {"extractor": {torch.float32}, "matcher": {torch.bfloat16}}
    else:  # an old CPU: float32 (and a warning, tested below)
        assert dtypes16 == dtypes32
    # same keypoints (the extractor ran at fp32), nearly the same matches, both right under the GT
    np.testing.assert_array_equal(r16.keypoints0, r32.keypoints0)
    shared = {tuple(m) for m in r16.matches} & {tuple(m) for m in r32.matches}
    # measured 2051 shared of 2192 (fp32) and 2164 (bf16): the ones near the 0.1 score threshold
    assert len(shared) >= 0.9 * max(len(r16), len(r32)), (len(shared), len(r16), len(r32))
    correct = []
    for r in (r32, r16):
        p = np.c_[r.points0, np.ones(len(r))] @ H.T
        correct.append(np.linalg.norm(p[:, :2] / p[:, 2:] - r.points1, axis=1) < 3)
    # as right under the ground truth (measured 0.687 and 0.690 of matches within 3 px at 512 px)
    assert abs(correct[0].mean() - correct[1].mean()) < 0.02, [c.mean() for c in correct]
    assert correct[1].sum() > 0.95 * correct[0].sum()


def test_bf16_falls_back_to_fp32_with_a_warning_where_the_cpu_has_none(monkeypatch, caplog):
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    monkeypatch.setattr(runtime, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="tiepoint.runtime"):
        dtype = runtime.autocast_dtype({"precision": "bf16"}, "extractor", torch.device("cpu"))
    assert dtype is None and "no native bfloat16" in caplog.text
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: True)
    conf = {"precision": "bf16", "extractor_precision": "fp32", "matcher_precision": None}
    cpu = torch.device("cpu")
    assert runtime.autocast_dtype(conf, "extractor", cpu) is None
    assert runtime.autocast_dtype(conf, "matcher", cpu) is torch.bfloat16


@pytest.mark.parametrize(
    "override, message",
    [
        ("runtime.precision=fp16", "runtime.precision must be one of fp32, bf16, got 'fp16'"),
        ("runtime.extractor_precision=half", "runtime.extractor_precision must be one of"),
        ("runtime.threads=4", "threads"),
    ],
)
def test_bad_runtime_options_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError, match=message) as e:
        tiepoint.pipelines.pipeline_conf(PIPELINE, [override])
    assert "\n" not in str(e.value)


def test_compile_wraps_the_extractor_and_leaves_it_usable(official_weights):
    official_weights(*WEIGHTS)
    m = tiepoint.Matcher(PIPELINE, device="cpu", overrides=["runtime.compile=true"])
    assert isinstance(m.extractor, torch._dynamo.eval_frame.OptimizedModule)
    assert not isinstance(m.matcher, torch._dynamo.eval_frame.OptimizedModule)  # pruning: eager
    assert m.extractor.grayscale is False and m.extractor.conf.name == "xfeat"  # attributes pass
    plain = tiepoint.Matcher(PIPELINE, device="cpu")
    assert not isinstance(plain.extractor, torch._dynamo.eval_frame.OptimizedModule)


WHERE = """
import sys, torch
from tiepoint import runtime
assert runtime.keep_memory({"keep_memory": sys.argv[1] == "keep"}) == (sys.argv[1] == "keep")
x = torch.empty(4 << 20)  # a 16 MB buffer, as inference allocates on every call
for line in open("/proc/self/maps"):
    fields = line.split()
    lo, hi = (int(v, 16) for v in fields[0].split("-"))
    if lo <= x.data_ptr() < hi:
        print(fields[5] if len(fields) > 5 else "its own mapping")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_memory_serves_large_buffers_from_the_heap():
    """glibc maps a 16 MB buffer on its own and unmaps it when freed, so the next call faults all its
    pages in again (measured: 13 % of aliked+lightglue's time); with keep_memory it comes from the
    heap, which is kept and reused."""
    where = {}
    for mode in ("keep", "plain"):
        out = subprocess.run(
            [sys.executable, "-c", WHERE, mode], capture_output=True, text=True, check=True
        )
        where[mode] = out.stdout.strip()
    assert where == {"keep": "[heap]", "plain": "its own mapping"}, where
