"""Trainer behaviour on a tiny problem: exact resumption, Ctrl-C, NaN skipping, checkpoints, bad input."""

import json
import logging
import math
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import TINY_LIGHTGLUE, resume_and_compare
from omegaconf import OmegaConf

from tiepoint.cli import main as cli_main
from tiepoint.errors import ConfigError, WeightsError
from tiepoint.training import build_conf, train
from tiepoint.training.checkpoints import list_checkpoints, load_checkpoint
from tiepoint.training.schedules import lr_factor
from tiepoint.training.trainer import Trainer


def make_images(folder, n=8, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = cv2.GaussianBlur(rng.uniform(0, 255, (120, 160, 3)).astype(np.float32), (0, 0), 2.0)
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX)
        cv2.imwrite(str(folder / f"img{i}.png"), img.astype(np.uint8))
    return folder


def tiny_conf(images, **train):
    return OmegaConf.create(
        {
            "data": {
                "name": "homographies",
                "data_dir": str(images),
                "train_size": 16,
                "val_size": 2,
                "val_pairs": 4,
                "batch_size": 4,
                "homography": {"patch_shape": [128, 96], "difficulty": 0.3, "max_angle": 10},
            },
            "model": {
                "extractor": {"name": "sift", "max_num_keypoints": 48},
                "matcher": TINY_LIGHTGLUE,
            },
            "train": {
                "epochs": 2,
                "lr": 1e-3,
                "eval_every_iter": 0,
                "eval_at_start": False,
                "save_every_iter": 0,
                "log_every_iter": 1,
                **train,
            },
        }
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images"))


def _params(trainer):
    return {k: v.clone() for k, v in trainer.model.matcher.state_dict().items()}


def test_resume_gives_the_same_next_steps(images, tmp_path):
    # uninterrupted: 6 steps (epoch 0 has 4 iterations, so the run crosses an epoch boundary)
    full = Trainer(
        tmp_path / "full", build_conf(tiny_conf(images, max_iterations=6)), progress=False
    )
    full.run()
    # interrupted after 2 steps (mid-epoch), then resumed from its checkpoint up to step 6
    conf = build_conf(tiny_conf(images, max_iterations=2))
    Trainer(tmp_path / "part", conf, progress=False).run()
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [2]
    resumed = resume_and_compare(tmp_path / "part", conf, 2, 6, dict(full.loss_history))
    for k, v in _params(full).items():
        assert torch.allclose(v, _params(resumed)[k], atol=1e-7), k


def test_ctrl_c_saves_an_interrupted_checkpoint_and_resumes(images, tmp_path):
    t = Trainer(tmp_path / "exp", build_conf(tiny_conf(images)), progress=False)
    step = t.train_step

    def interrupt_after_third(batch):
        out = step(batch)
        if len(t.loss_history) == 3:
            t._sigint(None, None)  # what the first Ctrl-C does
        return out

    t.train_step = interrupt_after_third
    t.run()
    names = [p.name for _, p in list_checkpoints(tmp_path / "exp")]
    assert names == ["checkpoint_0_3_interrupted.tar"]
    assert (tmp_path / "exp" / "val_history.json").exists()  # validated before leaving
    r = Trainer(tmp_path / "exp", build_conf(tiny_conf(images)), restore=True, progress=False)
    assert (r.epoch, r.iter, r.step) == (0, 3, 3)
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C aborts at once
        t._sigint(None, None)


def test_non_finite_loss_is_skipped(images, tmp_path, caplog):
    t = Trainer(tmp_path / "exp", build_conf(tiny_conf(images, max_iterations=3)), progress=False)
    pipeline_loss = t.model.loss
    calls = {"n": 0}

    def sometimes_nan(pred, data):
        losses, metrics = pipeline_loss(pred, data)
        calls["n"] += 1
        if calls["n"] == 2:
            losses["total"] = losses["total"] * float("nan")
        return losses, metrics

    t.model.loss = sometimes_nan
    before = {}

    def snapshot_step(batch, step=t.train_step):
        before[calls["n"] + 1] = _params(t)
        return step(batch)

    t.train_step = snapshot_step
    with caplog.at_level(logging.WARNING, logger="tiepoint"):
        t.run()
    assert t.skipped == 1 and t.step == 3
    assert any("non-finite loss" in r.getMessage() for r in caplog.records)
    after_nan = before[3]  # parameters before the 3rd forward = after the skipped 2nd one
    for k, v in before[2].items():
        assert torch.equal(v, after_nan[k]), k  # the NaN step changed nothing
    assert all(math.isfinite(v) for _, v in t.loss_history)


def test_checkpoints_best_pruning_and_matcher_layout(images, tmp_path):
    exp = train(
        "exp",
        tiny_conf(images, eval_every_iter=2, save_every_iter=1, keep_last_checkpoints=2),
        output_dir=tmp_path,
        progress=False,
    )
    assert [s for s, _ in list_checkpoints(exp)] == [7, 8]  # keep last 2; epoch ends write one each
    ck = load_checkpoint(exp / "checkpoint_best.tar")
    assert ck["model"] and all(k.startswith("matcher.") for k in ck["model"])
    assert ck["conf"]["model"]["matcher"]["n_layers"] == 2
    hist = OmegaConf.load(exp / "config.yaml")
    assert hist.model.matcher.descriptor_dim == 32
    assert (exp / "val_curves.png").exists()
    # atomic writes still give the permissions a plain open() would (not mkstemp's 0600)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("checkpoint_best.tar", "config.yaml", "val_history.json", "val_curves.png"):
        assert (exp / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert "validation at step" in (exp / "log.txt").read_text()
    try:
        import tensorboard  # noqa: F401  (the `train` extra)
    except ImportError:
        pass
    else:
        assert list(exp.glob("events.out.tfevents*"))
    # the checkpoint is directly usable by the matching API (architecture given as overrides)
    from tiepoint import Matcher

    m = Matcher(
        "sift+lightglue",
        device="cpu",
        weights=str(exp / "checkpoint_best.tar"),
        overrides=[
            "matcher.weights=null",
            "matcher.pretrained=false",
            "matcher.descriptor_dim=32",
            "matcher.n_layers=2",
            "matcher.num_heads=2",
            "matcher.add_scale_ori=false",
        ],
    )
    for k, v in m.matcher.state_dict().items():
        assert torch.equal(v, ck["model"][f"matcher.{k}"]), k
    # a second run with the same name refuses to overwrite
    with pytest.raises(ConfigError, match="--restore"):
        train("exp", tiny_conf(images), output_dir=tmp_path, progress=False)


def test_fine_tune_from_an_experiment(images, tmp_path):
    from tiepoint.training import load_experiment

    train("small", tiny_conf(images, max_iterations=1), output_dir=tmp_path, progress=False)
    best = load_checkpoint(tmp_path / "training" / "small" / "checkpoint_best.tar")["model"]
    # same architecture: the new run starts from the old weights
    t = Trainer(
        tmp_path / "training" / "ft",
        build_conf(tiny_conf(images, load_experiment="small")),
        progress=False,
    )
    for k, v in t.model.matcher.state_dict().items():
        assert torch.equal(v, best[f"matcher.{k}"]), k
    # the experiment can also be rebuilt as a model for inference
    model = load_experiment("small", output_dir=tmp_path)
    assert model.matcher.conf.n_layers == 2 and not model.training
    # another architecture: a clear report of what differs
    conf = tiny_conf(images, load_experiment="small")
    conf.model.matcher.n_layers = 3
    with pytest.raises(WeightsError, match=r"different matcher architecture.*n_layers: 2 → 3"):
        train("big", conf, output_dir=tmp_path, progress=False)


def test_bfloat16_autocast_matches_float32_and_clips_gradients(images, tmp_path, monkeypatch):
    """The same two steps with and without bf16 autocast (same seed, same batches): the matcher
    really computes in bf16, parameters and gradients stay float32, losses agree with float32
    within bf16 accuracy, and the clipped gradient has exactly the clip norm and float32's direction."""
    clip = 0.5
    clip_grad_norm = torch.nn.utils.clip_grad_norm_
    runs = {}
    for mp in (None, "bfloat16"):
        conf = tiny_conf(images, max_iterations=2, mixed_precision=mp, clip_grad=clip)
        t = Trainer(tmp_path / str(mp), build_conf(conf), progress=False)
        seen = {"pre": [], "post": [], "grads": [], "grad_dtypes": set(), "linear_out": set()}

        def spy(params, max_norm, *a, seen=seen, **k):
            params = list(params)
            norm = clip_grad_norm(params, max_norm, *a, **k)
            grads = [p.grad for p in params if p.grad is not None]
            seen["pre"].append(float(norm))
            seen["post"].append(
                float(torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads])))
            )
            seen["grads"].append(torch.cat([g.detach().flatten().clone() for g in grads]))
            seen["grad_dtypes"] |= {g.dtype for g in grads}
            return norm

        monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
        linear = next(m for m in t.model.matcher.modules() if isinstance(m, torch.nn.Linear))
        linear.register_forward_hook(lambda m, i, o, seen=seen: seen["linear_out"].add(o.dtype))
        t.run()
        assert t.step == 2 and t.skipped == 0
        assert {p.dtype for p in t.model.parameters()} == {torch.float32}
        runs[mp] = (t, seen)
    (f32, s32), (bf16, s16) = runs[None], runs["bfloat16"]
    assert s32["linear_out"] == {torch.float32} and torch.bfloat16 in s16["linear_out"]
    assert s16["grad_dtypes"] == s32["grad_dtypes"] == {torch.float32}
    l32, l16 = dict(f32.loss_history), dict(bf16.loss_history)
    assert sorted(l16) == sorted(l32) == [1, 2]
    for step in (1, 2):
        assert math.isfinite(l16[step]) and l16[step] == pytest.approx(l32[step], rel=0.03), step
    assert l16 != l32  # bf16 rounding shows: the two runs are not the same computation
    # the raw norm exceeds the clip, so clipping acts; afterwards the norm is the clip exactly
    assert min(s32["pre"] + s16["pre"]) > clip
    assert s16["pre"][0] == pytest.approx(s32["pre"][0], rel=0.05)
    assert s16["post"] == pytest.approx([clip] * 2, rel=1e-4)
    assert s32["post"] == pytest.approx([clip] * 2, rel=1e-4)
    g32, g16 = s32["grads"][0], s16["grads"][0]
    assert torch.nn.functional.cosine_similarity(g32, g16, dim=0) > 0.99


def test_cli_bad_inputs_are_one_line_errors(images, tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    OmegaConf.save(tiny_conf(images), cfg)
    args = ["train", "x", "--conf", str(cfg), "--output-dir", str(tmp_path)]
    assert cli_main(args + ["train.lr_shedule.type=exp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and "train.lr_shedule" in err[0]
        and "did you mean 'train.lr_schedule'" in err[0]
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(args + [f"data.data_dir={empty}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "contains no images" in err[0]


def test_training_continues_past_a_corrupt_image(tmp_path, caplog):
    folder = make_images(tmp_path / "imgs", n=5)
    (folder / "zz_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    conf = tiny_conf(folder, max_iterations=4)
    conf.data.val_size = 1
    with caplog.at_level(logging.WARNING, logger="tiepoint"):
        t = Trainer(tmp_path / "exp", build_conf(conf), progress=False)
        t.run()
    assert t.step == 4
    assert any("zz_corrupt.jpg" in r.getMessage() for r in caplog.records)


def test_feature_cache_trains_the_same_model(images, tmp_path):
    conf = tiny_conf(images, max_iterations=2)
    conf.train.feature_cache = {"enabled": True, "num_epochs": 2, "batch_size": 4}
    t = Trainer(tmp_path / "exp", build_conf(conf), progress=False)
    t.run()
    assert (tmp_path / "exp/feature_cache/train.h5").exists()
    item = t.train_set[3]
    assert item["keypoints0"].shape == (48, 2) and item["descriptors0"].shape == (48, 128)
    assert "H_0to1" in item and t.step == 2
    # the cached features are the extractor's features of the same item
    from tiepoint.datasets import get_dataset

    raw = get_dataset(conf.data).get_dataset("train")[3]
    f = t.model.extract({k: v[None] for k, v in raw["view0"].items()})
    real = item["mask0"].bool()
    assert torch.allclose(f["keypoints"][0][real], item["keypoints0"][real])
    assert torch.allclose(raw["H_0to1"], item["H_0to1"])


def test_lr_schedules():
    exp = lr_factor({"type": "exp", "start": 2, "exp_div_10": 4}, 10)
    assert [exp(n) for n in (0, 1, 2)] == [1, 1, 1] and exp(6) == pytest.approx(0.1)
    step = lr_factor({"type": "step", "start": 0, "step_size": 3, "gamma": 0.5}, 10)
    assert [step(n) for n in (0, 2, 3, 6)] == [1, 1, 0.5, 0.25]
    cos = lr_factor({"type": "cosine", "min_factor": 0.1}, 10)
    assert cos(0) == 1 and cos(5) == pytest.approx(0.55) and cos(10) == pytest.approx(0.1)
    warm = lr_factor({"type": None, "warmup": 4}, 10)
    assert [warm(n) for n in (0, 1, 3, 8)] == [0.25, 0.5, 1, 1]
    with pytest.raises(ConfigError, match="lr_schedule.type"):
        lr_factor({"type": "linear"}, 10)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny models: thread start-up and contention cost more than they bring
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_run_benchmarks_evaluates_the_checkpoint(images, tmp_path, data_dir):
    """--run-benchmarks writes the benchmark's results for the checkpoint of the epoch start, and
    they are the results of running that benchmark directly on that checkpoint."""
    from tiepoint.evaluation import runner

    conf = tiny_conf(images, max_iterations=2)
    overrides = [
        f"data.root={data_dir}",
        "data.max_pairs=2",
        "data.tasks=[homography]",
        "matcher.filter_threshold=0.0",  # an untrained matcher still returns matches
    ]
    conf.benchmarks = {"pairs": {"overrides": overrides}}
    cfg = tmp_path / "bench.yaml"
    OmegaConf.save(conf, cfg)
    # through the CLI, which hands evaluation's benchmark hook to the trainer
    args = ["train", "bench", "--conf", str(cfg), "--output-dir", str(tmp_path)]
    assert cli_main([*args, "--run-benchmarks"]) == 0
    exp = tmp_path / "training" / "bench"
    summaries = tmp_path / "results" / "pairs" / "bench" / "0" / "summaries.json"
    assert summaries.exists()
    got = json.loads(summaries.read_text())
    recalls = [f"H_error_{e}@{t}px" for e in ("dlt", "ransac") for t in (3, 5, 10)]
    shares = ["mprec@1px", "mprec@3px", "H_error_dlt_mAA", "H_error_ransac_mAA", *recalls]
    errors = ["mH_error_dlt", "mH_error_ransac"]
    counts = ["mnum_keypoints", "mnum_matches", "mransac_inl"]
    assert set(shares + errors + counts) <= set(got), sorted(got)
    assert 0 < got["mnum_keypoints"] <= 48  # the extractor's max_num_keypoints
    assert 0 < got["mnum_matches"] <= got["mnum_keypoints"]
    assert 0 <= got["mransac_inl"] <= got["mnum_matches"]
    assert all(0.0 <= got[k] <= 1.0 for k in shares), {k: got[k] for k in shares}
    assert all(got[k] == "inf" or got[k] >= 0 for k in errors)  # JSON writes inf as "inf"
    assert got["ransac_th"] == 3.0

    step, ckpt = list_checkpoints(exp)[0]
    assert step == 0  # epoch 0 is benchmarked before its first step
    pipeline = {
        "preprocessing": {"resize": 1024},
        "extractor": OmegaConf.to_container(conf.model.extractor),
        "matcher": {**OmegaConf.to_container(conf.model.matcher), "weights": None},
    }
    direct, _ = runner.run(
        "pairs",
        pipeline,
        tag="direct",
        weights=str(ckpt),
        overrides=overrides,
        device="cpu",
        progress=False,
        output_dir=tmp_path / "direct",
    )
    timing = {k for k in got if "time" in k}
    assert set(direct) == set(got)
    for k in sorted(set(got) - timing):  # the file spells infinity "inf"
        want = float(got[k]) if isinstance(got[k], str) else got[k]
        assert direct[k] == pytest.approx(want, nan_ok=True), k


def test_training_does_not_import_evaluation():
    # floors: training/ sits below evaluation/; the benchmark hook is passed in from the CLI
    import ast
    from pathlib import Path

    import tiepoint.training

    for path in Path(tiepoint.training.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any("evaluation" in n for n in names), path.name
