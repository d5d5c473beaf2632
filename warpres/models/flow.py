"""Backward warping and the WarpRes flow head.

A flow is (B, 2, H, W) in pixels of its own H x W grid, channel 0 = x (columns), channel 1 = y
(rows), and is a *backward* map: warped(p) = features(p + flow(p)). The flow head predicts, in
the frame of the edited image, where each position comes from in the unedited one, so warping
the (unedited) residual by it aligns the residual with the edit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.plugin_ops import plugin_nodes_requested
from warpres.models.shapes import check_shape, spatial_size
from warpres.models.styleres import LRELU_SLOPE


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward bilinear warp: out(p) = features(p + flow(p)), zeros outside the grid.

    features (B, C, H, W), flow (B, 2, H, W) in pixels -> (B, C, H, W). One GridSample node in
    ONNX (opset >= 16); the base grid is an `arange` over the static H, W, which the
    torch.export-based exporter folds into constants (the legacy tracer keeps a Shape -> Range).
    """
    check_shape("features", features, ("B", "C", "H", "W"))
    batch, _, height, width = features.shape
    check_shape("flow", flow, (batch, 2, height, width))
    if height < 2 or width < 2:
        raise ValueError(f"warp needs at least a 2x2 grid, got features {tuple(features.shape)}")
    if plugin_nodes_requested():
        return torch.ops.warpres.flow_warp(features, flow)
    return _grid_sample_warp(features, flow)


def _grid_sample_warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    height, width = features.shape[-2:]
    # align_corners=True maps -1 and +1 to the centres of the first and last pixels, so pixel
    # position p normalises to p / ((size - 1) / 2) - 1. Dividing by the half-size (exact in
    # binary) rounds less than multiplying by 2 / (size - 1); still, grid_sample's float32
    # un-normalisation leaves a position error of about size * 2**-25 pixels, so a zero flow
    # reproduces float32 features to ~1e-5, not bit-exactly (float64 is exact to ~1e-14).
    half_x = (width - 1) / 2.0
    half_y = (height - 1) / 2.0
    xs = torch.arange(width, device=flow.device, dtype=flow.dtype)
    ys = torch.arange(height, device=flow.device, dtype=flow.dtype)
    grid_x = (xs.view(1, 1, width) + flow[:, 0]) / half_x - 1.0
    grid_y = (ys.view(1, height, 1) + flow[:, 1]) / half_y - 1.0
    grid = torch.stack((grid_x, grid_y), dim=-1)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


@torch.library.custom_op("warpres::flow_warp", mutates_args=())
def _flow_warp_node(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """One FlowWarp plugin node (warpres.models.plugin_ops); computes the GridSample form."""
    return _grid_sample_warp(features, flow)


@_flow_warp_node.register_fake
def _flow_warp_shape(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(features)


def upsample_flow(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) -> (B, 2, 2H, 2W): bilinear resize, values doubled since a pixel halves."""
    return 2.0 * F.interpolate(flow, scale_factor=2.0, mode="bilinear", align_corners=False)


def _adapter(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.LeakyReLU(LRELU_SLOPE))


def _predictor(in_channels: int, hidden: int) -> nn.Sequential:
    """Three 3x3 convs -> (B, 2, H, W); the last one is zero so an untrained head predicts no motion."""
    last = nn.Conv2d(hidden, 2, kernel_size=3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, kernel_size=3, padding=1),
        nn.LeakyReLU(LRELU_SLOPE),
        nn.Conv2d(hidden, hidden, kernel_size=3, padding=1),
        nn.LeakyReLU(LRELU_SLOPE),
        last,
    )


class FlowHead(nn.Module):
    """Coarse-to-fine flow from StyleGAN features of the unedited and the edited latent.

    Inputs per scale, unedited and edited alike: tap_quarter (B, Cq, E/4, E/4), tap_half
    (B, Ch, E/2, E/2), feat (B, Cg, E, E), e.g. (B, 512, 16, 16), (B, 512, 32, 32),
    (B, 512, 64, 64) for FFHQ. Each scale has one 3x3 adapter to `adapter_channels`, shared by
    both latents so that equal features give equal codes. At E/4 the flow is predicted from
    scratch; at E/2 and E the upsampled coarser flow pre-aligns the unedited features, and a
    residual flow is predicted from (warped unedited, edited, upsampled flow).

    The last conv of every predictor is zero-initialised, so an untrained head outputs exactly
    zero flow: the warp is then the identity and a WarpRes model starts as a no-warp residual
    model (StyleRes-like), which is also the right answer for unedited samples (edit = orig).
    The residual path can therefore train from the first step on undistorted residuals instead
    of chasing a random warp, and the flow departs from identity only as its supervision asks.
    """

    def __init__(
        self, tap_quarter_channels: int, tap_half_channels: int, feat_channels: int, adapter_channels: int = 64
    ) -> None:
        super().__init__()
        self.channels = (tap_quarter_channels, tap_half_channels, feat_channels)
        joint = 2 * adapter_channels
        self.adapt_quarter = _adapter(tap_quarter_channels, adapter_channels)
        self.adapt_half = _adapter(tap_half_channels, adapter_channels)
        self.adapt_feat = _adapter(feat_channels, adapter_channels)
        self.predict_quarter = _predictor(joint, joint)
        self.predict_half = _predictor(joint + 2, joint)
        self.predict_feat = _predictor(joint + 2, joint)

    def forward(
        self,
        tap_quarter: torch.Tensor,
        tap_half: torch.Tensor,
        feat: torch.Tensor,
        tap_quarter_edit: torch.Tensor,
        tap_half_edit: torch.Tensor,
        feat_edit: torch.Tensor,
    ) -> torch.Tensor:
        """-> flow (B, 2, E, E) in pixels at E, mapping the edited frame into the unedited one."""
        quarter_c, half_c, feat_c = self.channels
        batch, size = spatial_size("feat", feat, multiple_of=4)
        expected = {
            "tap_quarter": (tap_quarter, (batch, quarter_c, size // 4, size // 4)),
            "tap_half": (tap_half, (batch, half_c, size // 2, size // 2)),
            "feat": (feat, (batch, feat_c, size, size)),
            "tap_quarter_edit": (tap_quarter_edit, (batch, quarter_c, size // 4, size // 4)),
            "tap_half_edit": (tap_half_edit, (batch, half_c, size // 2, size // 2)),
            "feat_edit": (feat_edit, (batch, feat_c, size, size)),
        }
        for name, (tensor, shape) in expected.items():
            check_shape(name, tensor, shape)

        flow = self.predict_quarter(
            torch.cat((self.adapt_quarter(tap_quarter), self.adapt_quarter(tap_quarter_edit)), dim=1)
        )
        flow = self._refine(self.predict_half, self.adapt_half(tap_half), self.adapt_half(tap_half_edit), flow)
        return self._refine(self.predict_feat, self.adapt_feat(feat), self.adapt_feat(feat_edit), flow)

    @staticmethod
    def _refine(predictor: nn.Module, orig: torch.Tensor, edit: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """One finer level: coarse flow (B, 2, S/2, S/2) -> flow (B, 2, S, S)."""
        flow = upsample_flow(coarse)
        return flow + predictor(torch.cat((warp(orig, flow), edit, flow), dim=1))
