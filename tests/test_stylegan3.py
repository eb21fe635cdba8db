"""Our StyleGAN3 generator: the published layer schedule and state-dict layout (full sizes as
shapes only), the filter designer against the window-method formulas, the filtered leaky ReLU
against explicit dense matrices, torch.func against finite differences, per-sample
independence, ψ/cutoff/transform, and clear errors. Tiny float64 models (16², ≤ 8 channels, 4 layers)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.special
import torch
from torch.func import jvp, vjp, vmap

from magnet_lab.models import fingerprint, generate
from magnet_lab.models.stylegan3 import (CONFIGS, StyleGAN3Generator, design_lowpass_filter,
                                         filtered_lrelu, input_transform, layer_schedule,
                                         state_shapes)

from builders import SMALL, Z, make_stylegan3 as make_G

def z_batch(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, Z, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- the published schedule and layout -----------------------------------------------------------

T512 = ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_84_512",
        "L6_148_512", "L7_148_483", "L8_276_323", "L9_276_215", "L10_532_144", "L11_532_96",
        "L12_532_64", "L13_512_64", "L14_512_3"]  # the list (the official network's)
T1024 = ["L0_36_512", "L1_36_512", "L2_52_512", "L3_52_512", "L4_84_512", "L5_148_512",
         "L6_148_512", "L7_276_323", "L8_276_203", "L9_532_128", "L10_1044_81", "L11_1044_51",
         "L12_1044_32", "L13_1024_32", "L14_1024_3"]  # checked against the official network
R1024 = ["L0_36_1024", "L1_36_1024", "L2_52_1024", "L3_52_1024", "L4_84_1024", "L5_148_1024",
         "L6_148_1024", "L7_276_645", "L8_276_406", "L9_532_256", "L10_1044_161", "L11_1044_102",
         "L12_1044_64", "L13_1024_64", "L14_1024_3"]  # REFERENCES.md


@pytest.mark.parametrize("res, config, names", [(512, "T", T512), (1024, "T", T1024),
                                                (1024, "R", R1024)])
def test_layer_schedule_gives_the_published_layer_names(res, config, names):
    spec_in, layers = layer_schedule(res, 3, **CONFIGS[config])
    assert [L.name for L in layers] == names
    assert spec_in.size == 36 and spec_in.sampling_rate == 16 and spec_in.bandwidth == 2
    assert spec_in.channels == int(names[0].split("_")[2])
    for L in layers:  # rates are powers of two, the temporary rate 2x the larger (ToRGB 1x)
        assert L.tmp_sampling_rate == max(L.in_sampling_rate, L.out_sampling_rate) * (
            1 if L.is_torgb else 2)
        assert L.up_taps == (6 * L.up_factor if L.up_factor > 1 else 1)
        # the padding brings (in + k - 1)·up through both filters to (out - 1)·down + 1 samples
        x0, x1, _, _ = L.padding
        n_mid = (L.in_size + L.conv_kernel - 1) * L.up_factor + x0 + x1 - L.up_taps + 1
        assert (n_mid - L.down_taps) // L.down_factor + 1 == L.out_size
    assert [L.is_critically_sampled for L in layers] == [False] * 12 + [True] * 3
    assert [L.out_size for L in layers[-3:]] == [res + 20, res, res]  # 10-pixel margin, then none
    assert [L.down_radial for L in layers] == [config == "R"] * 12 + [False] * 3


def test_full_size_state_shapes_follow_the_official_names():
    t = state_shapes(dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=512, img_channels=3))
    assert t["synthesis.input.weight"] == (512, 512) and t["synthesis.input.freqs"] == (512, 2)
    assert t["synthesis.input.affine.weight"] == (4, 512) and t["synthesis.input.transform"] == (3, 3)
    assert t["synthesis.L0_36_512.weight"] == (512, 512, 3, 3)
    assert t["synthesis.L7_148_483.weight"] == (483, 512, 3, 3)
    assert t["synthesis.L2_52_512.up_filter"] == (24,) and t["synthesis.L2_52_512.down_filter"] == (12,)
    assert t["synthesis.L14_512_3.weight"] == (3, 64, 1, 1) and t["synthesis.L14_512_3.magnitude_ema"] == ()
    assert not any(k.startswith("synthesis.L14_512_3.") and "filter" in k for k in t)  # ToRGB: none
    assert t["mapping.fc0.weight"] == (512, 512) and "mapping.fc2.weight" not in t
    r = state_shapes(dict(z_dim=512, c_dim=4, w_dim=512, img_resolution=1024, img_channels=3,
                          synthesis_kwargs=CONFIGS["R"]))
    assert r["synthesis.L0_36_1024.weight"] == (1024, 1024, 1, 1)
    assert r["synthesis.L11_1044_102.down_filter"] == (12, 12)  # radial, not critically sampled
    assert r["synthesis.L12_1044_64.down_filter"] == (12,)      # critically sampled: separable
    assert r["mapping.embed.weight"] == (512, 4) and r["mapping.fc0.weight"] == (512, 1024)
    per_layer = 5 + 2  # affine w/b, weight, bias, magnitude_ema, up/down filters
    assert len(t) == 2 + 1 + 2 + 6 + 14 * per_layer + 5  # mapping fc0/fc1, w_avg, input, layers


@pytest.mark.parametrize("config, c_dim", [("T", 0), ("R", 3)])
def test_built_model_has_exactly_the_computed_state_shapes(config, c_dim):
    G = make_G(config, c_dim)
    assert {k: tuple(v.shape) for k, v in G.state_dict().items()} == state_shapes(G.config())
    assert G.num_ws == SMALL["num_layers"] + 2 and json.loads(json.dumps(G.config())) == G.config()


# -- filters ----------------------------------------------------------------------------------------

def _kaiser_lowpass(n: int, cutoff: float, width: float, fs: float) -> np.ndarray:
    """The Kaiser window method written out: attenuation A from the transition width, β from A,
    the windowed ideal low-pass (sinc), scaled to unit gain at DC."""
    A = 2.285 * (n - 1) * math.pi * (width / (fs / 2)) + 7.95
    beta = 0.1102 * (A - 8.7) if A > 50 else (0.5842 * (A - 21) ** 0.4 + 0.07886 * (A - 21)
                                              if A >= 21 else 0.0)
    m = np.arange(n) - (n - 1) / 2
    win = np.i0(beta * np.sqrt(1 - (2 * np.arange(n) / (n - 1) - 1) ** 2)) / np.i0(beta)
    h = 2 * cutoff / fs * np.sinc(2 * cutoff / fs * m) * win
    return h / h.sum(), win


@pytest.mark.parametrize("layer", [0, 2, 7, 12, 13])
def test_filter_designer_matches_the_window_method_formulas(layer):
    L = layer_schedule(512, 3)[1][layer]
    for taps, cutoff, hw in ((L.up_taps, L.in_cutoff, L.in_half_width),
                             (L.down_taps, L.out_cutoff, L.out_half_width)):
        ours = design_lowpass_filter(taps, cutoff, 2 * hw, L.tmp_sampling_rate)
        want, _ = _kaiser_lowpass(taps, cutoff, 2 * hw, L.tmp_sampling_rate)
        assert ours.dtype == torch.float32 and ours.shape == (taps,)
        assert np.allclose(ours.numpy(), want, rtol=0, atol=2e-7)
        assert abs(float(ours.double().sum()) - 1) < 1e-6  # unit DC gain


def test_radial_filter_is_the_windowed_jinc():
    L = layer_schedule(1024, 3, **CONFIGS["R"])[1][5]
    fs, n, fc, width = L.tmp_sampling_rate, L.down_taps, L.out_cutoff, 2 * L.out_half_width
    ours = design_lowpass_filter(n, fc, width, fs, radial=True)
    x = (np.arange(n) - (n - 1) / 2) / fs
    r = np.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    jinc = 2 * fc * scipy.special.j1(2 * math.pi * fc * r) / (2 * r)  # the ideal disc low-pass
    _, win = _kaiser_lowpass(n, fc, width, fs)
    want = jinc * np.outer(win, win)
    assert ours.shape == (n, n)
    assert np.allclose(ours.numpy(), want / want.sum(), rtol=0, atol=2e-7)
    assert torch.equal(ours, ours.t()) and design_lowpass_filter(1, fc, width, fs) is None


def test_fresh_model_holds_the_designed_filters():
    G = make_G("R")
    for L in layer_schedule(16, 3, **{**SMALL, **{k: v for k, v in CONFIGS["R"].items()
                                                  if k.startswith(("conv", "use"))}})[1]:
        layer = getattr(G.synthesis, L.name)
        up = design_lowpass_filter(L.up_taps, L.in_cutoff, 2 * L.in_half_width, L.tmp_sampling_rate)
        down = design_lowpass_filter(L.down_taps, L.out_cutoff, 2 * L.out_half_width,
                                     L.tmp_sampling_rate, radial=L.down_radial)
        for buf, want in ((layer.up_filter, up), (layer.down_filter, down)):
            assert (buf is None) == (want is None)
            if want is not None:
                assert torch.equal(buf.float(), want)


# -- the filtered leaky ReLU against explicit matrices -----------------------------------------

def _conv_matrix(f: np.ndarray, n_in: int) -> np.ndarray:
    """'valid' convolution with f as a matrix: row m = sum_k x[m + k]·f[T − 1 − k]."""
    T = len(f)
    M = np.zeros((n_in - T + 1, n_in))
    for m in range(n_in - T + 1):
        for k in range(T):
            M[m, m + k] = f[T - 1 - k]
    return M


def _up_matrix(f: np.ndarray | None, n: int, up: int, p0: int, p1: int) -> np.ndarray:
    zero_insert = np.zeros((n * up, n))
    zero_insert[np.arange(n) * up, np.arange(n)] = 1
    L = n * up + p0 + p1
    pad = np.zeros((L, n * up))  # pad (or crop, when negative) p0 in front and p1 behind
    for i in range(n * up):
        if 0 <= i + p0 < L:
            pad[i + p0, i] = 1
    f = np.ones(1) if f is None else f
    return up * _conv_matrix(f, L) @ pad @ zero_insert  # gain up per axis: up² in all


def _down_matrix(f: np.ndarray | None, n: int, down: int) -> np.ndarray:
    C = _conv_matrix(np.ones(1) if f is None else f, n)
    return C[::down]


@pytest.mark.parametrize("up, down, padding, radial", [
    (2, 2, (9, 8, 9, 8), False), (4, 2, (-6, -9, -6, -9), False), (2, 2, (-2, 3, -2, 3), False),
    (2, 2, (5, 4, 5, 4), True), (1, 1, (0, 0, 0, 0), False)])
def test_filtered_lrelu_equals_upsample_filter_act_filter_downsample_as_matrices(
        up, down, padding, radial):
    rng = np.random.default_rng(up * 10 + down + padding[0])
    B, C, n = 2, 3, 13
    x = rng.standard_normal((B, C, n, n))
    b = rng.standard_normal(C)
    fu = design_lowpass_filter(6 * up, 3.0, 4.0, 8 * up).double().numpy() if up > 1 else None
    fd = (design_lowpass_filter(6 * down, 3.0, 4.0, 8 * up, radial=radial).double().numpy()
          if down > 1 else None)
    gain, slope = math.sqrt(2), 0.2
    U = _up_matrix(fu, n, up, padding[0], padding[1])  # the same along y (symmetric padding)
    mid = np.einsum("hi,bcij,wj->bchw", U, x + b[None, :, None, None], U)
    mid = np.where(mid >= 0, mid, slope * mid) * gain
    clamp = 0.7 * float(np.abs(mid).max())  # so that the clamp is exercised
    mid = np.clip(mid, -clamp, clamp)
    if fd is not None and fd.ndim == 2:  # 2-D filter, written as loops
        T = fd.shape[0]
        m = (mid.shape[2] - T) // down + 1
        want = np.zeros((B, C, m, m))
        for i in range(m):
            for j in range(m):
                patch = mid[:, :, i * down: i * down + T, j * down: j * down + T]
                want[:, :, i, j] = (patch * fd[::-1, ::-1]).sum(axis=(2, 3))
    else:
        D = _down_matrix(fd, mid.shape[2], down)
        want = np.einsum("hi,bcij,wj->bchw", D, mid, D)
    got = filtered_lrelu(torch.from_numpy(x), None if fu is None else torch.from_numpy(fu),
                         None if fd is None else torch.from_numpy(fd), torch.from_numpy(b), up,
                         down, padding, gain=gain, slope=slope, clamp=clamp)
    assert got.shape == want.shape
    assert np.abs(got.numpy() - want).max() < 1e-12


# -- differentiability and independence --------------------------------------------------------

@pytest.mark.parametrize("config, c_dim", [("T", 0), ("R", 3)])
def test_jvp_and_vjp_match_central_differences(config, c_dim):
    G = make_G(config, c_dim)
    z = z_batch(1)
    c = torch.eye(3, dtype=torch.float64)[:1] if c_dim else None
    f = lambda v: G(v, c, psi=0.7).reshape(-1)  # noqa: E731
    v = torch.randn(1, Z, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    eps = 1e-7  # small: G is piecewise smooth (leaky ReLUs, clamps), a step must not cross a kink
    fd = (f(z + eps * v) - f(z - eps * v)) / (2 * eps)
    _, tangent = jvp(f, (z,), (v,))
    assert (tangent - fd).abs().max() < 1e-6 * fd.abs().max()
    y, pull = vjp(f, z)
    u = torch.randn(y.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    (g,) = pull(u)
    assert torch.allclose((g * v).sum(), (u * tangent).sum(), rtol=1e-10)  # <u, Jv> = <Jᵀu, v>


def test_vmap_over_a_batch_equals_the_batched_call_and_rows_are_independent():
    G = make_G("T")
    z = z_batch(3)
    batched = G(z)
    per_sample = vmap(lambda v: G(v[None])[0])(z)
    assert torch.allclose(per_sample, batched, rtol=0, atol=1e-13)
    alone = G(z[1:2])  # a row's image does not depend on the other rows (per-sample styles)
    assert torch.allclose(alone[0], batched[1], rtol=0, atol=1e-13)


def test_float32_model_agrees_with_float64():
    G = make_G("T")
    x64 = G(z_batch(2))
    G32 = make_G("T").float()
    x32 = G32(z_batch(2).float())
    assert x32.dtype == torch.float32
    assert (x32.double() - x64).abs().max() < 1e-4 * x64.abs().max()  # float32 rounding


# -- run options -----------------------------------------------------------------------------------

def test_psi_and_cutoff_truncate_towards_w_avg():
    G = make_G("T")
    z = z_batch(2)
    ws = G.mapping(z, psi=0.0)
    assert torch.allclose(ws, G.mapping.w_avg.expand_as(ws))
    x0 = G(z, psi=0.0)
    assert torch.allclose(x0[0], x0[1])  # ψ = 0 on every w: the image no longer depends on z
    ws = G.mapping(z, psi=0.5, cutoff=2)
    full = G.mapping(z)
    assert torch.allclose(ws[:, :2], G.mapping.w_avg + 0.5 * (full[:, :2] - G.mapping.w_avg))
    assert torch.equal(ws[:, 2:], full[:, 2:])
    Gt = G.with_options(psi=0.5, cutoff=2)
    assert torch.equal(Gt(z), G(z, psi=0.5, cutoff=2)) and G.options()["psi"] == 1.0
    assert torch.equal(G(G.with_options(cutoff=2).truncate(z, 0.5)), Gt(z))
    assert torch.allclose(generate(Gt, z, psi=1.0).double(), Gt(z).clamp(-1, 1).float().double())
    assert fingerprint(Gt) != fingerprint(G)


def test_transform_rotates_and_translates_the_input_features_exactly():
    G = make_G("T")
    w = G.mapping(z_batch(1))[:, 0]
    inp = G.synthesis.input
    base = inp(w)  # [1, C, 20, 20]
    rot90 = torch.tensor(input_transform(rotate_deg=90), dtype=torch.float64)
    # features at p are the untransformed ones at M·p: a 90° turn of the sample grid
    assert torch.allclose(inp(w, rot90), torch.rot90(base, 1, dims=(2, 3)), atol=1e-12) or \
        torch.allclose(inp(w, rot90), torch.rot90(base, -1, dims=(2, 3)), atol=1e-12)
    shift = torch.eye(3, dtype=torch.float64)
    shift[0, 2] = 2 / inp.sampling_rate  # M·p = p + 2 samples along x
    moved = inp(w, shift)
    assert torch.allclose(moved[..., :-2], base[..., 2:], atol=1e-12)
    assert not torch.allclose(moved, base)


def test_transform_option_is_the_input_buffer():
    G = make_G("T")
    z = z_batch(2)
    M = input_transform(translate=(0.1, -0.05), rotate_deg=7.0)
    Gt = G.with_options(transform=M)
    assert Gt.options()["transform"] == M and json.dumps(Gt.options())
    H = make_G("T")
    H.synthesis.input.transform.copy_(torch.tensor(M, dtype=torch.float64))
    assert torch.equal(Gt(z), H(z)) and torch.equal(G(z, transform=M), H(z))
    assert torch.equal(G.with_options(transform=np.eye(3))(z), G(z))
    assert not torch.allclose(Gt(z), G(z))
    assert np.allclose(np.array(input_transform(translate=(0.1, 0.2), rotate_deg=30))
                       @ np.array([[math.cos(math.pi / 6), math.sin(math.pi / 6), 0.1],
                                   [-math.sin(math.pi / 6), math.cos(math.pi / 6), 0.2],
                                   [0, 0, 1]]), np.eye(3))


# -- errors --------------------------------------------------------------------------------------

def test_bad_inputs_and_options_give_named_errors():
    G = make_G("T")
    Gc = make_G("T", c_dim=3)
    with pytest.raises(ValueError, match=r"z must have shape \[B, z_dim=8\]"):
        G(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        G(torch.full((1, 8), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="conditional"):
        Gc(z_batch(2))
    with pytest.raises(ValueError, match="unconditional"):
        G(z_batch(2), torch.eye(3)[:2])
    with pytest.raises(ValueError, match="unknown option"):
        G.with_options(noise_mode="const")
    with pytest.raises(ValueError, match="psi must be a finite number"):
        G.with_options(psi=float("inf"))
    with pytest.raises(ValueError, match="finite 3x3"):
        G.with_options(transform=np.eye(2))
    with pytest.raises(ValueError, match="unknown synthesis_kwargs"):
        StyleGAN3Generator(8, 0, 8, 16, 3, synthesis_kwargs=dict(architecture="skip"))
    with pytest.raises(ValueError, match="not integer multiples"):
        layer_schedule(16, 3, lrelu_upsampling=1.5)
    with pytest.raises(ValueError, match="ws must have shape"):
        G.synthesis(torch.zeros(2, 3, 8, dtype=torch.float64))
