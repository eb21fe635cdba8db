"""Training BigGAN-deep: the train-mode twin of our eval-only ``BigGANDeep``, its projection
discriminator, standing statistics, and the export into ``BigGANDeep``'s state layout.

``BigGANDeep`` is what a trained BigGAN-deep is at run time: folded spectral-norm weights and
batch-norm statistics stored per truncation. Training needs the other half (Brock et al. 2019):

- **live spectral normalisation**: every linear and convolution layer but the class embedding
  is ``W / σ(W)`` with σ from one power iteration per forward pass in train mode
  (``torch.nn.utils.parametrizations.spectral_norm``, whose eval-mode weight is
  ``W / (u · W v)`` with the stored u, v: the reference's convention);
- **batch statistics**: in train mode each (conditional) batch norm normalises with the batch's
  mean and biased variance over (B, H, W); in eval mode it uses the stored statistics of the
  requested truncation, exactly as ``BigGANDeep`` does;
- **standing statistics** (``standing_statistics``): for each of the ``n_stats`` truncations
  ``t = 0, 1/(n_stats − 1), …, 1`` the trained generator runs with batch statistics on
  ``z ~ t · truncnorm(−2, 2)`` (classes balanced) and each batch norm stores the mean and
  variance of its inputs over all those samples — BigGAN's "standing statistics", one set per
  truncation as the released files hold them.

``TrainableBigGANDeep`` is a ``BigGANDeep`` (same config, same module names, same forward and
run options) whose batch norms are ``TrainableConditionalBatchNorm``/``TrainableBatchNorm`` and
whose layers are spectrally normalised; ``export`` folds σ into the weights and returns the
eval-only model (any ``BigGANDeep`` subclass, e.g. ``FmnistBigGAN``) whose outputs equal the
twin's eval-mode outputs. ``ProjectionDiscriminator`` is the BigGAN discriminator (residual
blocks, spectral norm everywhere, sum pooling, a linear output plus the projection of a class
embedding; Miyato & Koyama 2018) for small one- or three-channel images; ``d_hinge_loss`` is
BigGAN's discriminator loss (the generator's is ``−mean(D(G(z), c))``).
"""
from __future__ import annotations

from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from ..latent import TruncatedNormalLaw
from .biggan import BatchNorm, BigGANDeep, BigGANDeepConfig, ConditionalBatchNorm

__all__ = ["DBlock", "ProjectionDiscriminator", "TrainableBatchNorm", "TrainableBigGANDeep",
           "TrainableConditionalBatchNorm", "d_hinge_loss", "export", "orthogonal_init",
           "power_iterate", "sn_sigma", "standing_statistics", "truncation_grid"]


def orthogonal_init(module: nn.Module) -> None:
    """BigGAN's initialisation, in place: every linear and convolution weight of ``module``
    orthogonal, every such bias zero (call under ``torch.no_grad()``)."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(m.weight)
            if m.bias is not None:
                m.bias.zero_()


# ---------------------------------------------------------------------------------------------
# Batch norms with batch statistics in train mode


class _BatchStatistics:
    """Train-mode normalisation with the batch's statistics, and a tally of them while standing
    statistics are taken."""

    tally: list[Tensor] | None = None  # [count, Σx, Σx²] per channel (float64) when tallying

    def batch_normalised(self, x: Tensor) -> Tensor:
        """``(x − mean) / sqrt(var + eps)`` with the mean and biased variance of ``x [B, C, H,
        W]`` over (B, H, W) (``F.batch_norm`` in training mode, one fused pass)."""
        if self.tally is not None:  # pooled over batches exactly: Σ n·mean, Σ n·(var + mean²)
            var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), unbiased=False)  # (C,)
            n = x.shape[0] * x.shape[2] * x.shape[3]
            self.tally[0] += n
            self.tally[1] += n * mean.double()
            self.tally[2] += n * (var.double() + mean.double().square())
        return F.batch_norm(x, None, None, training=True, eps=self.eps)  # (B, C, H, W)


class TrainableConditionalBatchNorm(_BatchStatistics, ConditionalBatchNorm):
    """``ConditionalBatchNorm`` that normalises with the batch's statistics in train mode."""

    def forward(self, x: Tensor, cond: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        if not self.training:
            return super().forward(x, cond, weights)
        x = self.batch_normalised(x)
        gain = 1 + self.scale(cond)[:, :, None, None]  # (B, C, 1, 1)
        return x * gain + self.offset(cond)[:, :, None, None]


class TrainableBatchNorm(_BatchStatistics, BatchNorm):
    """The final ``BatchNorm`` with the batch's statistics in train mode."""

    def forward(self, x: Tensor, weights: list[tuple[int, float]]) -> Tensor:
        if not self.training:
            return super().forward(x, weights)
        x = self.batch_normalised(x)
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def _batch_norms(model: nn.Module) -> list[_BatchStatistics]:
    return [m for m in model.modules() if isinstance(m, _BatchStatistics)]


def _sn_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, m in model.named_modules():
        if parametrize.is_parametrized(m, "weight"):
            yield name, m


# ---------------------------------------------------------------------------------------------
# The generator twin


class TrainableBigGANDeep(BigGANDeep):
    """``BigGANDeep`` for training (module docstring): batch norms on batch statistics in train
    mode, spectral norm on every linear/conv layer but the class embedding. Initialisation:
    orthogonal weights (BigGAN's), zero biases, the class embedding N(0, 1) (so a class weighs
    as much as z, which is N(0, I), in every conditional batch norm from the start), and the
    unused output channels of ``conv_to_rgb`` (all but ``img_channels``) zero, so they never
    enter its σ. Built from the global RNG (seed it). ``export()`` gives the eval-only model."""

    def __init__(self, config: BigGANDeepConfig | None = None, **kwargs: Any):
        super().__init__(config, **kwargs)
        for parent in list(self.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is ConditionalBatchNorm:
                    twin = TrainableConditionalBatchNorm(child.running_means.shape[1],
                                                         child.scale.in_features,
                                                         self.cfg.n_stats, child.eps)
                    setattr(parent, name, twin)
                elif type(child) is BatchNorm:
                    setattr(parent, name, TrainableBatchNorm(child.running_means.shape[1],
                                                             self.cfg.n_stats, child.eps))
        with torch.no_grad():
            orthogonal_init(self)
            nn.init.normal_(self.embeddings.weight)
            rgb = self.generator.conv_to_rgb
            rgb.weight[self.img_channels:] = 0
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)) and m is not self.embeddings:
                spectral_norm(m)

    def export(self, cls: type[BigGANDeep] = BigGANDeep, **extra: Any) -> BigGANDeep:
        """The eval-only ``cls(config, **extra)`` (``BigGANDeep`` or a subclass such as
        ``FmnistBigGAN``) holding this model's weights with σ folded in (``W / (u · W v)`` with the
        current u, v) and its stored statistics; see ``export``."""
        return export(self, cls, **extra)


def sn_sigma(module: nn.Module) -> Tensor:
    """The σ a spectrally normalised ``module`` divides its weight by: ``u · (W v)`` with its
    stored u, v (0-d tensor). Raises ValueError for a module without spectral norm."""
    if not parametrize.is_parametrized(module, "weight"):
        raise ValueError(f"{type(module).__name__} has no spectral-norm parametrization")
    p = module.parametrizations.weight
    w = p.original.flatten(1)  # [out, in·k·k]
    sn = p[0]
    return torch.vdot(sn._u, w @ sn._v)


@torch.no_grad()
def power_iterate(model: nn.Module, n_iter: int) -> None:
    """Run ``n_iter`` power iterations on every spectrally normalised layer of ``model`` (its
    u, v move towards the top singular vectors of its current weights; nothing else changes),
    leaving each layer in the mode it was in."""
    for _, m in _sn_modules(model):
        was = m.training
        m.train()
        for _ in range(n_iter):
            m.weight  # noqa: B018 - train-mode access = one power iteration
        m.train(was)


def truncation_grid(n_stats: int) -> list[float]:
    """The truncations the stored statistics belong to: ``i / (n_stats − 1)``, i = 0 … n_stats−1
    (0, 0.02, …, 1 for the released 51)."""
    return [i / (n_stats - 1) for i in range(n_stats)]


@torch.no_grad()
def standing_statistics(G: TrainableBigGANDeep, *, n_samples: int = 2000,
                        batch_size: int = 500, seed: int = 0,
                        indices: list[int] | None = None) -> None:
    """Fill G's stored statistics ``running_means``/``running_vars [n_stats, C]`` (module
    docstring): for each index i (``indices``, default all) G runs with batch statistics, and
    spectral norm frozen, on ``n_samples`` latents ``z ~ t_i · truncnorm(−2, 2)`` (``t_i =
    i / (n_stats − 1)``; z = 0 at t = 0) with balanced classes (``arange(n) % num_classes``),
    in batches of ``batch_size``, drawn from ``torch.Generator().manual_seed(seed + i)``; each
    batch norm stores the mean and (biased) variance of its inputs over all of them. G's mode
    is restored. Raises ValueError for an index outside [0, n_stats)."""
    n_stats = G.cfg.n_stats
    indices = list(range(n_stats)) if indices is None else list(indices)
    if any(not 0 <= i < n_stats for i in indices):
        raise ValueError(f"indices must lie in [0, {n_stats}), got {indices}")
    was = G.training
    bns = _batch_norms(G)
    dtype = G.embeddings.weight.dtype
    G.eval()
    for m in bns:
        m.train()  # batch statistics; spectral norm stays in eval mode (no power iteration)
    try:
        labels = torch.arange(n_samples) % G.c_dim  # [n]
        for i in indices:
            t = truncation_grid(n_stats)[i]
            for m in bns:
                m.tally = [0, torch.zeros(m.running_means.shape[1], dtype=torch.float64),
                           torch.zeros(m.running_means.shape[1], dtype=torch.float64)]
            rng = torch.Generator().manual_seed(int(seed) + i)
            if t > 0:
                z = TruncatedNormalLaw(2.0, t).sample(n_samples, G.z_dim, rng=rng, dtype=dtype)
            else:
                z = torch.zeros(n_samples, G.z_dim, dtype=dtype)
            for zb, yb in zip(z.split(batch_size), labels.split(batch_size)):
                G(zb, G.one_hot(yb))
            for m in bns:
                count, s1, s2 = m.tally
                mean = s1 / count
                m.running_means[i] = mean.to(dtype)
                m.running_vars[i] = (s2 / count - mean.square()).clamp_min(0).to(dtype)
    finally:
        for m in bns:
            m.tally = None
        G.train(was)


@torch.no_grad()
def export(G: TrainableBigGANDeep, cls: type[BigGANDeep] = BigGANDeep,
           **extra: Any) -> BigGANDeep:
    """The eval-only ``cls(G.cfg, **extra)`` with G's weights, spectral norm folded in
    (``weight = W / (u · W v)``, G's eval-mode weight) and G's stored statistics, loaded
    strictly: its ``forward`` equals G's eval-mode forward. Take ``standing_statistics`` (and a
    few ``power_iterate`` steps) first. Returned in eval mode with frozen parameters."""
    state: dict[str, Tensor] = {}
    folded = {}
    was = G.training
    G.eval()
    for name, m in _sn_modules(G):
        folded[name] = m.weight.detach().clone()  # eval mode: W / (u · W v)
    G.train(was)
    for key, value in G.state_dict().items():
        if ".parametrizations.weight." in key:
            continue
        state[key] = value.detach().clone()
    for name, w in folded.items():
        state[f"{name}.weight"] = w
    model = cls(G.cfg, **extra).to(G.embeddings.weight.dtype)
    model.load_state_dict(state, strict=True)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# The discriminator


class DBlock(nn.Module):
    """BigGAN's discriminator block: ``[relu] → conv3×3 → relu → conv3×3 → [avg-pool 2]`` plus a
    1×1 shortcut (pooled after the conv when pre-activated, before it otherwise)."""

    def __init__(self, c_in: int, c_out: int, down: bool, preactivation: bool):
        super().__init__()
        self.down, self.preactivation = down, preactivation
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.conv_sc = nn.Conv2d(c_in, c_out, 1) if (c_in != c_out or down) else None

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(x) if self.preactivation else x
        h = self.conv2(F.relu(self.conv1(h)))
        if self.down:
            h = F.avg_pool2d(h, 2)
        sc = x
        if self.conv_sc is not None:
            if self.preactivation:
                sc = self.conv_sc(sc)
                sc = F.avg_pool2d(sc, 2) if self.down else sc
            else:
                sc = F.avg_pool2d(sc, 2) if self.down else sc
                sc = self.conv_sc(sc)
        return h + sc


class ProjectionDiscriminator(nn.Module):
    """BigGAN's projection discriminator for ``[B, img_channels, R, R]`` images and one-hot
    classes ``[B, num_classes]`` → logits ``[B]``: residual ``DBlock``s with channels
    ``channel_width · (1, 2, 4, 4)`` (the first three halve the resolution, so R = 32 ends at
    4×4), ReLU, sum pooling to ``h [B, 4·ch]``, then ``linear(h) + ⟨embed(c), h⟩``. Every layer
    (the class embedding too) is spectrally normalised; weights orthogonal, biases zero (global
    RNG). Raises ValueError for a resolution that is not a multiple of 8."""

    def __init__(self, img_channels: int = 1, resolution: int = 32, channel_width: int = 32,
                 num_classes: int = 10):
        super().__init__()
        if resolution % 8 or resolution < 8:
            raise ValueError(f"resolution must be a multiple of 8, got {resolution}")
        self.kwargs = dict(img_channels=img_channels, resolution=resolution,
                           channel_width=channel_width, num_classes=num_classes)
        ch = channel_width
        widths = [img_channels, ch, 2 * ch, 4 * ch, 4 * ch]
        self.blocks = nn.ModuleList(
            DBlock(widths[i], widths[i + 1], down=i < 3, preactivation=i > 0) for i in range(4))
        self.linear = nn.Linear(4 * ch, 1)
        self.embed = nn.Linear(num_classes, 4 * ch, bias=False)
        with torch.no_grad():
            orthogonal_init(self)
        for m in list(self.modules()):
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                spectral_norm(m)

    def config(self) -> dict[str, Any]:
        """The constructor keyword arguments."""
        return dict(self.kwargs)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        h = x
        for block in self.blocks:
            h = block(h)  # (B, C', R', R')
        h = F.relu(h).sum(dim=(2, 3))  # (B, 4·ch)
        return self.linear(h)[:, 0] + (self.embed(c) * h).sum(dim=1)  # (B,)


def d_hinge_loss(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """BigGAN's discriminator hinge loss ``mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))``;
    the generator's is ``−mean(D(G(z)))``."""
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
