"""StyleGAN2 modulated convolution, in its two equivalent forms.

fused:       per-sample weights W * s, demodulated, run as one grouped convolution (groups = B).
             Compact, but the weight is a runtime tensor, which ONNX/TensorRT convolutions reject.
decomposed:  scale the input by s, convolve with the constant W, scale the output by the
             demodulation coefficients. Same math; the weight stays constant, so this is the form
             that exports, and the reference the TensorRT modulated-conv plugin is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warpres.models.plugin_ops import plugin_nodes_requested
from warpres.models.resample import BINOMIAL_TAPS, setup_filter, upfirdn2d

DEMODULATION_EPS = 1e-8


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / ||W * s|| per sample and output channel: (B, O).

    Computed as s^2 @ sum_k(W^2)^T so the (B, O, I, k, k) per-sample weight never materialises.
    """
    weight_energy = weight.square().sum(dim=[2, 3])  # (O, I)
    return (styles.square() @ weight_energy.t() + DEMODULATION_EPS).rsqrt()


def _transposed_padding(up: int, padding: int, kernel: int, filter_taps: int) -> tuple[int, int, int]:
    """Paddings that make "transposed conv, then FIR" equal "zero-insert, FIR, conv".

    Returns (transposed-conv padding, FIR padding before, FIR padding after), same on both axes.
    """
    before = padding + (filter_taps + up - 1) // 2 - (kernel - 1)
    after = padding + (filter_taps - up) // 2 - (kernel - up)
    transposed = max(min(-before, -after), 0)
    return transposed, before + transposed, after + transposed


def _convolve(
    x: torch.Tensor,
    weight: torch.Tensor,
    up: int,
    padding: int,
    resample_filter: torch.Tensor | None,
    groups: int,
) -> torch.Tensor:
    """Cross-correlate x with weight (O, I/groups, k, k); for up > 1, upsample anti-aliased first."""
    if up == 1:
        return F.conv2d(x, weight, padding=padding, groups=groups)
    if resample_filter is None:
        raise ValueError("an upsampling modulated conv needs its resample filter")
    out_channels, in_per_group, kh, kw = weight.shape
    if kh != kw:
        raise ValueError(f"square kernels only, got {kh}x{kw}")
    transposed_weight = (
        weight.reshape(groups, out_channels // groups, in_per_group, kh, kw)
        .transpose(1, 2)
        .reshape(groups * in_per_group, out_channels // groups, kh, kw)
    )
    transposed, before, after = _transposed_padding(up, padding, kh, resample_filter.shape[-1])
    x = F.conv_transpose2d(x, transposed_weight, stride=up, padding=transposed, groups=groups)
    return upfirdn2d(x, resample_filter, padding=(before, after, before, after), gain=up**2)


def _decomposed(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: int, padding: int,
                resample_filter: torch.Tensor | None) -> torch.Tensor:
    """Scale the input by the styles, convolve with the constant weight, scale by the demodulation."""
    x = _convolve(x * styles[:, :, None, None], weight, up, padding, resample_filter, groups=1)
    return x * demodulation_coefficients(weight, styles)[:, :, None, None] if demodulate else x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool = True,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """Modulated (and optionally demodulated) convolution.

    x: (B, I, H, W); weight: (O, I, k, k); styles: (B, I).
    Returns (B, O, H*up, W*up) for `padding = k // 2`. Noise and bias are the caller's.
    """
    batch, in_channels = x.shape[:2]
    if weight.shape[1] != in_channels or styles.shape != (batch, in_channels):
        raise ValueError(
            f"modulated conv: x {tuple(x.shape)}, weight {tuple(weight.shape)} and styles "
            f"{tuple(styles.shape)} disagree on batch or input channels"
        )
    if plugin_nodes_requested():
        _check_plugin_contract(weight, up, padding, resample_filter)
        return torch.ops.warpres.modulated_conv(x, weight, styles, demodulate, up, padding)
    if not fused:
        return _decomposed(x, weight, styles, demodulate, up, padding, resample_filter)

    per_sample = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
    if demodulate:
        per_sample = per_sample * (per_sample.square().sum(dim=[2, 3, 4]) + DEMODULATION_EPS).rsqrt()[
            :, :, None, None, None
        ]
    out_channels = weight.shape[0]
    x = x.reshape(1, batch * in_channels, *x.shape[2:])
    x = _convolve(x, per_sample.reshape(batch * out_channels, in_channels, *weight.shape[2:]), up, padding,
                  resample_filter, groups=batch)
    return x.reshape(batch, out_channels, *x.shape[2:])


def _check_plugin_contract(weight: torch.Tensor, up: int, padding: int, resample_filter: torch.Tensor | None) -> None:
    """What the ModulatedConv plugin implements: odd square kernels with 'same' padding, and 2x
    up only for 3x3 kernels with StyleGAN2's binomial filter (plugins/modulatedConvPlugin)."""
    kernel = weight.shape[-1]
    if weight.shape[-2] != kernel or kernel % 2 == 0 or padding != kernel // 2:
        raise ValueError(f"the ModulatedConv plugin takes odd square kernels with padding k // 2; got weight "
                         f"{tuple(weight.shape)} with padding {padding}")
    if up not in (1, 2) or (up == 2 and kernel != 3):
        raise ValueError(f"the ModulatedConv plugin upsamples by 2 with 3x3 kernels only; got up={up}, k={kernel}")
    if up == 2 and not is_binomial_filter(resample_filter):
        raise ValueError("the ModulatedConv plugin upsamples with the binomial [1, 3, 3, 1] filter only")


def is_binomial_filter(resample_filter: torch.Tensor | None) -> bool:
    """Whether `resample_filter` is StyleGAN2's, the one the plugin hard-codes. While tracing the
    values are symbolic: only the shape is checked, and the exporter checks the buffers' values."""
    if resample_filter is None or resample_filter.shape != (len(BINOMIAL_TAPS),) * 2:
        return False
    return torch.compiler.is_compiling() or torch.equal(resample_filter.cpu(), setup_filter())


@torch.library.custom_op("warpres::modulated_conv", mutates_args=())
def _modulated_conv_node(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: int,
                         padding: int) -> torch.Tensor:
    """One ModulatedConv plugin node (warpres.models.plugin_ops); computes the decomposed form."""
    return _decomposed(x, weight, styles, demodulate, up, padding, setup_filter().to(x.device) if up > 1 else None)


@_modulated_conv_node.register_fake
def _modulated_conv_shape(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool, up: int,
                          padding: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2] * up, x.shape[3] * up))
