"""Our own StyleGAN3 generator (configs T and R), written for Jacobians.

Plain PyTorch ops, no custom kernels and no in-place writes on tensors in the graph, so it runs in
float32 or float64 on CPU or CUDA and ``torch.func.jvp``, ``vjp`` and ``vmap`` run through it. Its
``state_dict()`` has exactly the keys and shapes of the official stylegan3 ``Generator``
(``mapping.fc0.weight``, ``mapping.w_avg``, ``synthesis.input.freqs``, ``synthesis.L0_36_512.weight``,
``synthesis.L7_148_483.up_filter``, ``synthesis.L14_512_3.magnitude_ema``, ...), so an official state
dict loads with ``strict=True``. Re-implemented from the paper (Karras et al. 2021, "Alias-Free
Generative Adversarial Networks") and facts read from the public reference code, not copied:

- mapping: z normalised by rsqrt(mean(z²) + 1e-8) (and, when c_dim > 0, the label embedding
  ``embed`` (c → w_dim, linear) likewise, then concatenated); ``num_layers`` (2) fully connected
  layers, leaky ReLU 0.2 × √2, weights × lr_mult/√fan_in, biases × lr_mult (0.01); w broadcast to
  num_ws = num_layers_synthesis + 2; truncation w_avg + ψ(w − w_avg) on the first ``cutoff`` ws.
- schedule (``layer_schedule``): for layer i = 0..N (N = 14; the last is ToRGB), cutoff
  f_c = 2·(R/2 / 2)^e and minimum stopband f_t = 2^2.1·(R/2·2^0.3 / 2^2.1)^e with
  e = min(i / (N − 2), 1); sampling rate s = 2^⌈log2 min(2 f_t, R)⌉; transition half-width
  f_h = max(f_t, s/2) − f_c; size s + 2·10 (a 10-pixel margin) except the last two layers,
  critically sampled at R; channels rint(min(channel_base/2 / f_c, channel_max)), ToRGB
  img_channels. Layer i is named ``L{i}_{size}_{channels}``.
- input: Fourier features sin(2π(f·p + φ)) on a grid p = (j + ½ − size/2)/s at rate s, f drawn
  in a disc of radius f_c,0; each sample's first w gives, through ``input.affine`` (bias
  [1, 0, 0, 0]), a rotation (r_c, r_s normalised) and translation (t_x, t_y) applied to the
  frequencies and phases after the user ``transform`` buffer (the inverse of the image
  transform: the features at p are the untransformed ones at transform·p); amplitudes roll off
  linearly from 1 at |f| = f_c,0 to 0 at s/2; then a learned channel mixing ``weight`` / √C.
- layer: modulated convolution (kernel 3 for T, 1 for R and ToRGB; 'full' padding k − 1); the
  weight is normalised by its RMS per output channel and the styles by their RMS, then
  demodulated by rsqrt(Σ(w·s)² + 1e-8) (ToRGB: styles × 1/√(C_in·k²), no demodulation); the
  input is scaled by rsqrt(magnitude_ema). Then the filtered leaky ReLU (``filtered_lrelu``):
  bias; zero-insertion upsampling by ``up`` with padding and the FIR ``up_filter`` × up²; leaky
  ReLU 0.2 × √2 (ToRGB: linear); clamp ±conv_clamp; FIR ``down_filter`` and keep every
  ``down``-th sample. The temporary rate is max(s_in, s_out)·2 (ToRGB: ·1); filters have
  6·factor taps: Kaiser window-method low-pass (cutoff f_c, transition 2 f_h), separable, and for
  config R radially symmetric (jinc × Kaiser²) down-filters in the non-critical layers
  (``design_lowpass_filter``). Output × 0.25.

Filters come from the checkpoint's buffers; a freshly built model designs them (scipy) as the
reference code does, in float32. Differences from the official code, on purpose:

- **per-sample style normalisation**: the official modulated convolution divides the styles by
  their RMS over the *whole batch* (a scalar shared by all samples). We divide each sample's
  styles by its own RMS, so an image never depends on the other rows of the batch (needed for
  ``vmap`` and per-sample Jacobians). Demodulation divides this scale out again, so the two agree
  up to the 1e-8 in the demodulation and rounding (measured in ``docs/stylegan3.md``); at batch
  size 1 they are the same formula.
- ``magnitude_ema`` and ``w_avg`` are never updated (they move only in training); fp16 layers
  (``num_fp16_res``) are not used: we compute in the module's dtype. Noise modes do not exist in
  StyleGAN3 (the official ``noise_mode`` argument is unused).

Use::

    G = StyleGAN3Generator(512, 0, 512, 512, 3)               # config T, 512²; R: CONFIGS["R"]
    G.load_state_dict(official_state_dict, strict=True)
    img = G(z, psi=0.7)                                       # [B, 3, 512, 512], roughly [-1, 1]
    Gt = G.with_options(psi=0.7, transform=input_transform(translate=(0.1, 0), rotate_deg=10))
    log_sv = spectra.log_singular_values(Gt, z, spectra.SpectraOptions("projected"))
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..validation import check_label_batch, check_latent_batch, check_model_input

__all__ = ["StyleGAN3Generator", "InputSpec", "LayerSpec", "CONFIGS", "MAPPING_DEFAULTS",
           "SYNTHESIS_DEFAULTS", "layer_schedule", "state_shapes", "design_lowpass_filter",
           "filtered_lrelu", "input_transform"]

MAPPING_DEFAULTS: dict[str, Any] = dict(num_layers=2, lr_multiplier=0.01, w_avg_beta=0.998)
SYNTHESIS_DEFAULTS: dict[str, Any] = dict(
    channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2,
    first_stopband=2 ** 2.1, last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25,
    num_fp16_res=4, conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False,
    conv_clamp=256, magnitude_ema_beta=0.999)
# accepted and ignored: num_fp16_res (we never run fp16 layers), w_avg_beta and
# magnitude_ema_beta (training-time moving averages)
CONFIGS: dict[str, dict[str, Any]] = {  # synthesis_kwargs of the published configs
    "T": {},
    "R": dict(conv_kernel=1, channel_base=65536, channel_max=1024, use_radial_filters=True),
}


# ---------------------------------------------------------------------------------------------
# The layer schedule (pure arithmetic, no tensors)


@dataclass(frozen=True)
class InputSpec:
    """The Fourier-feature input: ``channels`` maps of ``size``² samples at ``sampling_rate``,
    frequencies within ``bandwidth`` (= the first layer's cutoff)."""
    channels: int
    size: int
    sampling_rate: float
    bandwidth: float


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's published parameters and what follows from them: up/down factors,
    filter taps and the padding (x0, x1, y0, y1) of the upsampled signal."""
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    tmp_sampling_rate: int
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: tuple[int, int, int, int]


def layer_schedule(img_resolution: int, img_channels: int, **synthesis_kwargs: Any
                   ) -> tuple[InputSpec, list[LayerSpec]]:
    """The input and the ``num_layers + 1`` layers (the last is ToRGB) of a StyleGAN3 synthesis
    network with the given ``synthesis_kwargs`` (defaults ``SYNTHESIS_DEFAULTS``), from the
    published cutoff / stopband / sampling-rate progression (module docstring). Raises
    ValueError for unknown kwargs or a schedule whose rates are not integer multiples."""
    unknown = sorted(set(synthesis_kwargs) - set(SYNTHESIS_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown synthesis_kwargs {unknown}; known: {sorted(SYNTHESIS_DEFAULTS)}")
    k = {**SYNTHESIS_DEFAULTS, **synthesis_kwargs}
    n, n_crit = k["num_layers"], k["num_critical"]
    if not (isinstance(n, int) and isinstance(n_crit, int) and 0 <= n_crit < n):
        raise ValueError(f"need integers 0 <= num_critical < num_layers, got {n_crit}, {n}")
    res = img_resolution
    last_cutoff = res / 2  # f_c,N
    last_stopband = last_cutoff * k["last_stopband_rel"]  # f_t,N
    exponents = np.minimum(np.arange(n + 1) / (n - n_crit), 1)
    cutoffs = k["first_cutoff"] * (last_cutoff / k["first_cutoff"]) ** exponents
    stopbands = k["first_stopband"] * (last_stopband / k["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + k["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((k["channel_base"] / 2) / cutoffs, k["channel_max"]))
    channels[-1] = img_channels
    spec_in = InputSpec(int(channels[0]), int(sizes[0]), float(rates[0]), float(cutoffs[0]))
    layers = []
    for i in range(n + 1):
        p = max(i - 1, 0)
        torgb = i == n
        critical = i >= n - n_crit
        s_in, s_out = int(rates[p]), int(rates[i])
        tmp = max(s_in, s_out) * (1 if torgb else k["lrelu_upsampling"])
        up, down = int(np.rint(tmp / s_in)), int(np.rint(tmp / s_out))
        if s_in * up != tmp or s_out * down != tmp:
            raise ValueError(f"layer {i}: sampling rates {s_in} -> {tmp} -> {s_out} are not "
                             "integer multiples; choose another img_resolution or schedule")
        kernel = 1 if torgb else k["conv_kernel"]
        up_taps = k["filter_size"] * up if up > 1 and not torgb else 1
        down_taps = k["filter_size"] * down if down > 1 and not torgb else 1
        size_in, size_out = int(sizes[p]), int(sizes[i])
        pad_total = ((size_out - 1) * down + 1 - (size_in + kernel - 1) * up
                     + up_taps + down_taps - 2)
        pad_lo = (pad_total + up) // 2  # the symmetric interpretation of sample positions
        pad_hi = pad_total - pad_lo
        layers.append(LayerSpec(
            name=f"L{i}_{size_out}_{int(channels[i])}", is_torgb=torgb,
            is_critically_sampled=critical, in_channels=int(channels[p]),
            out_channels=int(channels[i]), in_size=size_in, out_size=size_out,
            in_sampling_rate=s_in, out_sampling_rate=s_out, in_cutoff=float(cutoffs[p]),
            out_cutoff=float(cutoffs[i]), in_half_width=float(half_widths[p]),
            out_half_width=float(half_widths[i]), tmp_sampling_rate=tmp, conv_kernel=kernel,
            up_factor=up, down_factor=down, up_taps=up_taps, down_taps=down_taps,
            down_radial=bool(k["use_radial_filters"]) and not critical,
            padding=(pad_lo, pad_hi, pad_lo, pad_hi)))
    return spec_in, layers


def state_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of ``StyleGAN3Generator(**config).state_dict()`` (the official key names),
    computed from the schedule without building tensors; ``config`` as ``G.config()`` (mapping
    and synthesis kwargs may be partial)."""
    z, c, w = config["z_dim"], config["c_dim"], config["w_dim"]
    m = {**MAPPING_DEFAULTS, **(config.get("mapping_kwargs") or {})}
    spec_in, layers = layer_schedule(config["img_resolution"], config["img_channels"],
                                     **(config.get("synthesis_kwargs") or {}))
    out: dict[str, tuple[int, ...]] = {}
    if c > 0:
        out["mapping.embed.weight"], out["mapping.embed.bias"] = (w, c), (w,)
    features = [z + (w if c > 0 else 0)] + [w] * m["num_layers"]
    for i in range(m["num_layers"]):
        out[f"mapping.fc{i}.weight"] = (features[i + 1], features[i])
        out[f"mapping.fc{i}.bias"] = (features[i + 1],)
    out["mapping.w_avg"] = (w,)
    C = spec_in.channels
    out.update({"synthesis.input.weight": (C, C), "synthesis.input.affine.weight": (4, w),
                "synthesis.input.affine.bias": (4,), "synthesis.input.transform": (3, 3),
                "synthesis.input.freqs": (C, 2), "synthesis.input.phases": (C,)})
    for L in layers:
        p = f"synthesis.{L.name}"
        k = L.conv_kernel
        out.update({f"{p}.affine.weight": (L.in_channels, w), f"{p}.affine.bias": (L.in_channels,),
                    f"{p}.weight": (L.out_channels, L.in_channels, k, k),
                    f"{p}.bias": (L.out_channels,), f"{p}.magnitude_ema": ()})
        if L.up_taps > 1:
            out[f"{p}.up_filter"] = (L.up_taps,)
        if L.down_taps > 1:
            out[f"{p}.down_filter"] = (L.down_taps,) * (2 if L.down_radial else 1)
    return out


# ---------------------------------------------------------------------------------------------
# Filters and the filtered leaky ReLU


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> Tensor | None:
    """The FIR low-pass filter of a layer, float32: None for 1 tap (identity); else the Kaiser
    window-method design (``scipy.signal.firwin``: cutoff ``cutoff``, transition ``width``, rate
    ``fs``; 1-D, applied separably) or, with ``radial``, the 2-D radially symmetric jinc
    2·f_c·J1(2π f_c r)/(2 r) windowed by the outer product of the same Kaiser window and
    normalised to sum 1 (``[numtaps, numtaps]``). Raises ValueError for numtaps < 1."""
    import scipy.signal
    import scipy.special
    if isinstance(numtaps, bool) or not isinstance(numtaps, (int, np.integer)) or numtaps < 1:
        raise ValueError(f"numtaps must be a positive integer, got {numtaps!r}")
    if numtaps == 1:
        return None
    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(f, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    safe = np.where(r > 0, r, 1.0)
    f = np.where(r > 0, scipy.special.j1(2 * cutoff * (np.pi * safe)) / (np.pi * safe), cutoff)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    win = np.kaiser(numtaps, beta)
    f = f * np.outer(win, win)
    return torch.as_tensor(f / np.sum(f), dtype=torch.float32)


def _fir_up(x: Tensor, f: Tensor | None, up: int, padding: tuple[int, int, int, int],
            gain: float) -> Tensor:
    """Zero-insertion upsampling by ``up``, padding (x0, x1, y0, y1; negative crops), then the
    FIR ``f`` (1-D separable ``[T]`` or 2-D ``[T, T]``) as a convolution, times ``gain`` in all.
    Done as a stride-``up`` transposed convolution (no zeros are materialised), then cropped or
    padded: output sample m of an axis is the transposed conv's sample m + T − 1 − pad_lo."""
    B, C, H, W = x.shape
    x0, x1, y0, y1 = padding
    if f is None and up == 1:  # ToRGB: padding only
        x = F.pad(x, [x0, x1, y0, y1])
        return x * gain if gain != 1 else x
    f = torch.ones([1], dtype=x.dtype, device=x.device) if f is None else f.to(x.dtype)
    if f.ndim == 1:  # separable: along H, then along W, each × √gain
        g = f * math.sqrt(gain)
        x = F.conv_transpose2d(x, g[None, None, :, None].expand(C, 1, -1, 1), stride=(up, 1),
                               groups=C)  # [B, C, (H-1)·up + T, W]
        x = F.conv_transpose2d(x, g[None, None, None, :].expand(C, 1, 1, -1), stride=(1, up),
                               groups=C)  # [B, C, (H-1)·up + T, (W-1)·up + T]
    else:
        x = F.conv_transpose2d(x, (f * gain)[None, None].expand(C, 1, *f.shape), stride=up,
                               groups=C)
    Th, Tw = (f.shape[0], f.shape[0]) if f.ndim == 1 else tuple(f.shape)
    ah, aw = Th - 1 - y0, Tw - 1 - x0  # start of the wanted window in the transposed output
    Lh, Lw = H * up + y0 + y1 - Th + 1, W * up + x0 + x1 - Tw + 1  # wanted lengths
    return F.pad(x, [-aw, Lw - (x.shape[3] - aw), -ah, Lh - (x.shape[2] - ah)])


def _fir_down(x: Tensor, f: Tensor | None, down: int) -> Tensor:
    """Convolve with the FIR ``f`` (no padding) and keep every ``down``-th sample: a strided
    convolution with the flipped filter."""
    C = x.shape[1]
    if f is None:
        return x[:, :, ::down, ::down] if down > 1 else x
    f = f.to(x.dtype).flip(list(range(f.ndim)))
    if f.ndim == 2:
        return F.conv2d(x, f[None, None].expand(C, 1, *f.shape), stride=down, groups=C)
    x = F.conv2d(x, f[None, None, :, None].expand(C, 1, -1, 1), stride=(down, 1), groups=C)
    return F.conv2d(x, f[None, None, None, :].expand(C, 1, 1, -1), stride=(1, down), groups=C)


def filtered_lrelu(x: Tensor, fu: Tensor | None, fd: Tensor | None, b: Tensor | None,
                   up: int = 1, down: int = 1, padding: tuple[int, int, int, int] = (0, 0, 0, 0),
                   gain: float = math.sqrt(2), slope: float = 0.2,
                   clamp: float | None = None) -> Tensor:
    """The filtered leaky ReLU of ``x [B, C, H, W]``: add bias ``b [C]``; upsample by zero
    insertion (``up``), pad by ``padding`` (x0, x1, y0, y1; negative crops) and convolve with
    ``fu`` × up² (1-D separable ``[T]``, 2-D ``[T, T]`` or None = identity); leaky ReLU with
    ``slope``, × ``gain``, clamp to ±``clamp``; convolve with ``fd`` and keep every ``down``-th
    sample. Output ``[B, C, (H·up + x0 + x1 − Tu − Td + 2 + down − 1) // down, ...]``. Plain
    PyTorch (differentiable, any float dtype)."""
    if b is not None:
        x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = _fir_up(x, fu, up, padding, gain=float(up * up))
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return _fir_down(x, fd, down)


def input_transform(translate: tuple[float, float] = (0.0, 0.0),
                    rotate_deg: float = 0.0) -> list[list[float]]:
    """The ``transform`` run option (the input's inverse transform, as the official
    ``synthesis.input.transform`` buffer holds it) that translates the image by ``translate``
    (in units of the image width, x then y) and rotates it by ``rotate_deg`` degrees: the inverse
    of [[cos, sin, t_x], [−sin, cos, t_y], [0, 0, 1]], as a 3×3 nested list."""
    a = math.radians(rotate_deg)
    m = np.array([[math.cos(a), math.sin(a), translate[0]],
                  [-math.sin(a), math.cos(a), translate[1]], [0.0, 0.0, 1.0]])
    return np.linalg.inv(m).tolist()


# ---------------------------------------------------------------------------------------------
# Checks


def _check_psi_cutoff(psi: Any, cutoff: Any) -> None:
    if isinstance(psi, bool) or not isinstance(psi, (int, float)) or not math.isfinite(psi):
        raise ValueError(f"psi must be a finite number, got {psi!r}")
    if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int)
                               or cutoff < 0):
        raise ValueError(f"cutoff must be None (all ws) or an integer >= 0, got {cutoff!r}")


def _as_transform(m: Any) -> tuple[tuple[float, ...], ...] | None:
    """A 3×3 finite matrix (tensor, array or nested list) as a tuple of row tuples; None stays."""
    if m is None:
        return None
    try:
        a = np.asarray(m.detach().cpu() if isinstance(m, Tensor) else m, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"transform must be a 3x3 matrix of numbers, got {m!r}") from err
    if a.shape != (3, 3) or not np.isfinite(a).all():
        raise ValueError(f"transform must be a finite 3x3 matrix, got shape {a.shape}")
    return tuple(tuple(float(v) for v in row) for row in a)


# ---------------------------------------------------------------------------------------------
# Layers (attribute names are the official state-dict names)


class FullyConnectedLayer(nn.Module):
    """y = act(x·(weight·lr_mult/√fan_in)ᵀ + bias·lr_mult), act linear or leaky ReLU 0.2 × √2."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False,
                 lr_multiplier: float = 1.0, weight_init: float = 1.0, bias_init: Any = 0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn([out_features, in_features])
                                   * (weight_init / lr_multiplier))
        bias = torch.tensor(np.broadcast_to(np.asarray(bias_init, np.float32), [out_features]))
        self.bias = nn.Parameter(bias / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        x = x @ (self.weight * self.weight_gain).t() + self.bias * self.bias_gain  # [B, out]
        return F.leaky_relu(x, 0.2) * math.sqrt(2) if self.lrelu else x


class MappingNetwork(nn.Module):
    """z (and c) → ws: normalise, embed, ``num_layers`` fully connected layers, broadcast,
    truncate."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int,
                 lr_multiplier: float):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers = num_layers
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], True,
                                                        lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Tensor, c: Tensor | None = None, psi: float = 1.0,
                cutoff: int | None = None) -> Tensor:
        """ws ``[B, num_ws, w_dim]`` of ``z [B, z_dim]`` (labels ``c [B, c_dim]`` when c_dim > 0),
        truncated as w_avg + psi·(w − w_avg) on the first ``cutoff`` ws (None: all). Raises
        TypeError/ValueError for a wrong z/c type, shape or non-finite values, or a bad
        psi/cutoff."""
        _check_psi_cutoff(psi, cutoff)
        z = check_latent_batch(z, self.z_dim, self.w_avg.dtype)
        c = check_label_batch(c, z.shape[0], self.c_dim, self.w_avg.dtype)
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()  # [B, z_dim]
        if c is not None:
            y = self.embed(c)  # [B, w_dim]
            x = torch.cat([x, y * (y.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)  # [B, w_dim] after the last
        ws = x[:, None, :].expand(-1, self.num_ws, -1)  # [B, num_ws, w_dim]
        if psi != 1:
            n = self.num_ws if cutoff is None else min(cutoff, self.num_ws)
            ws = torch.cat([self.w_avg + psi * (ws[:, :n] - self.w_avg), ws[:, n:]], dim=1)
        return ws


class SynthesisInput(nn.Module):
    """Fourier features of the first w: rotated/translated frequencies, roll-off, channel mix."""

    def __init__(self, w_dim: int, spec: InputSpec):
        super().__init__()
        self.channels, self.size = spec.channels, spec.size
        self.sampling_rate, self.bandwidth = spec.sampling_rate, spec.bandwidth
        freqs = torch.randn([spec.channels, 2])  # uniform-ish in a disc of radius bandwidth
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * spec.bandwidth
        self.weight = nn.Parameter(torch.randn([spec.channels, spec.channels]))
        self.affine = FullyConnectedLayer(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3))  # inverse transform of the image
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand([spec.channels]) - 0.5)

    def forward(self, w: Tensor, transform: Tensor | None = None) -> Tensor:
        """Features ``[B, C, size, size]`` of ``w [B, w_dim]``; ``transform`` [3, 3] replaces the
        ``transform`` buffer when given."""
        t = self.affine(w)  # [B, 4]: (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rc, rs, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(rc), torch.ones_like(rc)
        m = torch.stack([torch.stack([rc, -rs, -rc * tx + rs * ty], dim=1),  # rotation after
                         torch.stack([rs, rc, -rs * tx - rc * ty], dim=1),   # translation
                         torch.stack([zero, zero, one], dim=1)], dim=1)  # [B, 3, 3]
        user = self.transform if transform is None else transform
        m = m @ user.to(m.dtype)  # [B, 3, 3], the user transform applied first
        freqs = self.freqs.to(m.dtype)
        phases = self.phases.to(m.dtype)[None] + (freqs[None] @ m[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = freqs[None] @ m[:, :2, :2]  # [B, C, 2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # [B, C]
        g = (torch.arange(self.size, dtype=m.dtype, device=m.device) + 0.5 - self.size / 2) \
            / self.sampling_rate  # [size]: sample positions, the same along x and y
        x = (g[None, :, None, None] * freqs[:, None, None, :, 1]      # y · f_y
             + g[None, None, :, None] * freqs[:, None, None, :, 0]    # x · f_x
             + phases[:, None, None, :])  # [B, H, W, C]
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()  # [B, H, W, C]
        return x.permute(0, 3, 1, 2)  # [B, C, H, W]


class SynthesisLayer(nn.Module):
    """Modulated conv (input gain rsqrt(magnitude_ema)) + filtered leaky ReLU; or ToRGB."""

    def __init__(self, w_dim: int, spec: LayerSpec, conv_clamp: float | None):
        super().__init__()
        self.spec, self.conv_clamp = spec, conv_clamp
        k = spec.conv_kernel
        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, k, k]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", design_lowpass_filter(
            spec.up_taps, spec.in_cutoff, spec.in_half_width * 2, spec.tmp_sampling_rate))
        self.register_buffer("down_filter", design_lowpass_filter(
            spec.down_taps, spec.out_cutoff, spec.out_half_width * 2, spec.tmp_sampling_rate,
            radial=spec.down_radial))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """``x [B, C_in, in_size, in_size]``, ``w [B, w_dim]`` → ``[B, C_out, out_size, out_size]``."""
        s = self.spec
        styles = self.affine(w)  # [B, C_in]
        weight = self.weight
        if s.is_torgb:
            styles = styles / math.sqrt(s.in_channels * s.conv_kernel ** 2)
            dcoefs = None
        else:  # RMS-normalise weight (per output channel) and styles (per sample), demodulate
            weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
            styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [B, O]
        styles = styles * self.magnitude_ema.rsqrt()  # the input gain
        x = x * styles[:, :, None, None]
        x = F.conv2d(x, weight.to(x.dtype), padding=s.conv_kernel - 1)  # [B, O, H+k-1, W+k-1]
        if dcoefs is not None:
            x = x * dcoefs[:, :, None, None]
        return filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, s.up_factor,
                              s.down_factor, s.padding, gain=1.0 if s.is_torgb else math.sqrt(2),
                              slope=1.0 if s.is_torgb else 0.2, clamp=self.conv_clamp)


class SynthesisNetwork(nn.Module):
    """ws → image: the Fourier input (ws[:, 0]), layers L0 … L{N} (ws[:, 1:]), × output_scale."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int,
                 **synthesis_kwargs: Any):
        super().__init__()
        k = {**SYNTHESIS_DEFAULTS, **synthesis_kwargs}
        spec_in, layers = layer_schedule(img_resolution, img_channels, **synthesis_kwargs)
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = len(layers) + 1
        self.output_scale = k["output_scale"]
        self.input = SynthesisInput(w_dim, spec_in)
        self.layer_names = [L.name for L in layers]
        for L in layers:
            setattr(self, L.name, SynthesisLayer(w_dim, L, k["conv_clamp"]))

    def _ws(self, ws: Any) -> Tensor:
        shape = f"[B, num_ws={self.num_ws}, w_dim={self.w_dim}] (or one w [B, {self.w_dim}])"
        check_model_input("ws", ws, shape)
        if ws.ndim == 2 and ws.shape[1] == self.w_dim:
            ws = ws[:, None, :].expand(-1, self.num_ws, -1)  # [B, num_ws, w_dim]
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must have shape {shape}, got {tuple(ws.shape)}")
        return ws.to(self.input.freqs.dtype)

    def forward(self, ws: Tensor, transform: Tensor | None = None) -> Tensor:
        """Images ``[B, img_channels, R, R]`` of ``ws [B, num_ws, w_dim]`` (or one ``w [B, w_dim]``
        for every layer); ``transform`` [3, 3] replaces the input's ``transform`` buffer. Raises
        TypeError/ValueError for a wrong ws type, shape or non-finite values."""
        ws = self._ws(ws)
        x = self.input(ws[:, 0], transform)  # [B, C0, size0, size0]
        for i, name in enumerate(self.layer_names):
            x = getattr(self, name)(x, ws[:, i + 1])
        return x * self.output_scale if self.output_scale != 1 else x


# ---------------------------------------------------------------------------------------------
# The generator


class StyleGAN3Generator(nn.Module):
    """StyleGAN3 generator (configs T and R) with the official state-dict layout (module
    docstring).

    ``G(z)`` → images [B, img_channels, R, R] under G's run options (``psi``, ``cutoff``,
    ``transform``; set by ``with_options``), which is what ``spectra.log_singular_values(G, z)``
    differentiates. ``synthesis_kwargs`` are the official synthesis/layer kwargs
    (``SYNTHESIS_DEFAULTS``; config R is ``CONFIGS["R"]``), ``mapping_kwargs`` the mapping's
    (``MAPPING_DEFAULTS``).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int,
                 img_channels: int, mapping_kwargs: dict | None = None,
                 synthesis_kwargs: dict | None = None):
        super().__init__()
        for name, v in (("z_dim", z_dim), ("w_dim", w_dim), ("img_channels", img_channels),
                        ("img_resolution", img_resolution)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(c_dim, bool) or not isinstance(c_dim, int) or c_dim < 0:
            raise ValueError(f"c_dim must be a non-negative integer, got {c_dim!r}")
        mk, sk = dict(mapping_kwargs or {}), dict(synthesis_kwargs or {})
        unknown = sorted(set(mk) - set(MAPPING_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown mapping_kwargs {unknown}; known: {sorted(MAPPING_DEFAULTS)}")
        m = {**MAPPING_DEFAULTS, **mk}
        n = m["num_layers"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"mapping num_layers must be a positive integer, got {n!r}")
        self._kwargs = dict(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution,
                            img_channels=img_channels, mapping_kwargs=mk, synthesis_kwargs=sk)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **sk)
        self.num_ws: int = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, n, m["lr_multiplier"])
        # run options: forward's defaults, what a plain G(z) uses (set them with with_options)
        self.psi: float = 1.0
        self.cutoff: int | None = None
        self.transform: tuple[tuple[float, ...], ...] | None = None

    # -- configuration and run options ---------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON-able), what a checkpoint sidecar records as
        ``kwargs``; run options are not part of it (``options()``)."""
        return copy.deepcopy(self._kwargs)

    def options(self) -> dict[str, Any]:
        """The run options ``G(z)`` uses: ``psi``, ``cutoff`` and ``transform`` (a 3×3 nested
        list, or None for the checkpoint's ``synthesis.input.transform`` buffer)."""
        t = None if self.transform is None else [list(r) for r in self.transform]
        return dict(psi=self.psi, cutoff=self.cutoff, transform=t)

    def with_options(self, **options: Any) -> "StyleGAN3Generator":
        """A shallow copy of G sharing its parameters and buffers whose plain call ``G(z)`` uses
        the given run options (``psi``: any finite number; ``cutoff``: None = all ws, or an int
        >= 0; ``transform``: a finite 3×3 matrix used instead of the input's ``transform`` buffer
        — the inverse of the image transform, see ``input_transform`` — or None for the buffer);
        the others stay as in G. Raises ValueError for an unknown option name or a bad value."""
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(self.options())}")
        merged = {"psi": self.psi, "cutoff": self.cutoff, "transform": self.transform, **options}
        _check_psi_cutoff(merged["psi"], merged["cutoff"])
        merged["transform"] = _as_transform(merged["transform"])
        G = copy.copy(self)
        G.__dict__.update(merged)
        return G

    def truncate(self, z: Tensor, psi: float) -> Tensor:
        """ws ``[B, num_ws, w_dim]`` of z truncated towards w_avg by ``psi`` on G's ``cutoff``,
        which ``G(ws)`` (a 3-D input) synthesises (what ``magnet_lab.models.truncate`` and
        ``generate`` use). Raises ValueError for a conditional G (use ``G(z, c, psi=...)``)."""
        if self.c_dim:
            raise ValueError(f"truncate(z, psi) has no labels for this conditional generator "
                             f"(c_dim={self.c_dim}); call G(z, c, psi=psi) instead")
        return self.mapping(z, None, psi, self.cutoff)

    def _transform_tensor(self, transform: Any) -> Tensor | None:
        t = self.transform if transform is None else _as_transform(transform)
        if t is None:
            return None
        buf = self.synthesis.input.transform
        return torch.tensor(t, dtype=buf.dtype, device=buf.device)

    def forward(self, z: Tensor, c: Tensor | None = None, *, psi: float | None = None,
                cutoff: int | None = None, transform: Any = None) -> Tensor:
        """Images ``[B, img_channels, R, R]`` of latents ``z [B, z_dim]`` (a single ``[z_dim]``
        gives ``[img_channels, R, R]``) or of ws ``[B, num_ws, w_dim]`` (then psi/cutoff are not
        applied). Arguments left None take G's run options (``with_options``; default psi 1,
        cutoff None = all ws, transform None = the checkpoint's buffer). The output is the raw
        synthesis output, roughly in [-1, 1] and not clamped. Raises as ``mapping`` and
        ``synthesis`` do, and ValueError for a bad transform."""
        psi = self.psi if psi is None else psi
        cutoff = self.cutoff if cutoff is None else cutoff
        t = self._transform_tensor(transform)
        if isinstance(z, Tensor) and z.ndim == 3:
            return self.synthesis(z, t)
        single = isinstance(z, Tensor) and z.ndim == 1
        img = self.synthesis(self.mapping(z, c, psi, cutoff), t)
        return img[0] if single else img
