"""Our own StyleGAN2 generator (mapping + synthesis), written for Jacobians.

Plain PyTorch ops only and no in-place writes on tensors in the graph, so ``torch.func.jvp``,
``vjp`` and ``vmap`` run through it. Its ``state_dict()`` has exactly the keys and shapes of
stylegan2-ada-pytorch's ``Generator`` (``mapping.fc0.weight``, ``mapping.w_avg``,
``synthesis.b4.const``, ``synthesis.b8.conv0.noise_const``, ``synthesis.b8.skip.weight``, ...), so
an official state dict loads with ``strict=True``; the computation follows the published
architecture (Karras et al. 2020) re-implemented from its documented facts:

- mapping: z normalised by rsqrt(mean(z²) + 1e-8) (and, when c_dim > 0, the embedded c likewise,
  then concatenated); fully connected layers with weights × lr_mult/sqrt(fan_in) and biases ×
  lr_mult (0.01 in the mapping); leaky ReLU 0.2 with gain √2; w broadcast to ``num_ws``;
  truncation w_avg + ψ(w − w_avg) on the first ``cutoff`` ws (all when None).
- synthesis: a learned 4×4 constant, then per resolution a modulated 3×3 conv (up=2: stride-2
  transposed conv then the FIR filter [1,3,3,1] (outer product, normalised) with gain 4),
  demodulation rsqrt(Σ(w·s)² + 1e-8), noise × noise_strength, bias, leaky ReLU × √2 (× the
  block's gain), optional clamp ``conv_clamp``; toRGB: styles × 1/sqrt(fan_in), no demodulation,
  linear. 'skip': the image is upsampled (FIR, gain 4) and each block's toRGB added; 'resnet': a
  1×1 up=2 skip conv and the main path both × 1/√2, only the last block has a toRGB.
- style affines start with bias 1; each toRGB shares its w with the next block's first conv.

Two forms of modulated convolution, equal up to rounding: ``"grouped"`` (per-sample weights, one
grouped conv) and ``"shared"`` (scale the input by the styles, one ordinary conv with the shared
weight, scale the output by the demodulation coefficients), the default: cheaper under vmap.
We compute in the module's dtype (float32, float64 for tests, bfloat16 where asked), never in the
official fp16 blocks (``num_fp16_res`` is accepted and ignored). ``w_avg`` is never updated here.

Use::

    G = StyleGAN2Generator(512, 0, 512, 1024, 3, synthesis_kwargs=dict(conv_clamp=256))
    G.load_state_dict(official_state_dict, strict=True)
    img = G(z, psi=0.7, cutoff=8, noise_mode="const")   # [B, 3, 1024, 1024], roughly [-1, 1]
    ws = G.mapping(z, c, psi, cutoff); img = G.synthesis(ws, "random", noise_seed=0)
    Gt = G.with_options(psi=0.7, noise_mode="none")     # Gt(z) is what spectra differentiates
    log_sv = spectra.log_singular_values(Gt, z, spectra.SpectraOptions("projected"))

'random' noise is seeded only (``noise_seed``) and drawn with NumPy, so it is reproducible, works
under vmap, and is not the official (unseeded torch) noise; rows of a batch get different noise.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import (check_int, check_label_batch, check_latent_batch, check_model_input,
                          check_real)

__all__ = ["StyleGAN2Generator", "MODULATIONS", "NOISE_MODES", "ARCHITECTURES"]

MODULATIONS = ("shared", "grouped")
NOISE_MODES = ("const", "random", "none")
ARCHITECTURES = ("skip", "resnet")
_ACTIVATIONS = {  # name -> (function, default gain), as in the official bias_act table
    "linear": (lambda x: x, 1.0),
    "relu": (F.relu, math.sqrt(2)),
    "lrelu": (lambda x: F.leaky_relu(x, 0.2), math.sqrt(2)),
    "tanh": (torch.tanh, 1.0),
    "sigmoid": (torch.sigmoid, 1.0),
    "elu": (F.elu, 1.0),
    "selu": (F.selu, 1.0),
    "softplus": (F.softplus, 1.0),
    "swish": (lambda x: x * torch.sigmoid(x), math.sqrt(2)),
}
_MAPPING_DEFAULTS = dict(num_layers=8, embed_features=None, layer_features=None,
                         activation="lrelu", lr_multiplier=0.01, w_avg_beta=0.995)
_SYNTHESIS_DEFAULTS = dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
                           architecture="skip", resample_filter=[1, 3, 3, 1], use_noise=True,
                           fp16_channels_last=False, fused_modconv_default=True,
                           activation="lrelu")
# accepted for compatibility and ignored: num_fp16_res, fp16_channels_last (we never run fp16
# blocks) and fused_modconv_default (stylegan3-repo pickles; our `modulation` is the analogue)


# ---------------------------------------------------------------------------------------------
# Functional pieces


def _bias_act(x: Tensor, b: Tensor | None, act: str = "linear", gain: float | None = None,
              clamp: float | None = None) -> Tensor:
    """x + b (along dim 1), activation, × gain (default: the activation's), clamp to ±clamp."""
    fn, def_gain = _ACTIVATIONS[act]
    if b is not None:
        x = x + b.reshape([1, -1] + [1] * (x.ndim - 2))
    x = fn(x)
    gain = def_gain if gain is None else gain
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def _setup_filter(f: Any) -> Tensor:
    """The official filter buffer: a 1-D list of < 8 taps becomes its outer product (2-D), 8 or
    more taps stay 1-D (separable); normalised to sum 1; float32."""
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError(f"resample_filter must be a non-empty 1-D or 2-D list, got shape "
                         f"{tuple(f.shape)}")
    if f.ndim == 1 and f.numel() < 8:
        f = torch.outer(f, f)
    return f / f.sum()


def _upfirdn2d(x: Tensor, f: Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0),
               gain: float = 1.0) -> Tensor:
    """Upsample by zero insertion, pad (negative: crop) by (x0, x1, y0, y1), then convolve each
    channel with the FIR filter f × gain. x: [B, C, H, W]; f: [fh, fw] or separable [taps]."""
    B, C, H, W = x.shape
    f2 = torch.outer(f, f) if f.ndim == 1 else f  # separable taps → the same 2-D filter
    if up > 1:
        x = x.reshape(B, C, H, 1, W, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])  # (B, C, H, up, W, up)
        x = x.reshape(B, C, H * up, W * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0): x.shape[2] - max(-y1, 0), max(-x0, 0): x.shape[3] - max(-x1, 0)]
    k = (f2 * gain).to(x.dtype).flip([0, 1])  # flipped: convolution, not correlation
    k = k[None, None].expand(C, 1, *k.shape)  # (C, 1, fh, fw)
    return F.conv2d(x, k, groups=C)


def _up_pad(f: Tensor, up: int = 2) -> tuple[int, int, int, int]:
    """Padding of a plain FIR upsampling by ``up`` so that [H, W] becomes [up·H, up·W]."""
    fw = f.shape[-1]
    p0, p1 = (fw + up - 1) // 2, (fw - up) // 2
    return (p0, p1, p0, p1)


def _conv_up2(x: Tensor, weight: Tensor, f: Tensor, groups: int = 1) -> Tensor:
    """A k×k convolution (padding k//2) at twice the resolution: stride-2 transposed conv,
    then the FIR filter with gain 4. x: [B, groups·I, H, W], weight: [groups·O, I, k, k]
    (groups > 1: per-sample weights) → [B, groups·O, 2H, 2W]."""
    O, I, k, _ = weight.shape
    if groups == 1:
        wt = weight.transpose(0, 1)  # (I, O, k, k)
    else:
        wt = weight.reshape(groups, O // groups, I, k, k).transpose(1, 2)
        wt = wt.reshape(groups * I, O // groups, k, k)
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)  # (.., 2H + k - 2, 2W + k - 2)
    fw = f.shape[-1]
    p = k // 2
    p0 = p + (fw + 1) // 2 - (k - 1)
    p1 = p + (fw - 2) // 2 - (k - 2)
    return _upfirdn2d(x, f, pad=(p0, p1, p0, p1), gain=4.0)


def _demod_coefs(weight: Tensor, styles: Tensor) -> Tensor:
    """rsqrt(Σ_{i,kh,kw} (weight·s_i)² + 1e-8): [B, O] for weight [O, I, k, k], styles [B, I]."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()


def _modulated_conv(x: Tensor, weight: Tensor, styles: Tensor, f: Tensor | None, up: int,
                    demodulate: bool, noise: Tensor | None, modulation: str) -> Tensor:
    """Modulated (and demodulated) convolution with optional noise added after demodulation.
    x: [B, I, H, W], weight: [O, I, k, k], styles: [B, I] → [B, O, up·H, up·W]."""
    B, I, H, W = x.shape
    O, _, k, _ = weight.shape
    dcoefs = _demod_coefs(weight, styles) if demodulate else None  # (B, O)
    if modulation == "shared":
        x = x * styles.reshape(B, I, 1, 1)
        x = _conv_up2(x, weight, f) if up == 2 else F.conv2d(x, weight, padding=k // 2)
        if dcoefs is not None:
            x = x * dcoefs.reshape(B, O, 1, 1)
    else:  # grouped: per-sample weights, one grouped convolution over the batch
        w = weight[None] * styles.reshape(B, 1, I, 1, 1)  # (B, O, I, k, k)
        if dcoefs is not None:
            w = w * dcoefs.reshape(B, O, 1, 1, 1)
        x = x.reshape(1, B * I, H, W)
        w = w.reshape(B * O, I, k, k)
        x = (_conv_up2(x, w, f, groups=B) if up == 2
             else F.conv2d(x, w, padding=k // 2, groups=B))  # (1, B·O, H', W')
        x = x.reshape(B, O, *x.shape[2:])
    if noise is not None:
        x = x + noise
    return x


# ---------------------------------------------------------------------------------------------
# Layers (attribute names are the official state-dict names)


class FullyConnectedLayer(nn.Module):
    """y = act(x·(weight·lr_mult/√fan_in)ᵀ + bias·lr_mult); weight [out, in], bias [out]."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        x = x @ (self.weight * self.weight_gain).t()  # (B, out)
        return _bias_act(x, self.bias * self.bias_gain, self.activation)


class SynthesisLayer(nn.Module):
    """Modulated 3×3 conv (up=1 or 2) + noise + bias + activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 up: int, use_noise: bool, resample_filter: Any, conv_clamp: float | None):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", _setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: Tensor, w: Tensor, noise: Tensor | None, modulation: str,
                gain: float = 1.0) -> Tensor:
        styles = self.affine(w)  # (B, I)
        if noise is not None:
            noise = noise * self.noise_strength
        x = _modulated_conv(x, self.weight, styles, self.resample_filter, self.up, True, noise,
                            modulation)  # (B, O, res, res)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return _bias_act(x, self.bias, "lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1×1 conv to image channels: styles × 1/√fan_in, no demodulation, linear."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, modulation: str) -> Tensor:
        styles = self.affine(w) * self.weight_gain  # (B, I)
        x = _modulated_conv(x, self.weight, styles, None, 1, False, None, modulation)
        return _bias_act(x, self.bias, "linear", clamp=self.conv_clamp)


class SkipLayer(nn.Module):
    """The resnet branch: 1×1 conv (weight × 1/√fan_in, no bias), FIR upsampling (gain 4)."""

    def __init__(self, in_channels: int, out_channels: int, resample_filter: Any):
        super().__init__()
        self.register_buffer("resample_filter", _setup_filter(resample_filter))
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: Tensor, gain: float) -> Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain)  # (B, O, H, W)
        f = self.resample_filter
        return _upfirdn2d(x, f, up=2, pad=_up_pad(f), gain=4.0) * gain  # (B, O, 2H, 2W)


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (up=2)] → conv1 → [torgb]; skip or resnet wiring."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int,
                 img_channels: int, is_last: bool, architecture: str, resample_filter: Any,
                 conv_clamp: float | None, use_noise: bool):
        super().__init__()
        self.in_channels, self.resolution, self.architecture = in_channels, resolution, architecture
        self.register_buffer("resample_filter", _setup_filter(resample_filter))
        layer = dict(w_dim=w_dim, use_noise=use_noise, resample_filter=resample_filter,
                     conv_clamp=conv_clamp)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, resolution=resolution, up=2,
                                        **layer)
        self.conv1 = SynthesisLayer(out_channels, out_channels, resolution=resolution, up=1,
                                    **layer)
        self.has_torgb = is_last or architecture == "skip"
        if self.has_torgb:
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp)
        if in_channels != 0 and architecture == "resnet":
            self.skip = SkipLayer(in_channels, out_channels, resample_filter)
        self.conv_names = ["conv1"] if in_channels == 0 else ["conv0", "conv1"]


def _normalize_2nd_moment(x: Tensor) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # (B, F)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of {list(choices)}")
    return value


def _check_options(psi: Any, cutoff: Any, noise_mode: Any, noise_seed: Any,
                   modulation: Any) -> None:
    check_real("psi", psi)
    check_int("cutoff", cutoff, low=0, optional=True)  # None: every ws is truncated
    _check_choice("noise_mode", noise_mode, NOISE_MODES)
    _check_choice("modulation", modulation, MODULATIONS)
    if noise_mode == "random":
        if noise_seed is None:
            raise ValueError("noise_mode='random' needs an integer noise_seed >= 0 (random noise "
                             "is seeded only, so G stays a function), got None")
        check_int("noise_seed", noise_seed, low=0)


class MappingNetwork(nn.Module):
    """z (and c) → ws: normalise, embed, ``num_layers`` fully connected layers, broadcast,
    truncate."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int,
                 embed_features: int | None, layer_features: int | None, activation: str,
                 lr_multiplier: float, w_avg_beta: float | None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f"fc{idx}", FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation, lr_multiplier))
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Tensor, c: Tensor | None = None, psi: float = 1.0,
                cutoff: int | None = None) -> Tensor:
        """ws ``[B, num_ws, w_dim]`` of latents ``z [B, z_dim]`` (labels ``c [B, c_dim]`` when
        c_dim > 0), truncated as w_avg + psi·(w − w_avg) on the first ``cutoff`` ws (None: all).
        Raises TypeError/ValueError for a wrong z/c type, shape or non-finite values, a bad
        psi/cutoff, or psi != 1 without ``w_avg`` (w_avg_beta=None)."""
        _check_options(psi, cutoff, "const", None, "shared")
        z = check_latent_batch(z, self.z_dim, self.fc0.weight.dtype)
        c = check_label_batch(c, z.shape[0], self.c_dim, self.fc0.weight.dtype)
        x = _normalize_2nd_moment(z)  # (B, z_dim)
        if c is not None:
            y = _normalize_2nd_moment(self.embed(c))  # (B, embed_features)
            x = torch.cat([x, y], dim=1)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # (B, w_dim) after the last layer
        ws = x[:, None, :].expand(-1, self.num_ws, -1)  # (B, num_ws, w_dim)
        if psi != 1:
            if not hasattr(self, "w_avg"):
                raise ValueError("truncation needs mapping.w_avg, which this generator lacks "
                                 "(mapping_kwargs w_avg_beta=None); use psi=1")
            n = self.num_ws if cutoff is None else min(cutoff, self.num_ws)
            w_avg = self.w_avg.to(ws.dtype)
            ws = torch.cat([w_avg + psi * (ws[:, :n] - w_avg), ws[:, n:]], dim=1)
        return ws


class SynthesisNetwork(nn.Module):
    """ws → image through blocks b4, b8, ..., b{img_resolution}."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int,
                 channel_max: int, architecture: str, resample_filter: Any,
                 conv_clamp: float | None, use_noise: bool, modulation: str):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.modulation = modulation
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.layer_ws: list[tuple[str, int]] = []  # ("b8.conv0", w index), in execution order
        w_idx = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res,
                                   img_channels, res == img_resolution, architecture,
                                   resample_filter, conv_clamp, use_noise)
            setattr(self, f"b{res}", block)
            for i, name in enumerate(block.conv_names):
                self.layer_ws.append((f"b{res}.{name}", w_idx + i))
            if block.has_torgb:  # shares its w with the next block's first conv
                self.layer_ws.append((f"b{res}.torgb", w_idx + len(block.conv_names)))
            w_idx += len(block.conv_names)
        self.num_ws = w_idx + 1

    def _ws(self, ws: Any) -> Tensor:
        shape = f"[B, num_ws={self.num_ws}, w_dim={self.w_dim}] (or one w [B, {self.w_dim}])"
        check_model_input("ws", ws, shape)
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:  # one w for every layer, as mapping does
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)  # [B, num_ws, w_dim]
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape {shape}, got {tuple(ws.shape)}")
        return ws.to(self.b4.const.dtype)

    def styles(self, ws: Tensor) -> dict[str, Tensor]:
        """The style vectors s = A(w) of every modulated layer, ``{"b4.conv1": [B, C_in], ...,
        "b8.torgb": [B, C_in]}`` in execution order, for ``ws [B, num_ws, w_dim]``: the raw
        affine outputs (StyleSpace); toRGB layers multiply theirs by 1/sqrt(C_in) when used.
        Raises as ``forward`` does for bad ws."""
        ws = self._ws(ws)
        return {name: self.get_submodule(name).affine(ws[:, idx]) for name, idx in self.layer_ws}

    def forward(self, ws: Tensor, noise_mode: str = "const", noise_seed: int | None = None,
                modulation: str | None = None) -> Tensor:
        """Images ``[B, img_channels, R, R]`` of per-layer latents ``ws [B, num_ws, w_dim]`` (or
        one ``w [B, w_dim]``, broadcast to every layer).
        ``noise_mode``: 'const' (the stored noise_const buffers), 'random' (noise drawn from a
        NumPy generator seeded by ``noise_seed``: reproducible, and usable under vmap, where torch
        random ops are refused) or 'none'; ``modulation`` None: the constructor's. Raises
        TypeError/ValueError for a wrong ws type, shape or non-finite values, or a bad
        noise_mode/noise_seed/modulation."""
        modulation = self.modulation if modulation is None else modulation
        _check_options(1.0, None, noise_mode, noise_seed, modulation)
        ws = self._ws(ws)
        B = ws.shape[0]
        rng = np.random.default_rng(noise_seed) if noise_mode == "random" else None

        def noise(layer: SynthesisLayer) -> Tensor | None:
            if not layer.use_noise or noise_mode == "none":
                return None
            if noise_mode == "const":
                return layer.noise_const  # (res, res), broadcast over batch and channels
            r = layer.resolution
            return torch.from_numpy(rng.standard_normal((B, 1, r, r))).to(ws.device, ws.dtype)

        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            if block.in_channels == 0:
                x = block.const[None].expand(B, -1, -1, -1)  # (B, C, 4, 4)
                x = block.conv1(x, ws[:, w_idx], noise(block.conv1), modulation)
            elif block.architecture == "resnet":
                y = block.skip(x, gain=math.sqrt(0.5))  # (B, C, res, res)
                x = block.conv0(x, ws[:, w_idx], noise(block.conv0), modulation)
                x = block.conv1(x, ws[:, w_idx + 1], noise(block.conv1), modulation,
                                gain=math.sqrt(0.5))
                x = y + x
            else:
                x = block.conv0(x, ws[:, w_idx], noise(block.conv0), modulation)
                x = block.conv1(x, ws[:, w_idx + 1], noise(block.conv1), modulation)
            if img is not None:
                f = block.resample_filter
                img = _upfirdn2d(img, f, up=2, pad=_up_pad(f), gain=4.0)  # (B, C_img, res, res)
            if block.has_torgb:
                y = block.torgb(x, ws[:, w_idx + len(block.conv_names)], modulation)
                img = y if img is None else img + y
            w_idx += len(block.conv_names)
        return img


# ---------------------------------------------------------------------------------------------
# The generator


class StyleGAN2Generator(nn.Module):
    """StyleGAN2 generator with the official state-dict layout (module docstring).

    ``G(z)`` → images [B, img_channels, R, R] under G's run options (``psi``, ``cutoff``,
    ``noise_mode``, ``noise_seed``; set by ``with_options``), which is what
    ``spectra.log_singular_values(G, z)`` differentiates.
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int,
                 img_channels: int, mapping_kwargs: dict | None = None,
                 synthesis_kwargs: dict | None = None, *, modulation: str = "shared"):
        super().__init__()
        for name, v in (("z_dim", z_dim), ("w_dim", w_dim), ("img_channels", img_channels)):
            check_int(name, v, low=1)
        check_int("c_dim", c_dim, low=0)
        if check_int("img_resolution", img_resolution) < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of 2 and at least 4, got "
                             f"{img_resolution!r}")
        mk, sk = dict(mapping_kwargs or {}), dict(synthesis_kwargs or {})
        for kind, given, defaults in (("mapping_kwargs", mk, _MAPPING_DEFAULTS),
                                      ("synthesis_kwargs", sk, _SYNTHESIS_DEFAULTS)):
            unknown = sorted(set(given) - set(defaults))
            if unknown:
                raise ValueError(f"unknown {kind} {unknown}; known: {sorted(defaults)}")
        _check_choice("modulation", modulation, MODULATIONS)
        m, s = {**_MAPPING_DEFAULTS, **mk}, {**_SYNTHESIS_DEFAULTS, **sk}
        _check_choice("architecture", s["architecture"], ARCHITECTURES)
        _check_choice("mapping activation", m["activation"], tuple(_ACTIVATIONS))
        # StyleGAN2's synthesis layers are leaky ReLU 0.2 (the official default; the readers
        # record it explicitly); another value would need layers we do not implement
        _check_choice("synthesis activation", s["activation"], ("lrelu",))
        n = m["num_layers"]
        check_int("mapping num_layers", n, low=1)
        self._kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                            img_channels=img_channels, mapping_kwargs=mk, synthesis_kwargs=sk,
                            modulation=modulation)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(
            w_dim, img_resolution, img_channels, s["channel_base"], s["channel_max"],
            s["architecture"], s["resample_filter"], s["conv_clamp"], s["use_noise"], modulation)
        self.num_ws: int = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            z_dim, c_dim, w_dim, self.num_ws, m["num_layers"], m["embed_features"],
            m["layer_features"], m["activation"], m["lr_multiplier"], m["w_avg_beta"])
        # run options: forward's defaults, what a plain G(z) uses (set them with with_options)
        self.modulation: str = modulation
        self.psi: float = 1.0
        self.cutoff: int | None = None
        self.noise_mode: str = "const"
        self.noise_seed: int | None = None

    # -- configuration and run options ---------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON-able), what a checkpoint sidecar records as
        ``kwargs``; run options (psi, cutoff, noise) are not part of it (``options()``)."""
        return copy.deepcopy(self._kwargs)

    def options(self) -> dict[str, Any]:
        """The run options ``G(z)`` uses: psi, cutoff, noise_mode, noise_seed, modulation."""
        return dict(psi=self.psi, cutoff=self.cutoff, noise_mode=self.noise_mode,
                    noise_seed=self.noise_seed, modulation=self.modulation)

    def with_options(self, **options: Any) -> "StyleGAN2Generator":
        """A shallow copy of G sharing its parameters and buffers whose plain call ``G(z)`` uses
        the given run options (``psi``: any finite number; ``cutoff``: None = all ws, or an int
        >= 0; ``noise_mode``: const/random/none; ``noise_seed``: int >= 0, needed for random;
        ``modulation``: shared/grouped); the others stay as in G. Raises ValueError for an
        unknown option name or a bad value."""
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(self.options())}")
        merged = {**self.options(), **options}
        _check_options(merged["psi"], merged["cutoff"], merged["noise_mode"],
                       merged["noise_seed"], merged["modulation"])
        G = copy.copy(self)
        G.__dict__.update(merged)
        return G

    def styles(self, ws: Tensor) -> dict[str, Tensor]:
        """The style vectors of ``ws [B, num_ws, w_dim]``: ``self.synthesis.styles(ws)``, a dict
        ``{"b4.conv1": [B, C_in], "b4.torgb": [B, C_in], ...}`` of raw affine outputs."""
        return self.synthesis.styles(ws)

    def truncate(self, z: Tensor, psi: float) -> Tensor:
        """ws ``[B, num_ws, w_dim]`` of z truncated towards w_avg by ``psi`` on G's ``cutoff``,
        which ``G(ws)`` (a 3-D input) synthesises: what ``magnet_lab.models.truncate`` and
        ``generate`` use. For Jacobians in z under truncation use ``G.with_options(psi=...)``
        instead. Raises ValueError for a conditional G (use ``G(z, c, psi=...)``)."""
        if self.c_dim:
            raise ValueError(f"truncate(z, psi) has no labels for this conditional generator "
                             f"(c_dim={self.c_dim}); call G(z, c, psi=psi) instead")
        return self.mapping(z, None, psi, self.cutoff)

    def forward(self, z: Tensor, c: Tensor | None = None, *, psi: float | None = None,
                cutoff: int | None = None, noise_mode: str | None = None,
                noise_seed: int | None = None) -> Tensor:
        """Images ``[B, img_channels, R, R]`` of latents ``z [B, z_dim]`` (a single ``[z_dim]``
        gives ``[img_channels, R, R]``) or of ws ``[B, num_ws, w_dim]`` (then psi/cutoff are not
        applied). Arguments left None take G's run options (``with_options``; default psi 1,
        cutoff None = all ws, noise 'const'). The output is the raw synthesis output, roughly in
        [-1, 1] and not clamped (official images are clamped only when converted to uint8).
        Raises as ``mapping`` and ``synthesis`` do."""
        psi = self.psi if psi is None else psi
        cutoff = self.cutoff if cutoff is None else cutoff
        noise_mode = self.noise_mode if noise_mode is None else noise_mode
        noise_seed = self.noise_seed if noise_seed is None else noise_seed
        if isinstance(z, Tensor) and z.ndim == 3:
            return self.synthesis(z, noise_mode, noise_seed, self.modulation)
        single = isinstance(z, Tensor) and z.ndim == 1
        img = self.synthesis(self.mapping(z, c, psi, cutoff), noise_mode, noise_seed,
                             self.modulation)
        return img[0] if single else img
