"""rosinality/stylegan2-pytorch's generator math and state-dict layout, written for tests.

An independent formulation of the same network (weights scaled by 1/sqrt(fan_in) and modulated
per sample, up-sampling as stride-2 transposed conv + blur, a flat list of convs, per-layer noise
buffers), so a converted checkpoint is checked against a different computation, not against
our own code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _kernel(upsample_factor: int = 1) -> torch.Tensor:
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = k[None, :] * k[:, None]
    return k / k.sum() * upsample_factor**2


def _fir(x: torch.Tensor, kernel: torch.Tensor, up: int, pad: tuple[int, int]) -> torch.Tensor:
    channels = x.shape[1]
    if up > 1:  # zero insertion as a strided transposed conv with a unit kernel
        unit = torch.zeros(channels, 1, up, up)
        unit[:, :, 0, 0] = 1.0
        x = F.conv_transpose2d(x, unit, stride=up, groups=channels)
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, kernel.flip([0, 1])[None, None].repeat(channels, 1, 1, 1), groups=channels)


class EqualLinear(nn.Module):
    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, activation=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init)))
        self.scale, self.lr_mul, self.activation = lr_mul / math.sqrt(in_dim), lr_mul, activation

    def forward(self, x):
        out = x @ (self.weight * self.scale).t()
        if self.activation:
            return F.leaky_relu(out + self.bias * self.lr_mul, 0.2) * math.sqrt(2)
        return out + self.bias * self.lr_mul


class PixelNorm(nn.Module):
    def forward(self, x):
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size, style_dim, demodulate=True, upsample=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, out_ch, in_ch, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        self.scale = 1 / math.sqrt(in_ch * kernel_size**2)
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel_size // 2
        if upsample:
            self.blur = nn.Module()
            self.blur.register_buffer("kernel", _kernel(2))

    def forward(self, x, style):
        batch, in_ch, height, width = x.shape
        weight = self.scale * self.weight * self.modulation(style)[:, None, :, None, None]
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)[:, :, None, None, None]
        out_ch, k = weight.shape[1], weight.shape[-1]
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, groups=batch)
            out = _fir(out.reshape(batch, out_ch, *out.shape[2:]), self.blur.kernel, 1, (1, 1))
            return out
        out = F.conv2d(x, weight.reshape(batch * out_ch, in_ch, k, k), padding=self.padding, groups=batch)
        return out.reshape(batch, out_ch, *out.shape[2:])


class NoiseInjection(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * math.sqrt(2)


class StyledConv(nn.Module):
    def __init__(self, in_ch, out_ch, style_dim, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x, style, noise):
        return self.activate(self.conv(x, style) + self.noise.weight * noise)


class ToRGB(nn.Module):
    def __init__(self, in_ch, style_dim, upsample=True):
        super().__init__()
        if upsample:
            self.upsample = nn.Module()
            self.upsample.register_buffer("kernel", _kernel(2))
        self.conv = ModulatedConv2d(in_ch, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + _fir(skip, self.upsample.kernel, 2, (2, 1))
        return out


class RosinalityGenerator(nn.Module):
    """Generator(size, style_dim, n_mlp, channel_multiplier) with the official key layout."""

    def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, narrow=1.0):
        super().__init__()
        self.style = nn.Sequential(PixelNorm(), *[EqualLinear(style_dim, style_dim, lr_mul=0.01, activation=True)
                                                  for _ in range(n_mlp)])
        base = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
                256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}
        self.channels = {r: max(int(c * narrow), 1) for r, c in base.items()}
        self.input = nn.Module()
        self.input.input = nn.Parameter(torch.randn(1, self.channels[4], 4, 4))
        self.conv1 = StyledConv(self.channels[4], self.channels[4], style_dim)
        self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.convs, self.upsamples, self.to_rgbs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        self.noises = nn.Module()
        for idx in range(self.num_layers):
            res = 2 ** ((idx + 5) // 2)
            self.noises.register_buffer(f"noise_{idx}", torch.randn(1, 1, res, res))
        in_ch = self.channels[4]
        for i in range(3, self.log_size + 1):
            out_ch = self.channels[2**i]
            self.convs.append(StyledConv(in_ch, out_ch, style_dim, upsample=True))
            self.convs.append(StyledConv(out_ch, out_ch, style_dim))
            self.to_rgbs.append(ToRGB(out_ch, style_dim))
            in_ch = out_ch
        self.n_latent = self.log_size * 2 - 2

    def synthesis(self, latent):
        """W+ (B, n_latent, style_dim) -> image, constant noise (randomize_noise=False)."""
        noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
        out = self.conv1(self.input.input.repeat(latent.shape[0], 1, 1, 1), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, to_rgb, n1, n2 in zip(self.convs[::2], self.convs[1::2], self.to_rgbs,
                                                  noise[1::2], noise[2::2], strict=True):
            out = conv_up(out, latent[:, i], n1)
            out = conv(out, latent[:, i + 1], n2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip
