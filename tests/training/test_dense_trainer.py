"""The trainer on a dense model: a tiny mini-DKM (tests/dense_toy.py) learns synthetic homographies
of real photographs (EPE down, PCK up against the exact GT warp), resumes exactly, and its
checkpoints rebuild the trained model; dense-specific config errors."""

import json

import pytest
import torch
from helpers import resume_and_compare
from omegaconf import OmegaConf

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models.base import load_state_strict
from tiepoint.training import build_conf, load_experiment
from tiepoint.training.checkpoints import list_checkpoints, load_checkpoint
from tiepoint.training.trainer import Trainer

TOY = "dense_toy:ToyDense"


def dense_conf(data_dir, **train_conf):
    return OmegaConf.create(
        {
            "data": {
                "name": "homographies",
                "data_dir": str(data_dir / "homography"),  # 24 real photographs
                "train_size": 32,
                "val_size": 3,
                "val_pairs": 6,
                "batch_size": 4,
                "load_size": 256,
                "homography": {"patch_shape": [80, 64], "difficulty": 0.3, "max_angle": 15},
                "photometric": {"name": "lg", "p": 0.5},
            },
            "model": {"dense": {"name": TOY}},
            "train": {
                "epochs": 8,
                "lr": 3e-3,
                "eval_every_iter": 16,
                "save_every_iter": 0,
                "log_every_iter": 1,
                "best_key": "epe",
                **train_conf,
            },
        }
    )


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """64 steps (8 epochs of 8 batches of 4 pairs), validated every 16 steps: ~20 s on one core."""
    root = tmp_path_factory.mktemp("dense")
    t = Trainer(root / "training" / "toy", build_conf(dense_conf(data_dir)), progress=False)
    t.run()
    return root, t.exp_dir, dict(t.loss_history)


def test_dense_model_learns_homographies(trained):
    _, exp, _ = trained
    hist = json.loads((exp / "val_history.json").read_text())
    assert [h["step"] for h in hist] == [0, 8, 16, 24, 32, 40, 48, 56, 64]
    first, last = hist[0], hist[-1]
    # the finest-scale warp against the exact GT warp of H_0to1, in pixels of the 80×64 image 1
    assert last["epe"] < 0.75 * first["epe"], (first["epe"], last["epe"])
    assert last["pck@3"] > 2 * first["pck@3"] + 0.01, (first["pck@3"], last["pck@3"])
    assert last["loss/total"] < first["loss/total"]
    assert {"loss/epe_8", "loss/ce_1", "pck@1", "pck@5"} <= set(last)
    assert (exp / "val_curves.png").exists()


def test_dense_checkpoint_layout_and_reload(trained, data_dir):
    root, exp, _ = trained
    ck = load_checkpoint(exp / "checkpoint_best.tar")
    assert ck["model"] and all(k.startswith("dense.") for k in ck["model"])
    assert ck["conf"]["model"]["dense"]["name"] == TOY
    model = load_experiment("toy", output_dir=root)
    assert not model.training and type(model).__name__ == "DenseTwoViewPipeline"
    for k, v in model.dense.state_dict().items():
        assert torch.equal(v, ck["model"][f"dense.{k}"]), k
    # the `dense.` weights alone load strictly into a fresh model of the stored config
    from dense_toy import ToyDense

    fresh = ToyDense(ck["conf"]["model"]["dense"])
    load_state_strict(
        fresh, {k[6:]: v for k, v in ck["model"].items()}, "checkpoint_best.tar", "ToyDense"
    )
    # the rebuilt model predicts what the trained weights predict, and scores as validation did
    from tiepoint.datasets import get_dataset

    data = get_dataset(build_conf(dense_conf(data_dir)).data)
    batch = next(iter(data.get_data_loader("val")))
    with torch.no_grad():
        pred = model(batch)
        fresh.eval()
        direct = fresh({"image0": batch["view0"]["image"], "image1": batch["view1"]["image"]})
        _, metrics = model.loss(pred, batch)
    # (the fresh model is symmetric, the class default: its `warp` output is image 0 → 1)
    assert torch.allclose(pred["scales"][1]["warp"], direct["warp"][..., 2:], atol=1e-6)
    hist = json.loads((exp / "val_history.json").read_text())
    best = min(h["epe"] for h in hist)
    assert ck["best"] == pytest.approx(best)
    assert torch.isfinite(metrics["epe"]).all() and metrics["epe"].shape == (4,)


def test_dense_resume_gives_the_same_next_steps(trained, data_dir, tmp_path):
    full = trained[2]
    conf = build_conf(dense_conf(data_dir, max_iterations=3, eval_every_iter=0))
    Trainer(tmp_path / "part", conf, progress=False).run()
    assert [s for s, _ in list_checkpoints(tmp_path / "part")] == [3]
    resume_and_compare(tmp_path / "part", conf, 3, 6, full)


def _batch(data_dir, n=2):
    from tiepoint.datasets import get_dataset

    conf = build_conf(dense_conf(data_dir)).data
    conf.batch_size = n
    return next(iter(get_dataset(conf).get_data_loader("val")))


def test_dkm_layout_and_symmetric_output_train_the_same(data_dir):
    """DKM's own per-scale layout (flow/logits, both directions as 2B rows) gives the pipeline the
    same image 0 → 1 predictions, loss and metrics as the contract layout of one direction."""
    from tiepoint.models.dense_two_view_pipeline import DenseTwoViewPipeline

    batch = _batch(data_dir)
    one = DenseTwoViewPipeline({"dense": {"name": TOY}})
    assert one.dense.symmetric is False  # one direction unless the config asks for both
    both = DenseTwoViewPipeline({"dense": {"name": TOY, "layout": "dkm", "symmetric": True}})
    both.load_state_dict(one.state_dict())
    with torch.no_grad():
        p1, p2 = one(batch), both(batch)
        (l1, m1), (l2, m2) = one.loss(p1, batch), both.loss(p2, batch)
    assert sorted(p1["scales"]) == sorted(p2["scales"]) == [1, 2, 4, 8]
    for s in p1["scales"]:
        assert p2["scales"][s]["warp"].shape == (2, 64 // s, 80 // s, 2)
        assert torch.allclose(p1["scales"][s]["warp"], p2["scales"][s]["warp"], atol=1e-6)
    assert float(l1["total"]) == pytest.approx(float(l2["total"]), rel=1e-5)
    assert torch.allclose(m1["epe"], m2["epe"], atol=1e-4)


def test_every_param_group_lr_is_logged(data_dir, tmp_path):
    conf = dense_conf(data_dir, max_iterations=1, eval_at_start=False, eval_every_iter=0)
    conf.train.param_groups = [{"regexp": r"^dense\.enc\.", "lr": 1e-4}]
    t = Trainer(tmp_path / "exp", build_conf(conf), progress=False)
    logged = {}

    class Recorder:
        def add_scalar(self, key, value, step):
            logged[key] = value

        def flush(self):
            pass

        def close(self):
            pass

    t.writer = Recorder()
    t.run()
    assert logged["training/lr/0"] == pytest.approx(1e-4)
    assert logged["training/lr/rest"] == pytest.approx(3e-3)
    log = (tmp_path / "exp" / "log.txt").read_text()
    assert r"parameter group lr/0 (regexp '^dense\.enc\.')" in log and "lr 0.0001" in log


def test_dense_config_errors(data_dir, tmp_path, trained):
    conf = dense_conf(data_dir)
    conf.train.feature_cache = {"enabled": True}
    with pytest.raises(ConfigError, match="feature_cache.*dense model reads images"):
        build_conf(conf)
    conf = dense_conf(data_dir)
    conf.model.matcher = {"name": "lightglue"}
    with pytest.raises(ConfigError, match="both dense and matcher"):
        build_conf(conf)
    conf = dense_conf(data_dir)
    conf.model.dense.dimm = 8
    with pytest.raises(ConfigError, match=r"'dimm' in model.dense \(did you mean 'dim'"):
        build_conf(conf)
    conf = dense_conf(data_dir)
    conf.model.loss = {"ce_weigth": 1.0}
    with pytest.raises(ConfigError, match="ce_weigth"):
        build_conf(conf)
    # fine-tuning from an experiment of another architecture: one line saying what differs
    root = trained[0]
    conf = dense_conf(data_dir, load_experiment=str(root / "training" / "toy"))
    conf.model.dense.dim = 8
    with pytest.raises(WeightsError, match=r"different dense architecture.*dim: 16 → 8"):
        Trainer(tmp_path / "ft", build_conf(conf), progress=False)
    # same architecture: starts from the trained weights
    t = Trainer(
        tmp_path / "ft2",
        build_conf(dense_conf(data_dir, load_experiment=str(root / "training" / "toy"))),
        progress=False,
    )
    best = load_checkpoint(root / "training" / "toy" / "checkpoint_best.tar")["model"]
    for k, v in t.model.dense.state_dict().items():
        assert torch.equal(v, best[f"dense.{k}"]), k


@pytest.mark.parametrize("preset", ["dkm_homography", "dkm_cpu_demo", "dkm_megadepth"])
def test_packaged_dkm_presets_validate(preset):
    pytest.importorskip("tiepoint.models.dense.dkm")  # the DKM model (issue #10)
    conf = build_conf(preset)
    assert conf.model.dense.name == "dkm"


def test_run_benchmarks_evaluates_a_dense_checkpoint(data_dir, tmp_path):
    """`tiepoint train --run-benchmarks` on a tiny DKM writes the benchmark's results for the
    checkpoint of the epoch start, equal to `tiepoint eval pairs --pipeline dkm --weights <it>`."""
    from helpers import TINY_DKM

    from tiepoint.cli import main as cli_main

    conf = dense_conf(data_dir, max_iterations=1, eval_every_iter=0, eval_at_start=False)
    conf.data.batch_size = 2
    conf.data.homography.patch_shape = [96, 64]
    conf.model.dense = TINY_DKM
    overrides = [
        f"data.root={data_dir}",
        "data.max_pairs=2",
        "data.tasks=[homography]",
        "dense.num_matches=300",
    ]
    # the packaged `dkm` pipeline (the default for a DKM), its sampling set by the overrides
    conf.benchmarks = {"pairs": {"overrides": overrides}}
    cfg = tmp_path / "bench.yaml"
    OmegaConf.save(conf, cfg)
    args = ["train", "dbench", "--conf", str(cfg), "--output-dir", str(tmp_path)]
    assert cli_main([*args, "--run-benchmarks"]) == 0
    got = json.loads((tmp_path / "results/pairs/dbench/0/summaries.json").read_text())
    shares = ["mprec@1px", "mprec@3px", "H_error_dlt_mAA", "H_error_ransac_mAA"]
    shares += [f"H_error_{e}@{t}px" for e in ("dlt", "ransac") for t in (3, 5, 10)]
    errors = ["mH_error_dlt", "mH_error_ransac"]
    assert set(shares + errors + ["mnum_matches", "mransac_inl"]) <= set(got), sorted(got)
    assert 0 < got["mnum_matches"] <= 300  # sampled from the (random-decoder) certainty
    assert 0 <= got["mransac_inl"] <= got["mnum_matches"]
    assert all(0.0 <= got[k] <= 1.0 for k in shares), {k: got[k] for k in shares}
    assert all(got[k] == "inf" or got[k] >= 0 for k in errors)
    run_conf = OmegaConf.load(tmp_path / "results/pairs/dbench/0/conf.yaml")
    assert run_conf.model.pipeline == "dkm" and run_conf.model.dense.num_matches == 300

    step, ckpt = list_checkpoints(tmp_path / "training" / "dbench")[0]
    assert step == 0
    direct = ["eval", "pairs", "--pipeline", "dkm", "--weights", str(ckpt), "--tag", "direct"]
    direct += ["--output-dir", str(tmp_path / "direct"), "--device", "cpu", *overrides]
    assert cli_main(direct) == 0
    want = json.loads((tmp_path / "direct/results/pairs/direct/summaries.json").read_text())
    timing = {k for k in got if "time" in k}
    assert set(want) == set(got)
    assert {k: got[k] for k in set(got) - timing} == {k: want[k] for k in set(want) - timing}


def test_benchmark_pipeline_of_a_dense_model_must_run_that_model():
    from helpers import TINY_DKM

    from tiepoint.evaluation.training_hook import benchmark_pipeline

    model = OmegaConf.create({"dense": TINY_DKM})
    assert benchmark_pipeline(model, {}) == "dkm"  # the packaged pipeline of the model's name
    toy = OmegaConf.create({"dense": {"name": TOY}})
    assert benchmark_pipeline(toy, {}) == {"dense": {"name": TOY}}
    with pytest.raises(ConfigError, match="'aliked\\+lightglue' is not dense"):
        benchmark_pipeline(model, {"pipeline": "aliked+lightglue"})
    with pytest.raises(ConfigError, match=f"runs dense model '{TOY}', not the trained 'dkm'"):
        benchmark_pipeline(model, {"pipeline": {"dense": {"name": TOY}}})
