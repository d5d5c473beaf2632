"""Backward warp, flow head, and the WarpRes branch (E1, flow, E2) on tiny widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from warpres.models.flow import FlowHead, warp
from warpres.models.warpres import WarpResBranch, WarpResConfig

B, E = 2, 16
TINY = WarpResConfig(
    enc_channels=8, feat_channels=16, tap_quarter_channels=12, tap_half_channels=10, width=16, adapter_channels=8
)


def _features(dtype: torch.dtype = torch.float64, size: int = E) -> torch.Tensor:
    return torch.randn(B, 3, size, size, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _constant_flow(dx: float, dy: float, size: int = E, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    flow = torch.empty(B, 2, size, size, dtype=dtype)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


def _taps(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, TINY.tap_quarter_channels, E // 4, E // 4, generator=g),
        torch.randn(B, TINY.tap_half_channels, E // 2, E // 2, generator=g),
        torch.randn(B, TINY.feat_channels, E, E, generator=g),
    )


def _perturb_zero_init(branch: WarpResBranch) -> None:
    """Give the zero-initialised last convs (flow predictors, E2 output) small random weights."""
    zero_init = [branch.flow_head.predict_quarter[-1], branch.flow_head.predict_half[-1],
                 branch.flow_head.predict_feat[-1], branch.refiner.out_layer]  # fmt: skip
    for conv in zero_init:
        nn.init.normal_(conv.weight, std=0.05)
        nn.init.normal_(conv.bias, std=0.05)


@pytest.fixture
def branch() -> WarpResBranch:
    torch.manual_seed(0)
    return WarpResBranch(TINY)


# ---- warp (computed in float64 where the claim is exact geometry, not float32 rounding)


def test_zero_flow_warp_is_identity():
    x = _features()
    torch.testing.assert_close(warp(x, _constant_flow(0.0, 0.0)), x, atol=1e-12, rtol=0)


def test_zero_flow_float32_error_is_within_grid_sample_coordinate_rounding():
    size = 64
    x = _features(torch.float32, size)
    neighbour_step = max((x[..., 1:, :] - x[..., :-1, :]).abs().max(), (x[..., 1:] - x[..., :-1]).abs().max())
    # a few float32 ulps of a coordinate near `size`, times the steepest step between pixels
    bound = size * 2.0**-21 * float(neighbour_step)
    error = (warp(x, _constant_flow(0.0, 0.0, size, torch.float32)) - x).abs().max()
    assert float(error) <= bound


def test_positive_flow_samples_from_right_and_below_by_whole_pixels():
    x = _features()
    out = warp(x, _constant_flow(2.0, 3.0))  # out[y, x] = in[y + 3, x + 2]
    torch.testing.assert_close(out[..., : E - 3, : E - 2], x[..., 3:, 2:], atol=1e-12, rtol=0)


def test_negative_flow_samples_from_left_and_above_by_whole_pixels():
    x = _features()
    out = warp(x, _constant_flow(-1.0, -4.0))  # out[y, x] = in[y - 4, x - 1]
    torch.testing.assert_close(out[..., 4:, 1:], x[..., : E - 4, : E - 1], atol=1e-12, rtol=0)


def test_flow_leaving_the_grid_reads_zeros():
    out = warp(_features(), _constant_flow(2.0, 0.0))
    torch.testing.assert_close(out[..., E - 2 :], torch.zeros(B, 3, E, 2, dtype=torch.float64), atol=1e-12, rtol=0)


def test_half_pixel_flow_gives_the_bilinear_average():
    x = _features()
    out = warp(x, _constant_flow(0.5, 0.5))
    average = (x[..., :-1, :-1] + x[..., :-1, 1:] + x[..., 1:, :-1] + x[..., 1:, 1:]) / 4
    torch.testing.assert_close(out[..., :-1, :-1], average, atol=1e-12, rtol=0)


def test_warp_names_a_flow_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"flow must be \(2, 2, 16, 16\)"):
        warp(_features(), torch.zeros(B, 2, E // 2, E // 2, dtype=torch.float64))


# ---- flow head


def test_untrained_flow_head_predicts_zero_flow():
    torch.manual_seed(0)
    head = FlowHead(TINY.tap_quarter_channels, TINY.tap_half_channels, TINY.feat_channels, TINY.adapter_channels)
    with torch.no_grad():
        flow = head(*_taps(1), *_taps(2))
    torch.testing.assert_close(flow, torch.zeros(B, 2, E, E), atol=0, rtol=0)


def test_flow_head_output_is_a_finite_full_resolution_flow(branch):
    _perturb_zero_init(branch)
    with torch.no_grad():
        flow = branch.estimate_flow(*_taps(1), *_taps(2))
    assert flow.shape == (B, 2, E, E)
    assert bool(flow.isfinite().all())
    assert float(flow.abs().max()) > 0


def test_flow_head_names_a_tap_of_the_wrong_shape(branch):
    quarter, half, feat = _taps(1)
    with pytest.raises(ValueError, match=r"tap_half_edit must be \(2, 10, 8, 8\)"):
        branch.estimate_flow(quarter, half, feat, quarter, half[..., :4, :4], feat)


# ---- E1 / E2 and the branch API


def test_residual_encoder_output_has_generator_feature_shape(branch):
    enc_feat, feat = torch.randn(B, TINY.enc_channels, E, E), torch.randn(B, TINY.feat_channels, E, E)
    with torch.no_grad():
        residual = branch.encode_residual(enc_feat, feat)
    assert residual.shape == (B, TINY.feat_channels, E, E)


def test_untrained_refiner_makes_fuse_return_feat_edit_exactly_with_zero_flow(branch):
    feat_edit = torch.randn(B, TINY.feat_channels, E, E)
    with torch.no_grad():
        fused = branch.fuse(torch.randn(B, TINY.feat_channels, E, E), feat_edit, torch.zeros(B, 2, E, E))
    torch.testing.assert_close(fused, feat_edit, atol=0, rtol=0)


def test_additions_are_exactly_what_fuse_adds_to_feat_edit(branch):
    torch.nn.init.normal_(branch.refiner.out_layer.weight, std=0.1)  # a refiner that adds something
    residual, feat_edit = torch.randn(B, TINY.feat_channels, E, E), torch.randn(B, TINY.feat_channels, E, E)
    flow = torch.randn(B, 2, E, E)
    with torch.no_grad():
        fused, additions = branch.fuse_with_additions(residual, feat_edit, flow)
        torch.testing.assert_close(branch.fuse(residual, feat_edit, flow), fused, atol=0, rtol=0)
    assert additions.abs().mean() > 0.01
    torch.testing.assert_close(fused, feat_edit + additions, atol=0, rtol=0)


def test_encode_residual_rejects_a_size_the_encoder_cannot_halve_three_times(branch):
    with pytest.raises(ValueError, match="divisible by 8"):
        branch.encode_residual(torch.randn(B, TINY.enc_channels, 12, 12), torch.randn(B, TINY.feat_channels, 12, 12))


def test_every_parameter_receives_a_gradient(branch):
    _perturb_zero_init(branch)  # zero last convs would block the gradient to the layers before them
    enc_feat = torch.randn(B, TINY.enc_channels, E, E)
    quarter, half, feat = _taps(1)
    quarter_edit, half_edit, feat_edit = _taps(2)
    residual = branch.encode_residual(enc_feat, feat)
    flow = branch.estimate_flow(quarter, half, feat, quarter_edit, half_edit, feat_edit)
    fused = branch.fuse(residual, feat_edit, flow)
    (fused * torch.randn_like(fused)).sum().backward()
    missing = [name for name, p in branch.named_parameters() if p.grad is None or not bool(p.grad.abs().sum() > 0)]
    assert missing == []


def test_config_round_trips_through_a_dict():
    assert WarpResConfig.from_dict(TINY.to_dict()) == TINY


def test_branch_declares_that_it_uses_flow():
    assert WarpResBranch.uses_flow is True
