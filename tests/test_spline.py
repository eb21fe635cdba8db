"""magnet_lab.spline: exact CPA facts checked against autograd, closed forms and brute force."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from magnet_lab import spline

DT = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is faster


def _mlp(act: str, d: int = 3, width: int = 16, D: int = 5, seed: int = 0,
         hardtanh_out: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    make = {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2)}[act]
    layers = [nn.Linear(d, width), make(), nn.Sequential(nn.Linear(width, width), make()),
              nn.Linear(width, D)]
    if hardtanh_out:
        layers.append(nn.Hardtanh(-0.1, 0.1))
    return nn.Sequential(*layers).to(DT)


def _conv_net(d: int = 4, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(d, 4 * 2 * 2), nn.Unflatten(1, (4, 2, 2)),
        nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),  # -> [3, 4, 4], then [2, 8, 8] out
        nn.BatchNorm2d(3), nn.ReLU(), nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(3, 2, 3, padding=1), nn.Hardtanh(-0.3, 0.3), nn.Flatten(), nn.Identity(),
    ).to(DT)
    bn = net[3]
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.normal_()
        bn.bias.normal_()
    return net.eval()


def _jacobians(net: nn.Module, z: torch.Tensor) -> torch.Tensor:
    # reverse-mode autograd in one pass: copy k of z[b] only feeds output row k into the sum
    B = z.shape[0]
    with torch.no_grad():
        D = net(z[:1]).numel()
    z_rep = z.repeat_interleave(D, dim=0).requires_grad_(True)  # [B*D, d]
    out = net(z_rep).reshape(B, D, D)
    out.diagonal(dim1=1, dim2=2).sum().backward()
    return z_rep.grad.reshape(B, D, -1)  # [B, D, d]


def _flat_codes(codes: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([c.reshape(c.shape[0], -1) for c in codes], dim=1)


NETS = {
    "relu_mlp": lambda: _mlp("relu"),
    "leaky_mlp": lambda: _mlp("leaky_relu", seed=1),
    "relu_mlp_hardtanh_out": lambda: _mlp("relu", seed=2, hardtanh_out=True),
    "conv_bn_upsample_hardtanh": lambda: _conv_net(seed=2),
}


@pytest.mark.parametrize("name", list(NETS))
def test_region_affine_equals_autograd_jacobian_and_offset(name):
    net = NETS[name]()
    d = 4 if name.startswith("conv") else 3
    z = torch.randn(5, d, dtype=DT, generator=torch.Generator().manual_seed(1))
    A, b = spline.region_affine(net, z)
    with torch.no_grad():
        x = net(z).reshape(5, -1)
    assert A.shape == (5, x.shape[1], d) and b.shape == x.shape
    assert torch.allclose(A, _jacobians(net, z), rtol=0, atol=1e-10)
    assert torch.allclose(b, x - torch.einsum("bDd,bd->bD", A, z), rtol=0, atol=1e-10)
    codes = spline.activation_codes(net, z)  # every nonlinearity is exercised in >= 2 states
    assert all(c.unique().numel() >= 2 for c in codes)
    if name.endswith("hardtanh") or name.endswith("hardtanh_out"):  # and Hardtanh saturates
        assert bool((codes[-1] != 0).any()) and bool((codes[-1] == 0).any())


def test_affine_map_holds_in_the_region_and_fails_outside():
    net = _mlp("leaky_relu", seed=3, hardtanh_out=True)
    z = torch.tensor([[0.3, -0.7, 1.1]], dtype=DT)
    A, b = spline.region_affine(net, z)
    near = z + 1e-7 * torch.tensor([[1.0, -2.0, 0.5]], dtype=DT)
    far = -3 * z
    assert torch.equal(_flat_codes(spline.activation_codes(net, near)),
                       _flat_codes(spline.activation_codes(net, z)))
    assert not torch.equal(_flat_codes(spline.activation_codes(net, far)),
                           _flat_codes(spline.activation_codes(net, z)))
    with torch.no_grad():
        assert torch.allclose(net(near), near @ A[0].T + b, rtol=0, atol=1e-12)
        assert (net(far) - (far @ A[0].T + b)).abs().max() > 1e-3


def test_activation_pattern_values_and_torch_tie_convention():
    net = nn.Sequential(nn.Linear(1, 3), nn.LeakyReLU(0.1), nn.Linear(3, 3), nn.ReLU(),
                        nn.Linear(3, 2), nn.Hardtanh()).to(DT)
    with torch.no_grad():  # pre-activations exactly at the kinks for z = 0
        net[0].weight.copy_(torch.tensor([[1.0], [2.0], [-1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.eye(3))
        net[2].bias.zero_()
        net[4].weight.zero_()
        net[4].bias.copy_(torch.tensor([1.0, -1.0]))
    z = torch.zeros(1, 1, dtype=DT)
    leaky, relu, hard = spline.activation_pattern(net, z)
    assert torch.equal(leaky, torch.full((1, 3), 0.1, dtype=DT))  # LeakyReLU'(0) = slope
    assert torch.equal(relu, torch.zeros(1, 3, dtype=DT))  # ReLU'(0) = 0
    assert torch.equal(hard, torch.zeros(1, 2, dtype=DT))  # clipped at exactly ±1
    hard_codes = spline.activation_codes(net, z)[2]
    assert torch.equal(hard_codes, torch.tensor([[1, -1]], dtype=torch.int8))
    # the same convention as torch's backward: d/dz of the first LeakyReLU unit at 0
    zz = z.clone().requires_grad_(True)
    net[1](net[0](zz))[0, 0].backward()
    assert zz.grad.item() == pytest.approx(0.1)
    z_rand = torch.randn(50, 1, dtype=DT, generator=torch.Generator().manual_seed(0))
    leaky, relu, hard = spline.activation_pattern(net, z_rand)
    assert set(leaky.unique().tolist()) == {0.1, 1.0} and set(relu.unique().tolist()) <= {0.0, 1.0}


def test_half_logdet_equals_half_slogdet_of_gram_and_is_minus_inf_when_singular():
    A = torch.randn(7, 5, 3, dtype=DT, generator=torch.Generator().manual_seed(0))
    expected = 0.5 * torch.linalg.slogdet(A.transpose(1, 2) @ A).logabsdet
    got = spline.half_logdet(A)
    assert got.dtype == torch.float64
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    rank1 = torch.outer(torch.arange(1.0, 6.0), torch.tensor([1.0, -2.0, 0.5])).to(DT)[None]
    assert spline.half_logdet(rank1).item() == -math.inf
    assert spline.half_logdet(torch.randn(2, 2, 3, dtype=DT)).eq(-math.inf).all()  # D < d
    assert torch.allclose(spline.half_logdet(A.float()), expected, atol=1e-5)  # float64 inside


def test_log_density_of_linear_net_is_the_gaussian_pushforward_on_its_range():
    d, D = 3, 5
    g = torch.Generator().manual_seed(4)
    net = nn.Sequential(nn.Linear(d, D)).to(DT)
    W, c = net[0].weight.detach(), net[0].bias.detach()
    z = torch.randn(10, d, dtype=DT, generator=g)
    x = z @ W.T + c
    # N(c, W Wᵀ) restricted to range(W): pseudo-inverse quadratic form and pseudo-determinant
    cov = W @ W.T
    evals = torch.linalg.eigvalsh(cov)[-d:]
    quad = torch.einsum("bi,ij,bj->b", x - c, torch.linalg.pinv(cov, hermitian=True), x - c)
    expected = -0.5 * quad - 0.5 * d * math.log(2 * math.pi) - 0.5 * evals.log().sum()
    assert torch.allclose(spline.log_density(net, z), expected, rtol=0, atol=1e-10)


def test_log_density_of_1d_piecewise_linear_net_matches_change_of_variables():
    net = nn.Sequential(nn.Linear(1, 3), nn.ReLU(), nn.Linear(3, 1)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([1.0, 0.0, 1.0]))
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, -3.0]]))
        net[2].bias.fill_(0.5)
    # by hand: G'(z) = [z > -1] + 2 [z > 0] + 3 [z < 1] > 0, so G is injective and
    # p_x(G(z)) = N(z; 0, 1) / G'(z)
    z = torch.tensor([[-2.0], [-0.5], [0.5], [1.5]], dtype=DT)
    slope = torch.tensor([3.0, 4.0, 6.0, 3.0], dtype=DT)
    expected = -0.5 * z[:, 0] ** 2 - 0.5 * math.log(2 * math.pi) - slope.log()
    assert torch.allclose(spline.log_density(net, z), expected, rtol=0, atol=1e-12)
    box = 1.0
    got = spline.log_density(net, z, prior="uniform", box=box)
    assert torch.isinf(got[[0, 3]]).all() and (got[[0, 3]] < 0).all()
    assert torch.allclose(got[1:3], -math.log(2 * box) - slope[1:3].log(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="box"):
        spline.log_density(net, z, prior="uniform")
    with pytest.raises(ValueError, match="prior"):
        spline.log_density(net, z, prior="laplace")


def _check_segment_against_grid(net: nn.Module, z0: torch.Tensor, z1: torch.Tensor,
                                n_grid: int) -> spline.SegmentRegions:
    seg = spline.regions_along_segment(net, z0, z1)
    ts = torch.linspace(0, 1, n_grid, dtype=DT)
    flat = _flat_codes(spline.activation_codes(net, z0 + ts[:, None] * (z1 - z0)))
    changed = (flat[1:] != flat[:-1]).any(dim=1).nonzero().squeeze(1)  # grid intervals
    assert seg.t[0] == 0 and seg.t[-1] == 1 and bool((seg.t.diff() > 0).all())
    # every gap between reported breakpoints spans > 1 grid step, so the grid resolves them all
    assert seg.t.diff().min() > 1.0 / (n_grid - 1)
    inner = seg.t[1:-1]
    assert torch.equal(torch.searchsorted(ts, inner) - 1, changed)
    assert seg.n_regions == changed.numel() + 1
    piece = (torch.searchsorted(seg.t, ts, right=True) - 1).clamp(0, seg.n_regions - 1)
    assert torch.equal(_flat_codes(seg.codes)[piece], flat)  # each piece's pattern, everywhere
    return seg


def test_regions_along_segment_matches_dense_grid_for_mlp():
    net = _mlp("leaky_relu", seed=5, hardtanh_out=True)
    z0, z1 = torch.tensor([-2.0, 1.5, -1.0], dtype=DT), torch.tensor([2.5, -1.0, 2.0], dtype=DT)
    seg = _check_segment_against_grid(net, z0, z1, 100_001)
    assert seg.n_regions > 10
    assert bool((torch.cat([c.flatten() for c in seg.codes]) != 0).any())


def test_regions_along_segment_matches_dense_grid_for_conv_net():
    net = _conv_net(seed=3)
    z0 = torch.tensor([-1.0, 0.5, -0.5, 1.0], dtype=DT)
    seg = _check_segment_against_grid(net, z0, -z0, 20_001)
    assert seg.n_regions > 20
    knots = seg.knots()  # the net is affine between consecutive knots: check one midpoint
    mid = 0.5 * (knots[3] + knots[4])
    A, b = spline.region_affine(net, knots[3:4] * 0.999 + knots[4:5] * 0.001)
    with torch.no_grad():
        assert torch.allclose(net(mid[None]).flatten(), A[0] @ mid + b[0], rtol=0, atol=1e-12)


def test_regions_along_segment_finds_known_kinks_of_1d_units():
    kinks = torch.tensor([-1.5, -0.2, 0.4, 1.0, 2.2], dtype=DT)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=DT)
    net = nn.Sequential(nn.Linear(1, 5), nn.ReLU(), nn.Linear(5, 2)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(w[:, None])
        net[0].bias.copy_(-w * kinks)  # unit i switches at z = kinks[i]
    seg = spline.regions_along_segment(net, torch.tensor([-3.0], dtype=DT),
                                       torch.tensor([3.0], dtype=DT))
    assert seg.n_regions == 6
    assert torch.allclose(seg.t[1:-1], (kinks + 3) / 6, rtol=0, atol=1e-14)
    # Hardtanh(-1, 0.5) on unit pre-activations 2z + 1 and -z: kinks where they hit the clips
    net = nn.Sequential(nn.Linear(1, 2), nn.Hardtanh(-1.0, 0.5), nn.Linear(2, 1)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[2.0], [-1.0]]))
        net[0].bias.copy_(torch.tensor([1.0, 0.0]))
    seg = spline.regions_along_segment(net, torch.tensor([-3.0], dtype=DT),
                                       torch.tensor([3.0], dtype=DT))
    expected = torch.tensor([-1.0, -0.5, -0.25, 1.0], dtype=DT)  # 2z+1 = -1, 0.5 ; -z = 0.5, -1
    assert torch.allclose(seg.t[1:-1], (expected + 3) / 6, rtol=0, atol=1e-14)
    assert seg.codes[0].tolist() == [[-1, 1], [0, 1], [0, 0], [1, 0], [1, -1]]


def test_regions_along_segment_through_kinks_at_the_start_and_simultaneous_crossings():
    # both units switch at z = 0, the segment starts there: one kink-free region follows
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).to(DT)
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [2.0]]))
        net[0].bias.zero_()
    seg = spline.regions_along_segment(net, torch.tensor([0.0], dtype=DT),
                                       torch.tensor([1.0], dtype=DT))
    assert seg.n_regions == 1 and seg.codes[0].tolist() == [[1, 1]]  # the pattern just after 0
    seg = spline.regions_along_segment(net, torch.tensor([-1.0], dtype=DT),
                                       torch.tensor([1.0], dtype=DT))
    assert seg.t.tolist() == [0.0, 0.5, 1.0] and seg.codes[0].tolist() == [[0, 0], [1, 1]]


def test_module_with_net_attribute_nested_sequential_and_inplace_relu_are_handled():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Sequential(nn.ReLU(inplace=True), nn.Linear(2, 3)))

    gen = Wrapper().to(DT)
    z = torch.tensor([[-1.0, 2.0]], dtype=DT)
    A, b = spline.region_affine(gen, z)
    assert z[0, 0] == -1.0  # the caller's z is not clipped by the in-place ReLU
    W = gen.net[0][1].weight.detach()
    assert torch.allclose(A[0], W * torch.tensor([0.0, 1.0], dtype=DT), rtol=0, atol=0)


def test_errors_for_unsupported_modules_training_batchnorm_and_bad_latents():
    z = torch.randn(4, 3, dtype=DT)
    with pytest.raises(TypeError, match=r"Tanh.*ReLU, LeakyReLU, Hardtanh"):
        spline.region_affine(nn.Sequential(nn.Linear(3, 2), nn.Tanh()).to(DT), z)

    class MyLinear(nn.Linear):
        def forward(self, x):
            return super().forward(x) ** 2

    with pytest.raises(TypeError, match="overriding forward"):
        spline.activation_pattern(nn.Sequential(MyLinear(3, 2)).to(DT), z)
    with pytest.raises(TypeError, match="nn.Sequential"):
        spline.region_affine(nn.Linear(3, 2).to(DT), z)
    bn_net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2)).to(DT)
    with pytest.raises(ValueError, match="training mode"):
        spline.region_affine(bn_net, z)
    spline.region_affine(bn_net.eval(), z)  # fine once in eval mode
    net = _mlp("relu")
    with pytest.raises(ValueError, match=r"\[B, 3\]"):
        spline.region_affine(net, torch.randn(4, 2, dtype=DT))
    with pytest.raises(ValueError, match="NaN"):
        spline.log_density(net, torch.tensor([[0.0, math.nan, 1.0]], dtype=DT))
    with pytest.raises(TypeError, match="dtype"):
        spline.region_affine(net, torch.randn(4, 3))
    with pytest.raises(TypeError, match="floating"):
        spline.activation_pattern(net, torch.ones(4, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="1-D"):
        spline.regions_along_segment(net, torch.zeros(1, 3, dtype=DT), torch.ones(1, 3, dtype=DT))
