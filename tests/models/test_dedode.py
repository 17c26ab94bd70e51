"""DeDoDe through kornia: the official file layout loads strictly; our pixel/normalisation
conventions against kornia's own output; a one-line error without kornia or with a wrong file."""

import sys

import pytest
import torch
from helpers import unavailable

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models import get_model


def test_missing_kornia_is_one_line_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "kornia.feature", None)  # import → ImportError
    with pytest.raises(
        ConfigError, match=r"needs kornia\.feature\.DeDoDe .*pip install -U 'kornia>=0\.7'"
    ) as e:
        get_model(
            "extractor", {"name": "dedode", "detector_weights": "x", "descriptor_weights": "y"}
        )
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_official_layout_and_conventions(tmp_path):
    try:
        from kornia.feature import DeDoDe as KorniaDeDoDe
        from kornia.feature.dedode.dedode_models import get_descriptor, get_detector
    except ImportError:
        unavailable("kornia.feature.DeDoDe is not importable")
    torch.manual_seed(0)
    # official DeDoDe files are the state dicts of these modules (same module names upstream)
    det, desc = get_detector("L"), get_descriptor("B")
    torch.save(det.state_dict(), tmp_path / "dedode_detector_L.pth")
    torch.save(desc.state_dict(), tmp_path / "dedode_descriptor_B.pth")
    conf = {
        "name": "dedode",
        "detector_weights": str(tmp_path / "dedode_detector_L.pth"),
        "descriptor_weights": str(tmp_path / "dedode_descriptor_B.pth"),
        "max_num_keypoints": 64,
    }
    model = get_model("extractor", conf).eval()
    assert all(
        torch.equal(v, det.state_dict()[k]) for k, v in model.net.detector.state_dict().items()
    )

    ref = KorniaDeDoDe("L", "B", amp_dtype=torch.float32).eval()
    ref.detector.load_state_dict(det.state_dict())
    ref.descriptor.load_state_dict(desc.state_dict())
    image = torch.rand(1, 3, 45, 61, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model({"image": image})
        k_ref, s_ref, d_ref = ref(image, n=64)
    k = out["keypoints"][0]
    # kornia's pixels are corner-convention (i + 0.5); ours have centres at integers
    assert torch.allclose(k, k_ref[0] - 0.5, atol=1e-4)
    assert torch.allclose(k, k.round(), atol=1e-4)  # DeDoDe picks pixels of its score map
    assert (k >= -1e-4).all() and (k[:, 0] <= 60 + 1e-4).all() and (k[:, 1] <= 44 + 1e-4).all()
    assert torch.allclose(out["keypoint_scores"][0], s_ref[0])
    d = out["descriptors"][0]
    assert d.shape == (64, 256)
    assert torch.allclose(d, torch.nn.functional.normalize(d_ref[0], dim=-1), atol=1e-5)

    bad = det.state_dict()
    bad["decoder.extra.weight"] = bad.pop("encoder.layers.0.weight")
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="bad.pth: weights do not fit this DeDoDe detector") as e:
        get_model("extractor", {**conf, "detector_weights": str(tmp_path / "bad.pth")})
    assert "\n" not in str(e.value)
