"""A StyleGAN2-style residual discriminator: the training partner of the embedded StyleGAN2.

Written from the published architecture (Karras et al. 2020, "Analyzing and Improving the Image
Quality of StyleGAN", Fig. 7 and Appendix B): a 1×1 ``fromrgb`` at the top resolution, one
residual block per resolution down to 8×8 (two 3×3 convs, the second halving the resolution, and
a 1×1 skip, summed with gain 1/√2), then a 4×4 epilogue (minibatch standard deviation, a 3×3
conv, a fully connected layer and the 1-logit output). Every weight uses the equalised learning
rate (stored N(0, 1), scaled by 1/√fan_in at run time); activations are leaky ReLU 0.2 × √2.
Downsampling is a 2×2 average pool (the paper blurs with [1, 3, 3, 1] first; at 32×32 the
difference is immaterial for a training partner, which is never shipped or differentiated by
MaGNET).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_GAIN = math.sqrt(2)


class _EqualConv(nn.Module):
    """Conv2d with the equalised learning rate (weight ~ N(0, 1) scaled by 1/√fan_in)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(c_out)) if bias else None
        self.scale, self.padding = 1 / math.sqrt(c_in * kernel * kernel), kernel // 2

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class _EqualLinear(nn.Module):
    """Linear layer with the equalised learning rate."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))
        self.scale = 1 / math.sqrt(c_in)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * _GAIN


class _Block(nn.Module):
    """Residual block: (conv3×3 · lrelu · conv3×3 · lrelu · pool) + (pool · conv1×1), × 1/√2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv0, self.conv1 = _EqualConv(c_in, c_in, 3), _EqualConv(c_in, c_out, 3)
        self.skip = _EqualConv(c_in, c_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = F.avg_pool2d(self.skip(x), 2)                                   # [B, c_out, R/2, R/2]
        x = F.avg_pool2d(_lrelu(self.conv1(_lrelu(self.conv0(x)))), 2)     # [B, c_out, R/2, R/2]
        return (x + y) * math.sqrt(0.5)


class StyleGAN2Discriminator(nn.Module):
    """Images ``[B, img_channels, R, R]`` (R a power of 2, ≥ 8) → real/fake logits ``[B]``.

    Channels at resolution r are ``min(channel_base // r, channel_max)``, as in StyleGAN2's
    generator; ``mbstd_group`` is the minibatch-standard-deviation group size (the batch size must
    be divisible by it, or smaller than it)."""

    def __init__(self, img_resolution: int = 32, img_channels: int = 1, channel_base: int = 4096,
                 channel_max: int = 128, mbstd_group: int = 4) -> None:
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of 2 >= 8, got {img_resolution}")
        self._kwargs = dict(img_resolution=img_resolution, img_channels=img_channels,
                            channel_base=channel_base, channel_max=channel_max,
                            mbstd_group=mbstd_group)
        ch = lambda r: min(channel_base // r, channel_max)  # noqa: E731
        self.mbstd_group = mbstd_group
        self.fromrgb = _EqualConv(img_channels, ch(img_resolution), 1)
        res = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]  # R, R/2, ..., 8
        self.blocks = nn.ModuleList(_Block(ch(r), ch(r // 2)) for r in res)
        c4 = ch(4)
        self.conv = _EqualConv(c4 + 1, c4, 3)
        self.fc = _EqualLinear(c4 * 16, c4)
        self.out = _EqualLinear(c4, 1)

    def config(self) -> dict:
        """Constructor kwargs (recorded in the generator's training sidecar)."""
        return dict(self._kwargs)

    def _minibatch_std(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        G = min(self.mbstd_group, B)
        y = x.reshape(G, -1, C, H, W)                                       # [G, B/G, C, H, W]
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()              # [B/G, C, H, W]
        y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(G, 1, H, W)  # [B, 1, H, W]
        return torch.cat([x, y], dim=1)

    def forward(self, img: Tensor) -> Tensor:
        x = _lrelu(self.fromrgb(img))                                       # [B, C_R, R, R]
        for block in self.blocks:
            x = block(x)                                                    # ... [B, C_4, 4, 4]
        x = _lrelu(self.conv(self._minibatch_std(x)))                       # [B, C_4, 4, 4]
        x = _lrelu(self.fc(x.flatten(1)))                                   # [B, C_4]
        return self.out(x).squeeze(1)                                       # [B]
