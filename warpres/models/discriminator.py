"""StyleGAN2 discriminator (resnet architecture, config-f) with the NVlabs parameter layout.

Names follow NVlabs' stylegan2-ada-pytorch / stylegan3 `Discriminator` for c_dim=0, so a plain
`D` state dict from those checkpoints loads strictly (warpres.checkpoints.nvlabs): `b{R}.fromrgb.*` in the top block only,
`b{res}.conv0/conv1.{weight,bias}`, `b{res}.skip.weight` (no bias), a `resample_filter` buffer
on every block and every conv layer, and the 4x4 epilogue `b4.conv/fc/out` (its minibatch-stddev
layer has no tensors). Unconditional only: the loader refuses conditional (`c_dim > 0`) models.

Each block at resolution r (R down to 8) maps (B, C_r, r, r) to (B, C_{r/2}, r/2, r/2) as
`(skip(x) + conv1(conv0(x))) * sqrt(1/2)`; the epilogue appends the minibatch stddev, applies a
3x3 conv, a fully connected layer and the output layer, giving one logit per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.config import JsonConfig
from warpres.models.resample import BINOMIAL_TAPS, setup_filter, upfirdn2d
from warpres.models.stylegan2 import FullyConnectedLayer, _bias_lrelu, channel_plan

_RESNET_GAIN = math.sqrt(0.5)


@dataclass(frozen=True)
class DiscriminatorConfig(JsonConfig):
    """Everything that fixes a discriminator's tensor shapes and math.

    channels[i] is the width at resolution 4 * 2**i (NVlabs' `min(channel_base // res, channel_max)`);
    left empty it is derived from channel_base and channel_max. mbstd_group_size None means the
    whole minibatch. c_dim must be 0: only unconditional discriminators are supported.
    """

    resolution: int = 1024
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    channels: tuple[int, ...] = ()
    mbstd_group_size: int | None = 4
    mbstd_num_channels: int = 1
    conv_clamp: float | None = 256.0
    c_dim: int = 0

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution) if self.resolution > 0 else 0.0
        if self.resolution < 8 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if self.c_dim != 0:
            raise ValueError(f"only unconditional discriminators (c_dim=0) are supported, got c_dim={self.c_dim}")
        if self.mbstd_group_size is not None and self.mbstd_group_size < 1:
            raise ValueError(f"mbstd_group_size must be >= 1 or None, got {self.mbstd_group_size}")
        if self.mbstd_num_channels < 0:
            raise ValueError(f"mbstd_num_channels must be >= 0, got {self.mbstd_num_channels}")
        channels = tuple(int(c) for c in self.channels) or channel_plan(
            self.resolution, self.channel_base, self.channel_max)
        if len(channels) != int(log2) - 1:
            raise ValueError(f"channels must list one width per resolution from 4 to {self.resolution} "
                             f"({int(log2) - 1} values), got {len(channels)}")
        if self.mbstd_num_channels and channels[0] % self.mbstd_num_channels:
            raise ValueError(f"the 4x4 width {channels[0]} must be divisible by "
                             f"mbstd_num_channels={self.mbstd_num_channels}")
        object.__setattr__(self, "channels", channels)

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        """Resolutions of the downsampling blocks, top first: (R, R/2, ..., 8)."""
        return tuple(2**k for k in range(int(math.log2(self.resolution)), 2, -1))

    def channels_at(self, resolution: int) -> int:
        return self.channels[int(math.log2(resolution)) - 2]


class DiscriminatorConv(nn.Module):
    """Equalized-lr KxK conv with optional FIR 2x downsampling, bias, activation and clamp.

    Downsampling follows NVlabs' conv2d_resample: filter with [1,3,3,1] (padded so the grid stays
    aligned) then a stride-2 conv, or for 1x1 kernels filter-and-decimate first, then the conv.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True,
                 activation: str = "lrelu", down: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unsupported activation {activation!r}")
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.kernel_size = kernel_size
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", setup_filter(BINOMIAL_TAPS))

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = (self.weight * self.weight_gain).to(x.dtype)
        pad = self.kernel_size // 2
        if self.down == 1:
            x = F.conv2d(x, weight, padding=pad)
        else:
            taps = self.resample_filter.shape[-1]
            before = pad + (taps - self.down + 1) // 2
            after = pad + (taps - self.down) // 2
            padding = (before, after, before, after)
            if self.kernel_size == 1:
                x = F.conv2d(upfirdn2d(x, self.resample_filter, down=self.down, padding=padding), weight)
            else:
                x = F.conv2d(upfirdn2d(x, self.resample_filter, padding=padding), weight, stride=self.down)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        if self.activation == "lrelu":
            bias = self.bias if self.bias is not None else torch.zeros_like(weight[:, 0, 0, 0])
            x = _bias_lrelu(x, bias.to(x.dtype), None)
        elif self.bias is not None:
            x = x + self.bias.to(x.dtype)[None, :, None, None]
        if gain != 1.0:
            x = x * gain
        return x if clamp is None else x.clamp(-clamp, clamp)


class DiscriminatorBlock(nn.Module):
    """Resnet block at `resolution`: (B, C, r, r) -> (B, C_out, r/2, r/2); the top block reads RGB."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, *, img_channels: int,
                 first: bool, conv_clamp: float | None) -> None:
        super().__init__()
        self.resolution = resolution
        self.in_channels = in_channels
        self.first = first
        self.register_buffer("resample_filter", setup_filter(BINOMIAL_TAPS))
        if first:
            self.fromrgb = DiscriminatorConv(img_channels, in_channels, 1, conv_clamp=conv_clamp)
        self.conv0 = DiscriminatorConv(in_channels, in_channels, 3, conv_clamp=conv_clamp)
        self.conv1 = DiscriminatorConv(in_channels, out_channels, 3, down=2, conv_clamp=conv_clamp)
        self.skip = DiscriminatorConv(in_channels, out_channels, 1, bias=False, activation="linear", down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.first:
            x = self.fromrgb(img)
        assert x is not None
        y = self.skip(x, gain=_RESNET_GAIN)
        x = self.conv1(self.conv0(x), gain=_RESNET_GAIN)
        return y + x


def minibatch_std(x: torch.Tensor, group_size: int | None, num_channels: int = 1) -> torch.Tensor:
    """Append `num_channels` maps of the feature stddev within groups of the minibatch.

    As in NVlabs: the group size is min(group_size, N) (N when None), sample i belongs to group
    i mod (N / G), so N must be divisible by that group size.
    """
    n, c, h, w = x.shape
    groups = n if group_size is None else min(group_size, n)
    if n % groups:
        raise ValueError(f"minibatch-stddev: batch size {n} is not divisible by the group size {groups} "
                         f"(min(mbstd_group_size={group_size}, batch))")
    y = x.reshape(groups, -1, num_channels, c // num_channels, h, w).float()  # 1e-8 vanishes in fp16
    y = y - y.mean(dim=0)
    y = (y.square().mean(dim=0) + 1e-8).sqrt()
    y = y.mean(dim=[2, 3, 4]).reshape(-1, num_channels, 1, 1)
    y = y.repeat(groups, 1, h, w).to(x.dtype)
    return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: minibatch stddev, 3x3 conv, fully connected layer, output logit."""

    def __init__(self, channels: int, *, mbstd_group_size: int | None, mbstd_num_channels: int,
                 conv_clamp: float | None) -> None:
        super().__init__()
        self.mbstd_group_size = mbstd_group_size
        self.mbstd_num_channels = mbstd_num_channels
        self.conv = DiscriminatorConv(channels + mbstd_num_channels, channels, 3, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(channels * 4 * 4, channels, activation="lrelu")
        self.out = FullyConnectedLayer(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd_num_channels > 0:
            x = minibatch_std(x, self.mbstd_group_size, self.mbstd_num_channels)
        x = self.conv(x)
        return self.out(self.fc(x.flatten(1)))


class Discriminator(nn.Module):
    """Images (B, C, R, R) in [-1, 1] -> real/fake logits (B, 1); unconditional."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        for res in config.block_resolutions:
            block = DiscriminatorBlock(config.channels_at(res), config.channels_at(res // 2), res,
                                       img_channels=config.img_channels, first=res == config.resolution,
                                       conv_clamp=config.conv_clamp)
            self.add_module(f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(config.channels_at(4), mbstd_group_size=config.mbstd_group_size,
                                        mbstd_num_channels=config.mbstd_num_channels,
                                        conv_clamp=config.conv_clamp)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        expected = (cfg.img_channels, cfg.resolution, cfg.resolution)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images of shape (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(images.shape)}")
        x = None
        for res in cfg.block_resolutions:
            x = getattr(self, f"b{res}")(x, images)
        return self.b4(x)
