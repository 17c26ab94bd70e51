"""Each model class is the one authority on its presets, its weight names and how it is rebuilt from a
training checkpoint; models never reach into training/ or evaluation/."""

import subprocess
import sys

import pytest
import torch

from tiepoint.errors import ConfigError
from tiepoint.models.extractors.aliked import ALIKED
from tiepoint.models.extractors.sift import SIFT
from tiepoint.models.matchers.diffglue import DiffGlue
from tiepoint.models.matchers.lightglue import FEATURES, LightGlue

SMALL = {"descriptor_dim": 32, "num_heads": 2, "n_layers": 2}


def test_presets_apply_under_the_given_conf_and_unknown_features_are_errors():
    conf = LightGlue.build_conf({"features": "xfeat", "n_layers": 3})
    assert conf.input_dim == FEATURES["xfeat"]["input_dim"] == 64
    assert conf.descriptor_dim == 96 and conf.n_layers == 3  # the given value beats the preset
    assert conf.weights is None  # the preset's weights name is not merged into the conf
    assert DiffGlue.build_conf({"features": "aliked"}).input_dim == 128
    with pytest.raises(
        ConfigError, match=r"unknown LightGlue features 'alikde' \(did you mean 'aliked'\?\)"
    ):
        LightGlue.build_conf({"features": "alikde"})
    with pytest.raises(ConfigError, match="unknown DiffGlue features 'sift'"):
        DiffGlue.preset_conf({"features": "sift"})


def test_weight_names_follow_the_conf():
    assert LightGlue.weight_names({"features": "aliked"}) == ["aliked_lightglue"]
    assert LightGlue.weight_names({"features": "aliked", "pretrained": False}) == []
    assert LightGlue.weight_names({"features": "aliked", "weights": "/x/lg.pth"}) == ["/x/lg.pth"]
    assert DiffGlue.weight_names({"features": "aliked"}) == []
    assert DiffGlue.weight_names({"weights": "aliked_lightglue"}) == ["aliked_lightglue"]
    assert ALIKED.weight_names({"model_name": "aliked-n32"}) == ["aliked-n32"]
    assert ALIKED.weight_names({}) == ["aliked-n16"]
    assert SIFT.weight_names({}) == []


def test_conf_from_checkpoint_keeps_architecture_and_inference_settings():
    trained = {"name": "diffglue", "features": "aliked", **SMALL, "filter_threshold": 0.0}
    trained |= {"weights": "aliked_lightglue", "loss": {"gamma": 0.5}}
    asked = {"name": "diffglue", "features": "aliked", "filter_threshold": 0.3, "seed": 7}
    conf = DiffGlue.conf_from_checkpoint(trained, asked)
    assert conf.n_layers == 2 and conf.descriptor_dim == 32  # architecture of the checkpoint
    assert conf.filter_threshold == 0.3 and conf.seed == 7  # inference settings of the pipeline
    assert conf.weights is None and "loss" not in conf and "pretrained" not in conf
    assert DiffGlue(conf).transformers.__len__() == 2  # builds (DiffGlue has no `pretrained`)
    lg = LightGlue.conf_from_checkpoint({"name": "lightglue", "features": "aliked", **SMALL})
    assert lg.pretrained is False and lg.weights is None  # rebuilt as trained, no official weights


def test_matcher_overrides_rebuild_a_diffglue_checkpoint(tmp_path):
    from tiepoint.api import pipeline_conf
    from tiepoint.models import get_model
    from tiepoint.training.checkpoints import matcher_overrides

    trained = {"name": "diffglue", "features": "aliked", **SMALL, "weights": None}
    model = DiffGlue(trained)
    state = {f"matcher.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path / "checkpoint_best.tar"
    torch.save({"model": state, "conf": {"model": {"matcher": trained}}}, path)
    over = matcher_overrides(path)
    assert "matcher.pretrained=false" not in over  # DiffGlue has no such key
    conf = pipeline_conf("aliked+diffglue", over).matcher
    rebuilt = get_model("matcher", conf)
    rebuilt.load_weights(path)
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k


def test_models_import_nothing_from_training_or_evaluation():
    code = (
        "import sys, tiepoint.models.two_view_pipeline, tiepoint.models.losses\n"
        "from tiepoint.models import REGISTRY, model_class\n"
        "[model_class(k, n) for k, t in REGISTRY.items() for n in t]\n"
        "bad = [m for m in sys.modules if m.startswith(('tiepoint.training', 'tiepoint.evaluation'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_fold_batch_norm_equals_conv_then_eval_batch_norm(affine, conv_bias):
    from tiepoint.models.base import fold_batch_norm

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=conv_bias)
    bn = torch.nn.BatchNorm2d(5, affine=affine)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    if affine:
        torch.nn.init.normal_(bn.weight)
        torch.nn.init.normal_(bn.bias)
    bn.eval()
    x = torch.randn(2, 3, 9, 11)
    with torch.no_grad():
        folded = torch.nn.functional.conv2d(x, *fold_batch_norm(conv, bn), padding=1)
        torch.testing.assert_close(folded, bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,stride,bias", [(3, 1, True), (7, 2, True), (1, 1, False)])
def test_conv_gray_equals_conv2d(kernel, stride, bias):
    """The padded channels-last path for one-channel images (SuperPoint's and XFeat's first
    layers) is F.conv2d's convolution, borders and strides included, for a batch."""
    from tiepoint.models.base import conv_gray

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(1, 6, kernel, stride=stride, padding=kernel // 2, bias=bias)
    x = torch.randn(2, 1, 37, 53)
    with torch.no_grad():
        expected = conv(x)
        torch.testing.assert_close(conv_gray(x, conv), expected, rtol=1e-5, atol=1e-5)
        w, b = 2 * conv.weight, torch.ones(6)
        torch.testing.assert_close(
            conv_gray(x, conv, w, b),
            torch.nn.functional.conv2d(x, w, b, stride, kernel // 2),
            rtol=1e-5,
            atol=1e-5,
        )
