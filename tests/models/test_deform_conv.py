"""Plain-torch deformable convolution against an explicit-loop definition and against conv2d."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiepoint.models.extractors.deform_conv import DeformConv2d, deform_conv2d


def _bilinear_zero(img: np.ndarray, y: float, x: float) -> float:
    """Value of a 2-D array at (y, x): bilinear between the 4 surrounding pixels, 0 outside."""
    y0, x0 = math.floor(y), math.floor(x)
    total = 0.0
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < img.shape[0] and 0 <= xx < img.shape[1]:
                total += wy * wx * img[yy, xx]
    return total


def naive_deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask):
    """Literal definition of DCN v2 with explicit loops (float64 numpy)."""
    x, offset, weight = (t.double().numpy() for t in (x, offset, weight))
    mask = None if mask is None else mask.double().numpy()
    b, cin = x.shape[:2]
    cout, cin_g, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    ho, wo = offset.shape[-2:]
    k = kh * kw
    groups = cin // cin_g
    n_off = offset.shape[1] // (2 * k)
    out = np.zeros((b, cout, ho, wo))
    for bi in range(b):
        for co in range(cout):
            grp = co // (cout // groups)
            for oy in range(ho):
                for ox in range(wo):
                    acc = 0.0 if bias is None else float(bias[co])
                    for cl in range(cin_g):
                        ci = grp * cin_g + cl
                        g = ci // (cin // n_off)
                        for i in range(kh):
                            for j in range(kw):
                                t = g * k + i * kw + j
                                y = oy * sh - ph + i * dh + offset[bi, 2 * t, oy, ox]
                                xx = ox * sw - pw + j * dw + offset[bi, 2 * t + 1, oy, ox]
                                v = _bilinear_zero(x[bi, ci], y, xx)
                                if mask is not None:
                                    v *= mask[bi, t, oy, ox]
                                acc += weight[co, cl, i, j] * v
                    out[bi, co, oy, ox] = acc
    return torch.from_numpy(out)


def _out_size(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


CASES = [
    # (b, cin, cout, h, w, kernel, stride, padding, dilation, groups, offset_groups, use_mask, bias)
    (2, 4, 3, 6, 7, (3, 3), (1, 1), (1, 1), (1, 1), 1, 1, False, False),
    (1, 4, 4, 7, 6, (3, 3), (2, 1), (1, 2), (1, 2), 2, 2, True, True),
    (2, 6, 4, 5, 8, (2, 3), (1, 2), (0, 1), (2, 1), 2, 3, True, False),
    (1, 2, 5, 9, 9, (3, 3), (2, 2), (2, 2), (2, 2), 1, 2, False, True),
]


@pytest.mark.parametrize("case", CASES)
def test_matches_explicit_loop(case):
    b, cin, cout, h, w, ks, st, pad, dil, groups, n_off, use_mask, use_bias = case
    g = torch.Generator().manual_seed(hash(case) % 2**31)
    ho, wo = (_out_size(n, k, s, p, d) for n, k, s, p, d in zip((h, w), ks, st, pad, dil))
    kk = ks[0] * ks[1]
    x = torch.randn(b, cin, h, w, generator=g)
    weight = torch.randn(cout, cin // groups, *ks, generator=g)
    bias = torch.randn(cout, generator=g) if use_bias else None
    # large enough to push many samples across pixel borders and outside the image
    offset = 2.5 * torch.randn(b, 2 * n_off * kk, ho, wo, generator=g)
    mask = torch.rand(b, n_off * kk, ho, wo, generator=g) if use_mask else None
    ours = deform_conv2d(x, offset, weight, bias, st, pad, dil, mask)
    ref = naive_deform_conv2d(x, offset, weight, bias, st, pad, dil, mask)
    assert ours.shape == ref.shape == (b, cout, ho, wo)
    torch.testing.assert_close(ours.double(), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2), (2, 0, 1, 4)]
)
def test_zero_offsets_equal_conv2d(stride, padding, dilation, groups):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 13, 11, generator=g)
    weight = torch.randn(12, 8 // groups, 3, 3, generator=g)
    bias = torch.randn(12, generator=g)
    ref = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 18, *ref.shape[-2:])
    ours = deform_conv2d(x, offset, weight, bias, stride, padding, dilation)
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    ones = torch.ones(2, 9, *ref.shape[-2:])  # a mask of ones changes nothing
    torch.testing.assert_close(
        deform_conv2d(x, offset, weight, bias, stride, padding, dilation, ones),
        ref,
        atol=1e-4,
        rtol=1e-4,
    )


def test_integer_offset_is_a_shift():
    """Every tap moved by (+1 row, −2 cols) equals conv2d of the input shifted the other way."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, 10, 12, generator=g)
    weight = torch.randn(5, 3, 3, 3, generator=g)
    offset = torch.zeros(1, 18, 10, 12)
    offset[:, 0::2] = 1.0
    offset[:, 1::2] = -2.0
    padded = F.pad(x, (1, 1, 1, 1))  # the conv's zero padding, made explicit
    shifted = torch.zeros_like(padded)
    shifted[:, :, :-1, 2:] = padded[:, :, 1:, :-2]  # shifted[y, x] = padded[y + 1, x − 2]
    torch.testing.assert_close(
        deform_conv2d(x, offset, weight, None, 1, 1),
        F.conv2d(shifted, weight),
        atol=1e-4,
        rtol=1e-4,
    )


def test_gradients_match_finite_differences():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    # keep samples away from integer positions where bilinear interpolation has kinks
    offset = (
        torch.rand(1, 18, 5, 5, generator=g, dtype=torch.float64) * 0.6 + 0.2
    ).requires_grad_()
    mask = torch.rand(1, 9, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    fn = lambda a, o, wt, m: deform_conv2d(a, o, wt, None, 1, 1, 1, m)
    assert torch.autograd.gradcheck(fn, (x, offset, weight, mask), eps=1e-6, atol=1e-5)


def test_module_and_bad_shapes():
    conv = DeformConv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(1, 4, 8, 8)
    out = conv(x, torch.zeros(1, 18, 8, 8))
    torch.testing.assert_close(
        out, F.conv2d(x, conv.weight, conv.bias, 1, 1, 1, 2), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ValueError, match="offset"):
        conv(x, torch.zeros(1, 17, 8, 8))
    with pytest.raises(ValueError, match="offset shape"):
        conv(x, torch.zeros(1, 18, 7, 8))
    with pytest.raises(ValueError, match="groups"):
        DeformConv2d(4, 6, 3, groups=4)
