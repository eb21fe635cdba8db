"""The embedded default models for Fashion-MNIST (28×28, one channel, pixels in [-1, 1]).

- ``FmnistDCGAN``: a small DCGAN generator in which *every* layer is piecewise affine (Linear,
  ConvTranspose2d, Conv2d, BatchNorm in eval mode, ReLU/LeakyReLU, Hardtanh, Unflatten), so the
  whole map z ↦ x is continuous piecewise affine and its Jacobian is exact per region — what
  MaGNET / polarity sampling and ``magnet_lab.spline`` need. Hardtanh (not tanh) bounds the output.
- ``FmnistDiscriminator``: its training partner (not piecewise-affine-constrained; never shipped).
- ``FmnistClassifier``: a small CNN whose penultimate 128-d features are the metric space
  (FID / precision-recall in classifier space) and whose logits are the class attribute.
- ``FmnistStyleGAN2`` and ``FmnistBigGAN``: our StyleGAN2 and our (class-conditional)
  BigGAN-deep synthesising 32×32 and cropped to 28×28.
"""
from __future__ import annotations

import torch
from torch import nn

from ..validation import check_int, check_latents
from .biggan import BigGANDeep, BigGANDeepConfig
from .stylegan2 import StyleGAN2Generator

# Module types allowed inside FmnistDCGAN.net: each is affine or piecewise affine (BatchNorm is
# affine in eval mode). Tests and the spline module can check a generator against this list.
PIECEWISE_AFFINE_MODULES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU,
    nn.LeakyReLU, nn.Hardtanh, nn.Unflatten, nn.Flatten, nn.Identity)


def _is_functorch_wrapped(x: torch.Tensor) -> bool:
    """True inside torch.func transforms (vmap/grad/jacrev), where value checks cannot run."""
    probe = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor", None)
    return bool(probe(x)) if probe is not None else False


class FmnistDCGAN(nn.Module):
    """DCGAN-like piecewise-affine generator z ``[B, z_dim]`` → images ``[B, 1, 28, 28]`` in [-1, 1].

    Layout: Linear(z_dim → C·7·7) · BN1d · act · Unflatten → ConvT(C → C/2, ↑14) · BN2d · act →
    ConvT(C/2 → C/4, ↑28) · BN2d · act → Conv2d(C/4 → 1, 3×3) · Hardtanh, with act = ReLU
    (``negative_slope=0``) or LeakyReLU. ``forward`` validates ``z`` first (outside torch.func
    transforms) and, under ``torch.func.vmap``, also takes a single latent ``[z_dim]`` and returns
    one image ``[1, 28, 28]``, so ``vmap(jacrev(G))(z)`` gives per-latent Jacobians
    ``[B, 1, 28, 28, z_dim]``. ``net`` is the unchecked batched module.
    """

    def __init__(self, z_dim: int = 32, channels: int = 96, negative_slope: float = 0.0) -> None:
        super().__init__()
        if z_dim < 1 or channels < 4 or channels % 4:
            raise ValueError(f"need z_dim >= 1 and channels a multiple of 4, got {z_dim}, {channels}")
        self.z_dim, self.channels, self.negative_slope = int(z_dim), int(channels), float(negative_slope)
        c = self.channels

        def act() -> nn.Module:
            return nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU()

        self.net = nn.Sequential(
            nn.Linear(z_dim, c * 7 * 7, bias=False), nn.BatchNorm1d(c * 7 * 7), act(),
            nn.Unflatten(-1, (c, 7, 7)),                                          # [B, C, 7, 7]
            nn.ConvTranspose2d(c, c // 2, 4, stride=2, padding=1, bias=False),    # [B, C/2, 14, 14]
            nn.BatchNorm2d(c // 2), act(),
            nn.ConvTranspose2d(c // 2, c // 4, 4, stride=2, padding=1, bias=False),  # [B, C/4, 28, 28]
            nn.BatchNorm2d(c // 4), act(),
            nn.Conv2d(c // 4, 1, 3, padding=1),                                   # [B, 1, 28, 28]
            nn.Hardtanh(-1.0, 1.0),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN initialisation: weights N(0, 0.02), BN scale N(1, 0.02), biases 0 (global RNG)."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def config(self) -> dict:
        """Constructor kwargs (what a checkpoint sidecar records)."""
        return {"z_dim": self.z_dim, "channels": self.channels, "negative_slope": self.negative_slope}

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 1, 28, 28]`` in [-1, 1] for latents ``z`` ``[B, z_dim]`` (checked: finite
        float of the model's dtype; TypeError/ValueError otherwise)."""
        wrapped = _is_functorch_wrapped(z)
        if wrapped:  # inside vmap/jacrev: value checks would need data-dependent control flow
            if z.ndim not in (1, 2) or z.shape[-1] != self.z_dim:
                raise ValueError(f"z must have shape [B, {self.z_dim}] (or [{self.z_dim}] under "
                                 f"vmap), got shape {tuple(z.shape)}")
        else:
            check_latents(z, self.z_dim)
        w = self.net[0].weight
        if z.dtype != w.dtype:
            raise TypeError(f"z has dtype {z.dtype} but the generator's weights are {w.dtype}; "
                            f"pass z.to({w.dtype}) or load the generator with dtype={z.dtype}")
        if z.ndim == 1:  # a single latent under torch.func.vmap -> one image [1, 28, 28]
            return self.net(z[None])[0]
        return self.net(z)


class FmnistDiscriminator(nn.Module):
    """DCGAN discriminator x ``[B, 1, 28, 28]`` in [-1, 1] → real/fake logits ``[B]``."""

    def __init__(self, channels: int = 48) -> None:
        super().__init__()
        c = int(channels)
        self.channels = c
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),                 # [B, c, 14, 14]
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c),
            nn.LeakyReLU(0.2),                                                          # [B, 2c, 7, 7]
            nn.Flatten(), nn.Linear(2 * c * 7 * 7, 1),
        )
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def config(self) -> dict:
        return {"channels": self.channels}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)  # [B]


def _check_images(x: torch.Tensor, name: str = "x") -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor [B, 1, 28, 28] in [-1, 1], got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != 4 or tuple(x.shape[1:]) != (1, 28, 28) or x.shape[0] == 0:
        raise ValueError(f"{name} must have shape [B, 1, 28, 28] with B >= 1, got {tuple(x.shape)}")


class FmnistClassifier(nn.Module):
    """Small CNN on Fashion-MNIST: x ``[B, 1, 28, 28]`` in [-1, 1] → logits ``[B, 10]``.

    Two conv blocks (Conv3×3 · BN · ReLU · MaxPool2) → Flatten → Linear(64·7·7 → ``feature_dim``)
    · ReLU (= ``features``) → Dropout → Linear(→ 10). ``features`` is the metric feature space.
    """

    def __init__(self, feature_dim: int = 128, n_classes: int = 10, dropout: float = 0.3) -> None:
        super().__init__()
        self.feature_dim, self.n_classes, self.dropout = int(feature_dim), int(n_classes), float(dropout)
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # [B, 32, 14, 14]
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # [B, 64, 7, 7]
            nn.Flatten(), nn.Linear(64 * 7 * 7, feature_dim), nn.ReLU(),                    # [B, F]
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, n_classes))

    def config(self) -> dict:
        return {"feature_dim": self.feature_dim, "n_classes": self.n_classes, "dropout": self.dropout}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features ``[B, feature_dim]`` (post-ReLU) of images in [-1, 1]."""
        _check_images(x)
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, n_classes]`` of images ``[B, 1, 28, 28]`` in [-1, 1]."""
        return self.head(self.features(x))


class FmnistStyleGAN2(StyleGAN2Generator):
    """The embedded StyleGAN2: our ``StyleGAN2Generator`` synthesising 32×32 one-channel images
    (Fashion-MNIST padded by 2 pixels of background), whose output is cropped back to
    ``[B, 1, 28, 28]`` so it lives in the same image space as the data, the classifier and the
    DCGAN. Unlike the DCGAN it is not piecewise affine in z (modulation multiplies activations
    by styles, and z is normalised), so its Jacobian varies continuously; the crop only selects
    rows of it. State-dict names are the official ones; ``synthesis``, ``mapping``,
    ``with_options``, ``truncate`` are inherited. ``G(ws)`` (3-D input) is cropped too.
    """

    def __init__(self, z_dim: int = 32, c_dim: int = 0, w_dim: int = 128, img_resolution: int = 32,
                 img_channels: int = 1, mapping_kwargs: dict | None = None,
                 synthesis_kwargs: dict | None = None, *, modulation: str = "shared",
                 crop: int = 2) -> None:
        super().__init__(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
                         synthesis_kwargs, modulation=modulation)
        check_int("crop", crop, low=0)
        if not 2 * crop < img_resolution:
            raise ValueError(f"crop must be in [0, img_resolution/2), got {crop!r}")
        self.crop = crop
        self._kwargs["crop"] = crop

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, **options) -> torch.Tensor:
        """``StyleGAN2Generator.forward`` cropped by ``crop`` pixels on each side:
        ``[B, 1, 28, 28]`` by default (``[1, 28, 28]`` for a single latent)."""
        img = super().forward(z, c, **options)  # [..., R, R]
        k = self.crop
        return img[..., k:img.shape[-2] - k, k:img.shape[-1] - k] if k else img


# The embedded BigGAN-deep's configuration: 32×32, one channel, 10 classes, z_dim 32, blocks in
# (keep, upsample) pairs over the channel multipliers 4, 4, 2, 1, self-attention at 16×16.
FMNIST_BIGGAN: dict = dict(
    output_dim=32, z_dim=32, class_embed_dim=32, channel_width=32, num_classes=10,
    layers=[[False, 4, 4], [True, 4, 4], [False, 4, 4], [True, 4, 2], [False, 2, 2],
            [True, 2, 1]],
    attention_layer_position=4, eps=1e-4, n_stats=51, img_channels=1)


class FmnistBigGAN(BigGANDeep):
    """The embedded class-conditional generator: our ``BigGANDeep`` synthesising 32×32
    one-channel images (Fashion-MNIST padded by 2 pixels of background) for the 10 classes,
    cropped back to ``[B, 1, 28, 28]`` like ``FmnistStyleGAN2``. Config fields default to
    ``FMNIST_BIGGAN``; state-dict names, ``with_options`` (truncation), ``one_hot`` and the
    latent law (``truncation · truncnorm(−2, 2)``) are BigGAN-deep's. Raises ValueError as
    ``BigGANDeepConfig`` does, and for a crop outside [0, output_dim/2)."""

    def __init__(self, config: BigGANDeepConfig | None = None, *, crop: int = 2,
                 **kwargs) -> None:
        if config is None:
            config = BigGANDeepConfig(**{**FMNIST_BIGGAN, **kwargs})
        elif kwargs:
            raise ValueError("pass either a BigGANDeepConfig or its fields as keywords, not both")
        super().__init__(config)
        check_int("crop", crop, low=0)
        if not 2 * crop < config.output_dim:
            raise ValueError(f"crop must be in [0, output_dim/2), got {crop!r}")
        self.crop = crop

    def config(self) -> dict:
        """``BigGANDeep.config()`` plus ``crop``: the constructor keyword arguments."""
        return {**super().config(), "crop": self.crop}

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, **options) -> torch.Tensor:
        """``BigGANDeep.forward`` cropped by ``crop`` pixels on each side: ``[B, 1, 28, 28]``
        by default (``[1, 28, 28]`` for a single latent)."""
        img = super().forward(z, c, **options)  # [..., R, R]
        k = self.crop
        return img[..., k:img.shape[-2] - k, k:img.shape[-1] - k] if k else img
