"""Our BigGAN-deep generator (Brock, Donahue & Simonyan 2019, the "deep" variant), written for
Jacobians and readable in one sitting.

It computes what ``pytorch-pretrained-biggan`` (the PyTorch port of DeepMind's TF-Hub modules
biggan-deep-128/256/512) computes in eval mode, with plain weights: the reference keeps every
convolution and linear layer (but the class embedding) under ``torch.nn.utils.spectral_norm``,
whose eval-mode weight is ``weight_orig / (u · (W v))`` with the stored u, v; our reader
(``models.readers.biggan_folder``) folds that division into the weight once, at load. Our
``state_dict()`` keys are the reference's with each (``weight_orig``, ``weight_u``, ``weight_v``)
triple replaced by one ``weight``.

The forward pass, for latents ``z [B, z_dim]`` and class vectors ``c [B, num_classes]``::

    cond = [z, embeddings(c)]                        # (B, 2·z_dim): every batch norm sees it
    x = gen_z(cond) → (B, 4, 4, m0·ch) → NCHW         # m0 = layers[0] in-multiplier (16)
    for each (upsample, m_in, m_out) in layers:        # self-attention before block
        x = GenBlock(x)                                # attention_layer_position
    x = tanh(conv_to_rgb(relu(bn(x)))[:, :img_channels])

GenBlock (bottleneck residual block, channel reduction 4): ``bn_0 → relu → conv_0 (1×1, to
in/4) → bn_1 → relu → [nearest 2× upsampling] → conv_1 (3×3) → bn_2 → relu → conv_2 (3×3) → bn_3
→ relu → conv_3 (1×1, to out)``, plus the skip ``x`` (its first ``out`` channels when out = in/2,
nearest-upsampled). Conditional batch norm: ``(x − mean_t) / sqrt(var_t + eps) · (1 +
scale(cond)) + offset(cond)`` (scale, offset linear without bias); the final ``bn`` is
unconditional (learned weight and bias). Self-attention (SAGAN): theta, phi (max-pooled), g
(max-pooled) 1×1 convolutions to ch/8, ch/8, ch/2 channels, ``softmax(θᵀφ)``, o_conv back to ch,
``x + gamma · attention``.

**Batch-norm statistics and truncation.** No batch statistics are ever used: each batch norm
stores ``running_means``/``running_vars`` ``[n_stats, C]`` for the truncation values ``0, 1/(n−1),
…, 1`` (51 values, step 0.02, in the released files) and the run option ``truncation`` selects
them. The reference's rule (``stats_rule="reference"``, the default, so that our images equal
its images) is ``coef, i = modf(t / step)``; ``mean = means[i]`` when coef == 0, else
``means[i]·coef + means[i+1]·(1 − coef)``: the weights are the reverse of a linear
interpolation, and float division lands some grid values (t = 0.58, 0.94) just below the grid,
so they get the statistics of the previous grid value (0.56, 0.92). ``stats_rule="linear"`` is
the plain linear interpolation (``means[i]·(1 − f) + means[i+1]·f``); the two agree on every grid
value where t / step is exact (0.4, 0.7, 1.0, ...). **The truncation option never scales z:** as
in the reference (``truncated_noise_sample`` returns ``truncation · truncnorm(−2, 2)``), drawing
and scaling z is the caller's job. The run option ``z_scale`` (default 1) multiplies z inside the forward pass,
``G(z, c) = G_1(z_scale · z, c)``; the MaGNET authors' BigGAN samples are ``G(0.9·z, c)`` with
``truncation=1``, the named recipe ``AUTHORS_RECIPE`` (``load_generator(folder,
**AUTHORS_RECIPE)``), so that candidates keep the law ``truncnorm(−2, 2)`` and the bank's
Jacobians are those of the map that is sampled, z ↦ G(0.9·z, c).

It is **not piecewise affine in z**, even for a fixed class: z enters every conditional batch
norm's gain (products of z-dependent terms), the attention is a softmax and the output a tanh;
so the Jacobian changes continuously with z, and MaGNET's volume is a local quantity here.

Plain PyTorch ops, no in-place writes on graph tensors: ``torch.func.jvp``/``vjp``/``vmap`` run
through it w.r.t. z (with the class fixed) or c. float32 or float64 (``.double()``).

Use::

    G = magnet_lab.load_generator("/path/to/biggan-deep-256")     # a pytorch_model.bin folder
    c = G.one_hot(torch.tensor([207, 207]))                          # [2, 1000]
    img = G(0.4 * z, c, truncation=0.4)                              # [2, 3, 256, 256] in [-1, 1]
    Gt = G.with_options(truncation=0.4)                              # Gt(z, c) uses its stats
    Ga = G.with_options(**AUTHORS_RECIPE)                            # Ga(z, c) = G(0.9 z, c)
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..latent import TruncatedNormalLaw
from ..validation import is_transformed

__all__ = ["AUTHORS_RECIPE", "BigGANDeep", "BigGANDeepConfig", "RELEASED_CONFIGS", "STATS_RULES",
           "stats_weights"]

STATS_RULES = ("reference", "linear")
# The MaGNET authors' BigGAN-deep recipe (their demo): samples G(0.9 · z, c) with the model's
# truncation input at 1 and z from truncnorm(-2, 2); run options for load_generator/with_options.
AUTHORS_RECIPE: dict[str, float] = {"truncation": 1.0, "z_scale": 0.9}


def _released(output_dim: int, mults: list[int]) -> dict[str, Any]:
    """A released config: blocks alternate (no upsampling, upsampling) over the multipliers."""
    layers = []
    for m_in, m_out in zip(mults[:-1], mults[1:]):
        layers += [[False, m_in, m_in], [True, m_in, m_out]]
    return dict(output_dim=output_dim, z_dim=128, class_embed_dim=128, channel_width=128,
                num_classes=1000, layers=layers, attention_layer_position=8, eps=1e-4,
                n_stats=51)


# The configs of the converted TF-Hub modules (pytorch-pretrained-biggan's convert script):
# 10, 12 and 14 blocks in (keep, upsample) pairs over the listed channel multipliers
RELEASED_CONFIGS: dict[str, dict[str, Any]] = {
    "biggan-deep-128": _released(128, [16, 16, 8, 4, 2, 1]),
    "biggan-deep-256": _released(256, [16, 16, 8, 8, 4, 2, 1]),
    "biggan-deep-512": _released(512, [16, 16, 8, 8, 4, 2, 1, 1]),
}


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError(f"BigGAN-deep config: {name} must be a positive integer, got {v!r}")
    return v


@dataclass(frozen=True)
class BigGANDeepConfig:
    """The fields of pytorch-pretrained-biggan's ``config.json`` (defaults: biggan-deep-128) plus
    ``img_channels`` (ours: the reference always keeps 3 of conv_to_rgb's ch outputs).
    ``layers``: per block ``(upsample, in_mult, out_mult)``, channels = mult · channel_width;
    ``attention_layer_position``: self-attention before that block (len(layers): none).
    ``class_embed_dim`` is recorded but the reference's embedding is z_dim wide, so it must equal
    z_dim. Raises ValueError naming the field for an inconsistent configuration."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: tuple[tuple[bool, int, int], ...] = tuple(
        tuple(b) for b in RELEASED_CONFIGS["biggan-deep-128"]["layers"])
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51
    img_channels: int = 3

    def __post_init__(self) -> None:
        for name in ("output_dim", "z_dim", "class_embed_dim", "channel_width", "num_classes",
                     "img_channels"):
            _positive_int(name, getattr(self, name))
        if self.class_embed_dim != self.z_dim:
            raise ValueError(f"BigGAN-deep config: class_embed_dim ({self.class_embed_dim}) must "
                             f"equal z_dim ({self.z_dim}): the class embedding is z_dim wide")
        n = self.n_stats
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"BigGAN-deep config: n_stats must be an integer >= 2, got {n!r}")
        if (isinstance(self.eps, bool) or not isinstance(self.eps, (int, float))
                or not (math.isfinite(self.eps) and self.eps > 0)):
            raise ValueError(f"BigGAN-deep config: eps must be a finite positive number, got "
                             f"{self.eps!r}")
        object.__setattr__(self, "eps", float(self.eps))
        object.__setattr__(self, "layers", self._checked_layers(self.layers))
        pos = self.attention_layer_position
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos <= len(self.layers):
            raise ValueError(f"BigGAN-deep config: attention_layer_position must be an integer in "
                             f"[0, {len(self.layers)}] (len(layers): no attention), got {pos!r}")
        ch = self.channel_width
        if pos < len(self.layers) and ch * self.layers[pos][1] < 8:
            raise ValueError(f"BigGAN-deep config: attention needs >= 8 channels, block {pos} has "
                             f"{ch * self.layers[pos][1]}")
        if self.img_channels > ch:
            raise ValueError(f"BigGAN-deep config: img_channels ({self.img_channels}) cannot "
                             f"exceed channel_width ({ch}), conv_to_rgb's output channels")
        expected = 4 * 2 ** sum(up for up, _, _ in self.layers)
        if self.output_dim != expected:
            raise ValueError(f"BigGAN-deep config: output_dim {self.output_dim} does not match the "
                             f"layers, which make {expected}×{expected} images (4 × 2^upsamplings)")

    def _checked_layers(self, layers: Any) -> tuple[tuple[bool, int, int], ...]:
        if not isinstance(layers, (list, tuple)) or not layers:
            raise ValueError(f"BigGAN-deep config: layers must be a non-empty list of "
                             f"[upsample, in_mult, out_mult], got {layers!r}")
        out: list[tuple[bool, int, int]] = []
        for i, b in enumerate(layers):
            if (not isinstance(b, (list, tuple)) or len(b) != 3 or not isinstance(b[0], bool)
                    or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in b[1:])):
                raise ValueError(f"BigGAN-deep config: layers[{i}] must be [upsample (bool), "
                                 f"in_mult (int >= 1), out_mult (int >= 1)], got {b!r}")
            up, m_in, m_out = b
            if out and out[-1][2] != m_in:
                raise ValueError(f"BigGAN-deep config: layers[{i}] takes {m_in}·ch channels but "
                                 f"layers[{i - 1}] gives {out[-1][2]}·ch")
            if m_out != m_in and self.channel_width * m_out != self.channel_width * m_in // 2:
                raise ValueError(f"BigGAN-deep config: layers[{i}] maps {m_in} to {m_out}; a "
                                 "block keeps its channels or halves them (the skip drops half)")
            if self.channel_width * m_in < 4:
                raise ValueError(f"BigGAN-deep config: layers[{i}] has {self.channel_width * m_in}"
                                 " input channels; the bottleneck needs >= 4")
            out.append((up, m_in, m_out))
        if out[-1][2] != 1:
            raise ValueError(f"BigGAN-deep config: the last block must output channel_width "
                             f"channels (out_mult 1), got {out[-1][2]}")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able fields (layers as lists), as config.json writes them (+ img_channels)."""
        d = dataclasses.asdict(self)
        d["layers"] = [list(b) for b in self.layers]
        return d


def stats_weights(truncation: float, n_stats: int, rule: str = "reference"
                  ) -> list[tuple[int, float]]:
    """The stored batch-norm statistics a truncation uses: ``[(index, weight), ...]`` (one or two
    entries) into the ``n_stats`` values stored for truncations ``0, 1/(n_stats−1), …, 1``.
    ``rule`` "reference": pytorch-pretrained-biggan's ``modf(t / step)`` with reversed weights
    (module docstring); "linear": linear interpolation. Raises ValueError for a truncation
    outside (0, 1] or an unknown rule."""
    _check_truncation(truncation)
    if rule not in STATS_RULES:
        raise ValueError(f"unknown stats_rule {rule!r}; choose one of {list(STATS_RULES)}")
    if rule == "reference":
        step = 1.0 / (n_stats - 1)
        coef, start = math.modf(truncation / step)
        i = int(start)
        return [(i, 1.0)] if coef == 0.0 else [(i, coef), (i + 1, 1 - coef)]
    pos = truncation * (n_stats - 1)
    if abs(pos - round(pos)) < 1e-9:  # a grid value, whatever the float rounding
        return [(int(round(pos)), 1.0)]
    i = int(math.floor(pos))
    return [(i, 1 - (pos - i)), (i + 1, pos - i)]


def _check_truncation(t: Any) -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not (
            math.isfinite(t) and 0 < t <= 1):
        raise ValueError(f"truncation must be a number in (0, 1] (batch-norm statistics are "
                         f"stored for truncations in [0, 1]; the reference refuses 0), got {t!r}")
    return float(t)


def _check_input(name: str, x: Any, shape: str) -> None:
    """A floating tensor with finite values (values unchecked under torch.func)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        hint = " (class indices: pass G.one_hot(labels))" if name == "c" else ""
        raise TypeError(f"{name} must be floating point {shape}, got {x.dtype}{hint}")
    if not is_transformed(x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains {int((~torch.isfinite(x)).sum())} non-finite "
                         f"values (NaN/inf)")


# ---------------------------------------------------------------------------------------------
# Layers (attribute names are the reference's state-dict names)


class _Stats(nn.Module):
    """Holds the per-truncation statistics; ``mean_var(w)`` mixes them by ``stats_weights``."""

    def __init__(self, num_features: int, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, num_features))
        self.register_buffer("running_vars", torch.ones(n_stats, num_features))

    def mean_var(self, weights: list[tuple[int, float]]) -> tuple[Tensor, Tensor]:
        (i, a), rest = weights[0], weights[1:]
        if not rest:
            return self.running_means[i], self.running_vars[i]  # (C,), (C,)
        (j, b), = rest
        return (self.running_means[i] * a + self.running_means[j] * b,
                self.running_vars[i] * a + self.running_vars[j] * b)


class ConditionalBatchNorm(_Stats):
    """``(x − mean_t) / sqrt(var_t + eps) · (1 + scale(cond)) + offset(cond)``."""

    def __init__(self, num_features: int, cond_dim: int, n_stats: int, eps: float):
        super().__init__(num_features, n_stats, eps)
        self.scale = nn.Linear(cond_dim, num_features, bias=False)
        self.offset = nn.Linear(cond_dim, num_features, bias=False)

    def forward(self, x: Tensor, cond: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        mean, var = self.mean_var(weights)  # (C,)
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps)
        gain = 1 + self.scale(cond)[:, :, None, None]  # (B, C, 1, 1)
        return x * gain + self.offset(cond)[:, :, None, None]


class BatchNorm(_Stats):
    """The final, unconditional batch norm: learned ``weight`` and ``bias``."""

    def __init__(self, num_features: int, n_stats: int, eps: float):
        super().__init__(num_features, n_stats, eps)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        mean, var = self.mean_var(weights)  # (C,)
        x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + self.eps)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class SelfAttention(nn.Module):
    """SAGAN self-attention; keys and values on a 2× max-pooled grid."""

    def __init__(self, ch: int):
        super().__init__()
        self.snconv1x1_theta = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.snconv1x1_phi = nn.Conv2d(ch, ch // 8, 1, bias=False)
        self.snconv1x1_g = nn.Conv2d(ch, ch // 2, 1, bias=False)
        self.snconv1x1_o_conv = nn.Conv2d(ch // 2, ch, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        theta = self.snconv1x1_theta(x).reshape(B, C // 8, H * W)  # (B, C/8, HW)
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).reshape(B, C // 8, H * W // 4)
        attn = torch.softmax(theta.transpose(1, 2) @ phi, dim=-1)  # (B, HW, HW/4)
        g = F.max_pool2d(self.snconv1x1_g(x), 2).reshape(B, C // 2, H * W // 4)
        y = (g @ attn.transpose(1, 2)).reshape(B, C // 2, H, W)  # (B, C/2, H, W)
        return x + self.gamma * self.snconv1x1_o_conv(y)


class GenBlock(nn.Module):
    """The BigGAN-deep residual block (module docstring); upsampling is nearest-neighbour."""

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int, up: bool, n_stats: int,
                 eps: float):
        super().__init__()
        self.up, self.out_ch = up, out_ch
        mid = in_ch // 4
        bn = dict(cond_dim=cond_dim, n_stats=n_stats, eps=eps)
        self.bn_0 = ConditionalBatchNorm(in_ch, **bn)
        self.conv_0 = nn.Conv2d(in_ch, mid, 1)
        self.bn_1 = ConditionalBatchNorm(mid, **bn)
        self.conv_1 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn_2 = ConditionalBatchNorm(mid, **bn)
        self.conv_2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn_3 = ConditionalBatchNorm(mid, **bn)
        self.conv_3 = nn.Conv2d(mid, out_ch, 1)

    def forward(self, x: Tensor, cond: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, cond, weights)))  # (B, in/4, H, W)
        h = F.relu(self.bn_1(h, cond, weights))
        if self.up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")  # (B, in/4, 2H, 2W)
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, cond, weights)))
        h = self.conv_3(F.relu(self.bn_3(h, cond, weights)))  # (B, out, H', W')
        return h + x[:, :self.out_ch]  # out < in: the skip keeps the first out channels


class Generator(nn.Module):
    """cond ``[B, 2·z_dim]`` → images ``[B, img_channels, R, R]``."""

    def __init__(self, cfg: BigGANDeepConfig):
        super().__init__()
        ch, cond_dim = cfg.channel_width, 2 * cfg.z_dim
        self.ch0 = ch * cfg.layers[0][1]
        self.img_channels = cfg.img_channels
        self.gen_z = nn.Linear(cond_dim, 4 * 4 * self.ch0)
        layers: list[nn.Module] = []
        for i, (up, m_in, m_out) in enumerate(cfg.layers):
            if i == cfg.attention_layer_position:
                layers.append(SelfAttention(ch * m_in))
            layers.append(GenBlock(ch * m_in, ch * m_out, cond_dim, up, cfg.n_stats, cfg.eps))
        self.layers = nn.ModuleList(layers)
        self.bn = BatchNorm(ch, cfg.n_stats, cfg.eps)
        self.conv_to_rgb = nn.Conv2d(ch, ch, 3, padding=1)  # only img_channels outputs used

    def forward(self, cond: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        B = cond.shape[0]
        # the TF layout: gen_z's outputs are (4, 4, C) in NHWC order
        x = self.gen_z(cond).reshape(B, 4, 4, self.ch0).permute(0, 3, 1, 2)  # (B, C0, 4, 4)
        for layer in self.layers:
            x = layer(x, cond, weights) if isinstance(layer, GenBlock) else layer(x)
        x = F.relu(self.bn(x, weights))  # (B, ch, R, R)
        n = self.img_channels
        x = F.conv2d(x, self.conv_to_rgb.weight[:n], self.conv_to_rgb.bias[:n], padding=1)
        return torch.tanh(x)  # (B, img_channels, R, R)


# ---------------------------------------------------------------------------------------------
# The generator


class BigGANDeep(nn.Module):
    """BigGAN-deep generator with plain (spectral-norm-folded) weights (module docstring).

    ``G(z, c)`` → images ``[B, img_channels, R, R]`` in [-1, 1] for latents ``z [B, z_dim]`` and
    class vectors ``c [B, num_classes]`` (one-hot rows: ``G.one_hot(labels)``), using the
    batch-norm statistics of G's run option ``truncation`` (``with_options``). Built from the
    fields of a ``BigGANDeepConfig`` (keyword arguments, or ``config=``); ``z_dim``, ``c_dim``
    (= num_classes), ``img_resolution``, ``img_channels`` as for the other generators.
    """

    def __init__(self, config: BigGANDeepConfig | None = None, **kwargs: Any):
        super().__init__()
        if config is not None and kwargs:
            raise ValueError("pass either a BigGANDeepConfig or its fields as keywords, not both")
        if config is None:
            fields = {f.name for f in dataclasses.fields(BigGANDeepConfig)}
            unknown = sorted(set(kwargs) - fields)
            if unknown:
                raise ValueError(f"unknown BigGAN-deep config field(s) {unknown}; known: "
                                 f"{sorted(fields)}")
            config = BigGANDeepConfig(**kwargs)
        self.cfg = config
        self.z_dim: int = config.z_dim
        self.c_dim: int = config.num_classes
        self.img_resolution: int = config.output_dim
        self.img_channels: int = config.img_channels
        self.embeddings = nn.Linear(config.num_classes, config.z_dim, bias=False)
        self.generator = Generator(config)
        # run options: what a plain G(z, c) uses (set them with with_options)
        self.truncation: float = 1.0
        self.stats_rule: str = "reference"
        self.z_scale: float = 1.0

    # -- configuration and run options ---------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments (JSON-able): config.json's fields + img_channels;
        run options (truncation, stats_rule) are not part of it (``options()``)."""
        return self.cfg.to_dict()

    def options(self) -> dict[str, Any]:
        """The run options ``G(z, c)`` uses: ``truncation`` (selects the batch-norm statistics;
        does not scale z), ``stats_rule`` ("reference" or "linear") and ``z_scale`` (z is
        multiplied by it inside the forward pass; 0.9 in ``AUTHORS_RECIPE``). They enter
        ``models.fingerprint``, hence a bank's identity."""
        return dict(truncation=self.truncation, stats_rule=self.stats_rule, z_scale=self.z_scale)

    def with_options(self, **options: Any) -> "BigGANDeep":
        """A shallow copy of G sharing its parameters and buffers whose plain call ``G(z, c)``
        uses the given run options (``truncation`` in (0, 1]; ``stats_rule``: reference/linear;
        ``z_scale`` finite and positive, e.g. ``**AUTHORS_RECIPE``); the others stay as in G.
        Raises ValueError for an unknown option or a bad value."""
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown option(s) {unknown}; known: {sorted(self.options())}")
        merged = {**self.options(), **options}
        stats_weights(merged["truncation"], self.cfg.n_stats, merged["stats_rule"])  # checks
        scale = merged["z_scale"]
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (
                math.isfinite(scale) and scale > 0):
            raise ValueError(f"z_scale must be a finite positive number, got {scale!r}")
        G = copy.copy(self)
        G.__dict__.update(truncation=float(merged["truncation"]), stats_rule=merged["stats_rule"],
                          z_scale=float(scale))
        return G

    def latent_law(self) -> TruncatedNormalLaw:
        """The law BigGAN-deep's candidates are drawn from: a normal truncated to [−2, 2] scaled
        by the run option ``truncation`` (``truncation · truncnorm(−2, 2)``, as the reference's
        ``truncated_noise_sample`` and the authors' baseline draw it); ``latent.spec_of`` asks
        for it, so a model built or trained here has it without a loader."""
        return TruncatedNormalLaw(bound=2.0, scale=float(self.truncation))

    def one_hot(self, labels: Tensor | list[int] | int) -> Tensor:
        """One-hot class vectors ``[B, num_classes]`` in G's dtype and device for integer
        ``labels`` (``[B]``, a list, or one int → ``[1, num_classes]``). Raises ValueError for a
        label outside [0, num_classes) and TypeError for non-integer labels."""
        t = torch.as_tensor([labels] if isinstance(labels, int) else labels)
        if t.is_floating_point() or t.dtype == torch.bool or t.ndim != 1:
            raise TypeError(f"labels must be integers of shape [B], got {t.dtype} "
                            f"{tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.c_dim):
            raise ValueError(f"labels must be in [0, {self.c_dim}), got min {int(t.min())}, "
                             f"max {int(t.max())}")
        w = self.embeddings.weight
        return F.one_hot(t.long(), self.c_dim).to(w.device, w.dtype)

    # -- the forward pass ----------------------------------------------------------------------

    def _inputs(self, z: Any, c: Any) -> tuple[Tensor, Tensor, bool]:
        zs, cs = f"[B, z_dim={self.z_dim}]", f"[B, num_classes={self.c_dim}]"
        if c is None:
            raise ValueError(f"BigGAN-deep is class-conditional: pass c {cs} (one-hot rows: "
                             "G.one_hot(labels)) with z")
        _check_input("z", z, zs)
        _check_input("c", c, cs)
        single = z.ndim == 1
        if single:
            if z.shape != (self.z_dim,) or c.shape != (self.c_dim,):
                raise ValueError(f"a single sample needs z [{self.z_dim}] and c [{self.c_dim}], "
                                 f"got z {tuple(z.shape)} and c {tuple(c.shape)}")
            z, c = z[None], c[None]
        if z.ndim != 2 or z.shape[1] != self.z_dim or z.shape[0] == 0:
            raise ValueError(f"z must have shape {zs} with B >= 1, got {tuple(z.shape)}")
        if c.ndim != 2 or c.shape != (z.shape[0], self.c_dim):
            raise ValueError(f"c must have shape [B={z.shape[0]}, num_classes={self.c_dim}] "
                             f"(one row per z), got {tuple(c.shape)}")
        dtype = self.embeddings.weight.dtype
        return z.to(dtype), c.to(dtype), single

    def forward(self, z: Tensor, c: Tensor | None = None, *, truncation: float | None = None
                ) -> Tensor:
        """Images ``[B, img_channels, R, R]`` in [-1, 1] of latents ``z [B, z_dim]`` and class
        vectors ``c [B, num_classes]`` (a single ``z [z_dim]``, ``c [num_classes]`` gives
        ``[img_channels, R, R]``). ``truncation`` (None: G's run option, default 1) selects the
        batch-norm statistics only; z is used as given, times G's run option ``z_scale``
        (default 1). Raises TypeError/ValueError for a
        missing c, a wrong type, dtype or shape of z or c, non-finite values, or a truncation
        outside (0, 1]."""
        t = self.truncation if truncation is None else truncation
        weights = stats_weights(t, self.cfg.n_stats, self.stats_rule)
        z, c, single = self._inputs(z, c)
        if self.z_scale != 1.0:
            z = z * self.z_scale  # the authors' recipe: G(0.9 z, c)
        cond = torch.cat([z, self.embeddings(c)], dim=1)  # (B, 2·z_dim)
        img = self.generator(cond, weights)
        return img[0] if single else img
