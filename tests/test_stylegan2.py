"""Our StyleGAN2 generator: official state-dict layout, the two modulated-convolution forms,
torch.func differentiability, the documented StyleGAN2 facts, and clear errors. Tiny float64
configurations (resolution 4-16, <= 32 channels, 2 mapping layers)."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import jvp, vjp, vmap

from magnet_lab import spectra
from magnet_lab.models import generate, truncate
from magnet_lab.models.stylegan2 import (StyleGAN2Generator, _conv_up2, _setup_filter, _up_pad,
                                         _upfirdn2d)

Z, W = 8, 8


def make_G(architecture: str = "skip", res: int = 16, c_dim: int = 0, seed: int = 0,
           modulation: str = "shared", **synthesis) -> StyleGAN2Generator:
    """A tiny float64 G whose biases, noise strengths and w_avg are random (not their zero
    initialisation), so every term of the forward pass matters."""
    torch.manual_seed(seed)
    G = StyleGAN2Generator(Z, c_dim, W, res, 3, dict(num_layers=2),
                           dict(channel_base=256, channel_max=16, architecture=architecture,
                                **synthesis), modulation=modulation).double().eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("bias") or name.endswith("noise_strength"):
                p.add_(0.3 * torch.randn_like(p))
        G.get_submodule("mapping").w_avg.copy_(torch.randn(W, dtype=torch.float64))
    return G.requires_grad_(False)


def z_batch(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, Z, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- the official layout ------------------------------------------------------------------------

def _layer(prefix: str, cin: int, cout: int, res: int) -> dict[str, tuple]:
    return {f"{prefix}.resample_filter": (4, 4), f"{prefix}.affine.weight": (cin, W),
            f"{prefix}.affine.bias": (cin,), f"{prefix}.weight": (cout, cin, 3, 3),
            f"{prefix}.noise_const": (res, res), f"{prefix}.noise_strength": (),
            f"{prefix}.bias": (cout,)}


def _torgb(prefix: str, cin: int) -> dict[str, tuple]:
    return {f"{prefix}.affine.weight": (cin, W), f"{prefix}.affine.bias": (cin,),
            f"{prefix}.weight": (3, cin, 1, 1), f"{prefix}.bias": (3,)}


# Written from stylegan2-ada-pytorch's training/networks.py naming: Generator(z_dim=8, c_dim,
# w_dim=8, img_resolution=8, img_channels=3, mapping num_layers=2, channel_base=128,
# channel_max=16): channels min(128 // res, 16) = 16 at resolutions 4 and 8.
SKIP_8 = {
    "mapping.fc0.weight": (W, Z), "mapping.fc0.bias": (W,),
    "mapping.fc1.weight": (W, W), "mapping.fc1.bias": (W,), "mapping.w_avg": (W,),
    "synthesis.b4.const": (16, 4, 4), "synthesis.b4.resample_filter": (4, 4),
    **_layer("synthesis.b4.conv1", 16, 16, 4), **_torgb("synthesis.b4.torgb", 16),
    "synthesis.b8.resample_filter": (4, 4),
    **_layer("synthesis.b8.conv0", 16, 16, 8), **_layer("synthesis.b8.conv1", 16, 16, 8),
    **_torgb("synthesis.b8.torgb", 16),
}
RESNET_8_C2 = {  # resnet, c_dim=2: embed layer, torgb only in the last block, a 1x1 skip conv
    "mapping.embed.weight": (W, 2), "mapping.embed.bias": (W,),
    "mapping.fc0.weight": (W, Z + W), "mapping.fc0.bias": (W,),
    "mapping.fc1.weight": (W, W), "mapping.fc1.bias": (W,), "mapping.w_avg": (W,),
    "synthesis.b4.const": (16, 4, 4), "synthesis.b4.resample_filter": (4, 4),
    **_layer("synthesis.b4.conv1", 16, 16, 4),
    "synthesis.b8.resample_filter": (4, 4),
    **_layer("synthesis.b8.conv0", 16, 16, 8), **_layer("synthesis.b8.conv1", 16, 16, 8),
    **_torgb("synthesis.b8.torgb", 16),
    "synthesis.b8.skip.weight": (16, 16, 1, 1), "synthesis.b8.skip.resample_filter": (4, 4),
}


@pytest.mark.parametrize("architecture,c_dim,expected", [("skip", 0, SKIP_8),
                                                         ("resnet", 2, RESNET_8_C2)])
def test_state_dict_keys_and_shapes_are_the_official_ones(architecture, c_dim, expected):
    G = StyleGAN2Generator(Z, c_dim, W, 8, 3, dict(num_layers=2),
                           dict(channel_base=128, channel_max=16, architecture=architecture))
    got = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    assert got == expected
    official = {k: torch.randn(s) for k, s in expected.items()}
    G.load_state_dict(official, strict=True)
    assert torch.equal(G.state_dict()["synthesis.b8.conv0.weight"],
                       official["synthesis.b8.conv0.weight"])
    assert G.num_ws == 4  # b4: conv1 (+ torgb sharing b8.conv0's w), b8: conv0, conv1, torgb


def test_fp16_and_fused_modconv_options_are_accepted_and_change_nothing():
    z = z_batch().float()
    base = make_G(res=8).float()
    other = make_G(res=8, num_fp16_res=4, fp16_channels_last=True,
                   fused_modconv_default="inference_only").float()
    assert torch.equal(other(z), base(z))  # same seed, same weights: fp32 either way


def test_num_ws_is_18_at_1024():
    with torch.device("meta"):
        G = StyleGAN2Generator(512, 0, 512, 1024, 3)
    assert G.num_ws == 18


def test_resample_filter_buffer_is_normalised_outer_product():
    f = _setup_filter([1, 3, 3, 1])
    expected = torch.tensor([1., 3., 3., 1.])[:, None] * torch.tensor([1., 3., 3., 1.]) / 64
    assert torch.allclose(f, expected)


def test_fir_upsampling_keeps_a_constant_image_constant_inside():
    f = _setup_filter([1, 3, 3, 1]).double()
    x = torch.full((1, 2, 6, 6), 2.5, dtype=torch.float64)
    y = _upfirdn2d(x, f, up=2, pad=_up_pad(f), gain=4.0)  # zero insertion: gain 4 keeps DC
    assert y.shape == (1, 2, 12, 12)
    assert torch.allclose(y[:, :, 2:-2, 2:-2], torch.full_like(y[:, :, 2:-2, 2:-2], 2.5))


def test_up2_conv_is_fir_upsampling_then_a_true_convolution():
    # the definition: upsample ×2 by zero insertion, FIR-filter with gain 4 (padded for a 3×3
    # "same" convolution), then convolve (flipped kernel); we compute it as a stride-2
    # transposed convolution followed by the FIR filter
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    f = _setup_filter([1, 3, 3, 1]).double()
    p0, p1 = 1 + (4 + 1) // 2, 1 + (4 - 2) // 2
    ref = torch.nn.functional.conv2d(_upfirdn2d(x, f, up=2, pad=(p0, p1, p0, p1), gain=4.0),
                                     w.flip([2, 3]))
    got = _conv_up2(x, w, f)
    assert got.shape == (2, 4, 10, 10)
    assert torch.allclose(got, ref, atol=1e-12)


def test_bfloat16_output_is_close_to_float32():
    G = make_G(res=8).float()
    z = z_batch().float()
    ref = G(z)
    low = G.to(torch.bfloat16)(z)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max() <= 0.05 * ref.abs().max()


def test_config_rebuilds_the_same_architecture_and_registry_loads_it(tmp_path):
    from magnet_lab.models.readers import save_checkpoint
    from magnet_lab.registry import load_generator
    G = make_G("resnet", res=8).float()
    H = StyleGAN2Generator(**G.config())
    assert H.config() == G.config()
    path = save_checkpoint(G, tmp_path / "g.safetensors",
                           {"architecture": "StyleGAN2Generator", "kwargs": G.config()})
    L = load_generator(path)
    z = z_batch().float()
    assert torch.allclose(L(z), G(z), atol=1e-6)


# -- the two modulated convolutions --------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_grouped_and_shared_modulation_agree(architecture):
    G = make_G(architecture)
    z = z_batch(3)
    shared = G.with_options(modulation="shared")(z)
    grouped = G.with_options(modulation="grouped")(z)
    assert shared.shape == (3, 3, 16, 16)
    assert (shared - grouped).abs().max() <= 1e-10
    assert shared.abs().max() > 1e-3  # not trivially zero


def test_demodulation_makes_conv_weight_scale_irrelevant():
    G = make_G()
    z = z_batch()
    before = G(z)
    with torch.no_grad():
        G.get_submodule("synthesis.b8.conv1").weight.mul_(7.0)
    assert torch.allclose(G(z), before, atol=1e-12)


# -- torch.func ----------------------------------------------------------------------------------

def _fd(f, z, v, h=1e-5):
    return (f(z + h * v) - f(z - h * v)) / (2 * h)


@pytest.mark.parametrize("architecture,modulation", [("skip", "shared"), ("resnet", "grouped")])
def test_jvp_vjp_and_vmapped_jvp_agree_with_finite_differences(architecture, modulation):
    G = make_G(architecture, modulation=modulation).with_options(psi=0.7, cutoff=3)
    z = z_batch(2)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(z.shape, generator=g, dtype=torch.float64)
    fd = _fd(G, z, v)
    _, Jv = jvp(G, (z,), (v,))
    assert torch.allclose(Jv, fd, rtol=1e-6, atol=1e-8)
    out, pull = vjp(G, z)
    u = torch.randn(out.shape, generator=g, dtype=torch.float64)
    (uJ,) = pull(u)
    assert torch.allclose((uJ * v).sum(), (u * fd).sum(), rtol=1e-6)
    V = torch.randn((3, *z.shape), generator=g, dtype=torch.float64)
    JV = vmap(lambda t: jvp(G, (z,), (t,))[1])(V)
    for i in range(3):
        assert torch.allclose(JV[i], _fd(G, z, V[i]), rtol=1e-6, atol=1e-8)


def test_single_latent_works_under_vmap():
    G = make_G(res=8)
    z = z_batch(3)
    assert torch.allclose(vmap(G)(z), G(z), atol=1e-12)


def test_random_noise_runs_under_vmapped_vjp():
    G = make_G(res=8).with_options(noise_mode="random", noise_seed=3)
    z = z_batch(2)
    out, pull = vjp(G, z)
    U = torch.randn((2, *out.shape), dtype=torch.float64)
    rows = vmap(lambda u: pull(u)[0])(U)
    assert torch.allclose(rows[1], pull(U[1])[0], atol=1e-12)


def test_log_singular_values_match_svd_of_autograd_jacobian():
    G = make_G(res=8).with_options(psi=0.8)
    z = z_batch(2)
    J = torch.stack([torch.autograd.functional.jacobian(lambda x: G(x[None]).reshape(-1), zi)
                     for zi in z])  # [B, D, d]
    quiet = spectra.SpeedOptions(progress=False)
    exact = spectra.log_singular_values(G, z, spectra.SpectraOptions("exact"), speed=quiet)
    assert torch.allclose(exact, torch.linalg.svdvals(J).log(), atol=1e-8)
    P = spectra.projection_matrix(J.shape[1], 6, seed=0)
    proj = spectra.log_singular_values(G, z, spectra.SpectraOptions("projected", proj_dim=6),
                                       speed=quiet)
    assert torch.allclose(proj, torch.linalg.svdvals(P @ J).log(), atol=1e-8)


# -- StyleGAN2 facts -----------------------------------------------------------------------------

def test_scaling_z_by_a_positive_constant_leaves_the_output_unchanged():
    G = make_G()
    z = z_batch()
    assert torch.allclose(G(3.7 * z), G(z), atol=1e-12)
    assert not torch.allclose(G(z.flip(0)), G(z), atol=1e-6)


def test_psi0_sets_the_first_cutoff_ws_to_w_avg_and_leaves_the_rest():
    G = make_G()
    z = z_batch()
    ws = G.mapping(z)
    ws0 = G.mapping(z, psi=0.0, cutoff=2)
    w_avg = G.get_submodule("mapping").w_avg
    assert torch.allclose(ws0[:, :2], w_avg.expand(2, 2, W))
    assert torch.equal(ws0[:, 2:], ws[:, 2:])
    assert not torch.allclose(ws[:, :2], w_avg.expand(2, 2, W))
    half = G.mapping(z, psi=0.5)  # cutoff None: every w
    assert torch.allclose(half, w_avg + 0.5 * (ws - w_avg))


def test_ws_are_one_w_broadcast_and_torgb_shares_the_next_conv0_w():
    G = make_G(res=8)
    ws = G.mapping(z_batch())
    assert ws.shape == (2, G.num_ws, W) and torch.equal(ws[:, 0], ws[:, -1])
    ws2 = ws.clone()
    ws2[:, 1] += 1.0  # w index 1: b4.torgb and b8.conv0
    s, s2 = G.styles(ws), G.styles(ws2)
    assert list(s) == ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]
    changed = sorted(k for k in s if not torch.equal(s[k], s2[k]))
    assert changed == ["b4.torgb", "b8.conv0"]
    assert s["b8.conv1"].shape == (2, 16)


def test_noise_none_and_const_differ_exactly_when_noise_strength_is_nonzero():
    G = make_G(res=8)
    z = z_batch()
    assert not torch.allclose(G(z, noise_mode="none"), G(z, noise_mode="const"), atol=1e-6)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
    assert torch.equal(G(z, noise_mode="none"), G(z, noise_mode="const"))


def test_const_noise_is_deterministic_and_random_noise_is_seeded():
    G = make_G(res=8)
    z = z_batch()
    assert torch.equal(G(z), G(z))
    r1 = G(z, noise_mode="random", noise_seed=5)
    assert torch.equal(r1, G(z, noise_mode="random", noise_seed=5))
    assert not torch.allclose(r1, G(z, noise_mode="random", noise_seed=6), atol=1e-6)
    assert not torch.allclose(r1, G(z), atol=1e-6)


def test_conditioning_changes_the_output():
    G = make_G(res=8, c_dim=3)
    z = z_batch()
    c0, c1 = torch.eye(3, dtype=torch.float64)[[0, 0]], torch.eye(3, dtype=torch.float64)[[1, 1]]
    assert not torch.allclose(G(z, c0), G(z, c1), atol=1e-6)


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_resolution_4_works(architecture):
    G = make_G(architecture, res=4)
    assert G.num_ws == 2
    assert G(z_batch()).shape == (2, 3, 4, 4)


def test_conv_clamp_bounds_the_image():
    G = make_G(res=8, conv_clamp=0.05)
    assert G(z_batch()).abs().max() <= 0.05 * 2 + 1e-12  # torgb sums of two clamped images


def test_with_options_leaves_the_original_alone_and_truncate_feeds_forward():
    G = make_G(res=8)
    T = G.with_options(psi=0.5, cutoff=2, noise_mode="none")
    z = z_batch()
    assert (G.psi, G.noise_mode) == (1.0, "const")
    assert torch.equal(T(z), G(z, psi=0.5, cutoff=2, noise_mode="none"))
    ws = truncate(T, z, 0.5)
    assert ws.shape == (2, G.num_ws, W)
    assert torch.equal(T(ws), T(z))
    # generate returns images: the raw output clamped to [-1, 1]
    assert torch.allclose(generate(T, z, psi=0.5).double(), T(z).clamp(-1, 1), atol=1e-12)


# -- errors --------------------------------------------------------------------------------------

def test_bad_inputs_give_clear_errors():
    G = make_G(res=8)
    with pytest.raises(ValueError, match=r"z must have shape \[B, z_dim=8\]"):
        G(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        G(torch.full((1, Z), math.nan, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating point"):
        G(torch.zeros(1, Z, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown noise_mode 'bogus'"):
        G(z_batch(), noise_mode="bogus")
    with pytest.raises(ValueError, match="needs an integer noise_seed"):
        G(z_batch(), noise_mode="random")
    with pytest.raises(ValueError, match=r"ws must have shape"):
        G.synthesis(torch.zeros(1, 3, W, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown option"):
        G.with_options(truncation=0.5)
    with pytest.raises(ValueError, match="conditional"):
        make_G(res=8, c_dim=2)(z_batch())
    with pytest.raises(ValueError, match="unknown architecture 'orig'"):
        StyleGAN2Generator(Z, 0, W, 8, 3, synthesis_kwargs=dict(architecture="orig"))
    with pytest.raises(ValueError, match="unknown modulation"):
        StyleGAN2Generator(Z, 0, W, 8, 3, modulation="fused")
    with pytest.raises(ValueError, match="power of 2"):
        StyleGAN2Generator(Z, 0, W, 12, 3)
    with pytest.raises(ValueError, match=r"unknown synthesis_kwargs \['channels'\]"):
        StyleGAN2Generator(Z, 0, W, 8, 3, synthesis_kwargs=dict(channels=4))


def test_fingerprint_tells_run_options_apart():
    """A bank of G at ψ = 0.7 is not a bank of G at ψ = 1: the fingerprint must differ."""
    from magnet_lab.models import fingerprint

    G = make_G()
    assert fingerprint(G) == fingerprint(G.with_options())
    assert fingerprint(G) != fingerprint(G.with_options(psi=0.7))
    assert fingerprint(G) != fingerprint(G.with_options(noise_mode="none"))


def test_synthesis_takes_one_w_broadcast_to_every_layer():
    G = make_G()
    w = torch.randn(2, G.w_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    ws = w[:, None, :].expand(-1, G.num_ws, -1)
    assert torch.equal(G.synthesis(w), G.synthesis(ws))
    assert torch.equal(G(ws), G.synthesis(ws))
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(torch.randn(2, G.w_dim + 1, dtype=torch.float64))
