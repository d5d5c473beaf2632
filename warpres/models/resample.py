"""FIR resampling (upsample, pad, filter, downsample) as in the StyleGAN2 papers.

StyleGAN2 anti-aliases every 2x upsampling with the binomial filter [1, 3, 3, 1]. The reference
`upfirdn2d` here uses only standard ops (reshape, pad, depthwise conv), so it runs anywhere and
exports to ONNX; it is the ground truth the fused and exported paths are checked against.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

BINOMIAL_TAPS = (1.0, 3.0, 3.0, 1.0)


def setup_filter(taps: Sequence[float] = BINOMIAL_TAPS) -> torch.Tensor:
    """The separable 2-D filter of `taps`, normalised to unit DC gain: (K, K) float32."""
    f = torch.as_tensor(taps, dtype=torch.float32)
    if f.ndim != 1 or f.numel() == 0:
        raise ValueError(f"filter taps must be a non-empty 1-D sequence, got shape {tuple(f.shape)}")
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Zero-insert by `up`, pad, convolve with `f`, keep every `down`-th sample.

    x: (B, C, H, W); f: (K, K) from `setup_filter`; padding: (left, right, top, bottom) on the
    upsampled grid, negative values crop. The filter is applied as a true convolution (flipped),
    and its gain scales the output (`up ** 2` keeps the DC level after zero insertion).
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)
    left, right, top, bottom = padding
    x = F.pad(x, [max(left, 0), max(right, 0), max(top, 0), max(bottom, 0)])
    x = x[:, :, max(-top, 0) : x.shape[2] - max(-bottom, 0), max(-left, 0) : x.shape[3] - max(-right, 0)]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)
    kernel = kernel[None, None].expand(channels, 1, *f.shape)
    x = F.conv2d(x, kernel, groups=channels)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Anti-aliased `up`x upsampling: (B, C, H, W) -> (B, C, H*up, W*up)."""
    taps = f.shape[-1]
    before = (taps + up - 1) // 2
    after = (taps - up) // 2
    return upfirdn2d(x, f, up=up, padding=(before, after, before, after), gain=up**2)
