"""StyleGAN2 generator (config-f family) with the NVlabs parameter layout.

Parameter and buffer names follow NVlabs' PyTorch StyleGAN2 (`mapping.fc0.weight`,
`synthesis.b64.conv0.affine.bias`, `synthesis.b64.conv1.noise_const`, ...), the layout StyleRes
ships, so those state dicts load strictly; other layouts are converted by `warpres.checkpoints`.

The synthesis splits at the embedding resolution E, where StyleRes and WarpRes inject residual
features (ARCHITECTURE §1): `head` runs up to and including conv0 of block E, `tail` runs from
an injected feature at E to the image, and `tail(head(ws)) == forward(ws)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.config import JsonConfig
from warpres.models.modulated_conv import modulated_conv2d
from warpres.models.resample import BINOMIAL_TAPS, setup_filter, upsample2d

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def channel_plan(resolution: int, channel_base: int = 32768, channel_max: int = 512) -> tuple[int, ...]:
    """Channels per block from 4x4 up to `resolution`, as NVlabs' `min(base // res, max)`."""
    return tuple(min(channel_base // (2**k), channel_max) for k in range(2, int(math.log2(resolution)) + 1))


@dataclass(frozen=True)
class GeneratorConfig(JsonConfig):
    """Everything that fixes a generator's tensor shapes and math; serialised as JSON with weights.

    channels[i] is the width of the block at resolution 4 * 2**i. conv_clamp clamps every
    convolution output (StyleRes and stylegan2-ada models use 256; TF-converted and rosinality
    models use None). embed_res is E, the resolution where residual features are injected.
    """

    resolution: int = 1024
    channels: tuple[int, ...] = field(default_factory=lambda: channel_plan(1024))
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    img_channels: int = 3
    conv_clamp: float | None = 256.0
    embed_res: int = 64

    def __post_init__(self) -> None:
        log2 = math.log2(self.resolution)
        if self.resolution < 8 or log2 != int(log2):
            raise ValueError(f"resolution must be a power of two >= 8, got {self.resolution}")
        if len(self.channels) != int(log2) - 1:
            raise ValueError(
                f"channels must list one width per block from 4 to {self.resolution} "
                f"({int(log2) - 1} values), got {len(self.channels)}"
            )
        if self.embed_res not in self.block_resolutions or self.embed_res < 16:
            raise ValueError(
                f"embed_res must be a block resolution >= 16 (taps at E/4 and E/2 are needed), "
                f"got {self.embed_res} for blocks {self.block_resolutions}"
            )
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))

    @property
    def block_resolutions(self) -> tuple[int, ...]:
        return tuple(2**k for k in range(2, int(math.log2(self.resolution)) + 1))

    @property
    def num_ws(self) -> int:
        """W+ layers: two per block (one for b4) plus the last block's toRGB."""
        return 2 * int(math.log2(self.resolution)) - 2

    def channels_at(self, resolution: int) -> int:
        return self.channels[int(math.log2(resolution)) - 2]


def first_w_index(resolution: int) -> int:
    """Index into W+ of the first latent a block consumes (b4: 0, b8: 1, b16: 3, b64: 7, ...)."""
    return 0 if resolution == 4 else 2 * int(math.log2(resolution)) - 5


def _bias_lrelu(x: torch.Tensor, bias: torch.Tensor, clamp: float | None) -> torch.Tensor:
    x = F.leaky_relu(x + bias[None, :, None, None], LRELU_SLOPE) * LRELU_GAIN
    return x if clamp is None else x.clamp(-clamp, clamp)


class FullyConnectedLayer(nn.Module):
    """Linear layer with equalized learning rate: weights stored / lr, scaled by lr / sqrt(fan_in)."""

    def __init__(self, in_features: int, out_features: int, *, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unsupported activation {activation!r}")
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        return x


class MappingNetwork(nn.Module):
    """z (B, z_dim) -> W+ (B, num_ws, w_dim), with truncation towards the tracked mean `w_avg`."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.num_ws = config.num_ws
        widths = [config.z_dim] + [config.w_dim] * config.mapping_layers
        for idx in range(config.mapping_layers):
            self.add_module(f"fc{idx}", FullyConnectedLayer(
                widths[idx], widths[idx + 1], activation="lrelu", lr_multiplier=config.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None) -> torch.Tensor:
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for layer in self.children():
            x = layer(x)
        ws = x[:, None, :].repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            truncated = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
            ws = torch.cat([truncated, ws[:, cutoff:]], dim=1)
        return ws


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally 2x up) + constant noise + bias + leaky ReLU * sqrt(2) + clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *,
                 up: int = 1, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.up = up
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(BINOMIAL_TAPS))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, padding=1,
                             resample_filter=self.resample_filter, fused=fused_modconv)
        x = x + self.noise_const * self.noise_strength
        return _bias_lrelu(x, self.bias, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation (its output is an image increment)."""

    def __init__(self, in_channels: int, img_channels: int, w_dim: int, *,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(img_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(img_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused_modconv)
        x = x + self.bias[None, :, None, None]
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture generator: [const |] conv0 (2x up), conv1, toRGB."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, config: GeneratorConfig) -> None:
        super().__init__()
        self.resolution = resolution
        self.w_index = first_w_index(resolution)
        self.register_buffer("resample_filter", setup_filter(BINOMIAL_TAPS))
        clamp = config.conv_clamp
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, config.w_dim, resolution, up=2, conv_clamp=clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, config.w_dim, resolution, conv_clamp=clamp)
        self.torgb = ToRGBLayer(out_channels, config.img_channels, config.w_dim, conv_clamp=clamp)

    @property
    def is_first(self) -> bool:
        return self.resolution == 4

    def w_conv0(self, ws: torch.Tensor) -> torch.Tensor:
        return ws[:, self.w_index]

    def w_conv1(self, ws: torch.Tensor) -> torch.Tensor:
        return ws[:, self.w_index + (0 if self.is_first else 1)]

    def w_torgb(self, ws: torch.Tensor) -> torch.Tensor:
        return ws[:, self.w_index + (1 if self.is_first else 2)]

    def up_conv(self, x: torch.Tensor | None, ws: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        """The block's entry: the learned constant for b4, else conv0 on the previous features."""
        if self.is_first:
            return self.const[None].repeat(ws.shape[0], 1, 1, 1)
        return self.conv0(x, self.w_conv0(ws), fused_modconv)

    def finish(self, x: torch.Tensor, img: torch.Tensor | None, ws: torch.Tensor,
               fused_modconv: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """conv1 and toRGB after the entry; adds to the upsampled running image."""
        x = self.conv1(x, self.w_conv1(ws), fused_modconv)
        y = self.torgb(x, self.w_torgb(ws), fused_modconv)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class HeadOutputs(NamedTuple):
    """What the synthesis head hands to the residual branch and the tail (E = embed_res).

    feat:        (B, C_E, E, E)        conv0 output of block E (the injection point)
    tap_quarter: (B, C_E/4, E/4, E/4)  output features of block E/4
    tap_half:    (B, C_E/2, E/2, E/2)  output features of block E/2
    rgb:         (B, 3, E/2, E/2)      RGB skip accumulated through block E/2
    """

    feat: torch.Tensor
    tap_quarter: torch.Tensor
    tap_half: torch.Tensor
    rgb: torch.Tensor


class SynthesisNetwork(nn.Module):
    """W+ (B, num_ws, w_dim) -> image (B, 3, R, R) in about [-1, 1]; blocks named b4 ... bR."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        previous = 0
        for res in config.block_resolutions:
            width = config.channels_at(res)
            self.add_module(f"b{res}", SynthesisBlock(previous, width, res, config))
            previous = width

    def block(self, resolution: int) -> SynthesisBlock:
        return getattr(self, f"b{resolution}")

    def _check_ws(self, ws: torch.Tensor) -> None:
        expected = (self.config.num_ws, self.config.w_dim)
        if ws.ndim != 3 or tuple(ws.shape[1:]) != expected:
            raise ValueError(f"wplus must be (B, {expected[0]}, {expected[1]}), got {tuple(ws.shape)}")

    def forward(self, ws: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        self._check_ws(ws)
        x = img = None
        for res in self.config.block_resolutions:
            block = self.block(res)
            x, img = block.finish(block.up_conv(x, ws, fused_modconv), img, ws, fused_modconv)
        return img

    def head(self, ws: torch.Tensor, fused_modconv: bool = False) -> HeadOutputs:
        """Synthesis up to and including conv0 of block E."""
        self._check_ws(ws)
        embed = self.config.embed_res
        x = img = None
        taps = {}
        for res in self.config.block_resolutions:
            block = self.block(res)
            x = block.up_conv(x, ws, fused_modconv)
            if res == embed:
                return HeadOutputs(feat=x, tap_quarter=taps[embed // 4], tap_half=taps[embed // 2], rgb=img)
            x, img = block.finish(x, img, ws, fused_modconv)
            taps[res] = x
        raise AssertionError("unreachable: GeneratorConfig guarantees embed_res is a block resolution")

    def tail(self, feat: torch.Tensor, rgb: torch.Tensor, ws: torch.Tensor,
             fused_modconv: bool = False) -> torch.Tensor:
        """Synthesis from an (injected) conv0 output of block E to the image (B, 3, R, R)."""
        self._check_ws(ws)
        embed = self.config.embed_res
        expected = (self.config.channels_at(embed), embed, embed)
        if tuple(feat.shape[1:]) != expected:
            raise ValueError(f"feat must be (B, {expected[0]}, {embed}, {embed}), got {tuple(feat.shape)}")
        x, img = feat, rgb
        for res in self.config.block_resolutions:
            if res < embed:
                continue
            block = self.block(res)
            if res > embed:
                x = block.up_conv(x, ws, fused_modconv)
            x, img = block.finish(x, img, ws, fused_modconv)
        return img


class Generator(nn.Module):
    """Mapping + synthesis: z (B, z_dim) -> image (B, 3, R, R)."""

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)

    @property
    def num_ws(self) -> int:
        return self.config.num_ws

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                fused_modconv: bool = False) -> torch.Tensor:
        return self.synthesis(self.mapping(z, truncation_psi, truncation_cutoff), fused_modconv)
