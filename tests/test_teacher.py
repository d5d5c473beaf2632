"""Flow teachers: OpenCV flow in warp's convention, flow resizing, input checks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from warpres.models.flow import warp
from warpres.training.teacher import OpenCVFlowTeacher, resize_flow

SIZE = 128
SHIFT_X, SHIFT_Y = 3, -2  # target content = source content moved +3 px right, 2 px up
MARGIN = 16


def _texture(seed: int = 0, size: int = SIZE) -> np.ndarray:
    """(size, size, 3) float32 smoothed noise in about [-0.9, 0.9]."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((size, size, 3)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), sigmaX=2.0, borderType=cv2.BORDER_REFLECT)
    smooth -= smooth.mean(axis=(0, 1))
    return 0.9 * smooth / np.abs(smooth).max()


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).unsqueeze(0).contiguous()


@pytest.fixture(scope="module")
def shifted_pair() -> tuple[torch.Tensor, torch.Tensor]:
    source = _texture()
    # target(y, x) = source(y - SHIFT_Y, x - SHIFT_X)
    target = np.roll(source, shift=(SHIFT_Y, SHIFT_X), axis=(0, 1))
    return _to_tensor(source), _to_tensor(target)


def _interior(t: torch.Tensor) -> torch.Tensor:
    return t[..., MARGIN:-MARGIN, MARGIN:-MARGIN]


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_teacher_recovers_translation(method, shifted_pair):
    source, target = shifted_pair
    flow = OpenCVFlowTeacher(method=method)(source, target)
    assert flow.shape == (1, 2, SIZE, SIZE)
    assert flow.dtype == torch.float32
    assert flow.device == source.device
    # warp convention: target(p) = source(p + flow(p)), so flow = -shift
    median = _interior(flow).flatten(2).median(dim=2).values[0]
    assert abs(median[0].item() + SHIFT_X) < 0.5, median
    assert abs(median[1].item() + SHIFT_Y) < 0.5, median


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_warping_source_by_teacher_flow_matches_target(method, shifted_pair):
    source, target = shifted_pair
    flow = OpenCVFlowTeacher(method=method)(source, target)
    warped = warp(source, flow)
    err_warp = _interior((warped - target).abs()).mean().item()
    err_none = _interior((source - target).abs()).mean().item()
    assert err_warp * 3.0 < err_none, (err_warp, err_none)


def test_batch_and_identical_images_give_zero_flow(shifted_pair):
    source, target = shifted_pair
    batch_src = torch.cat((source, source))
    batch_tgt = torch.cat((target, source))
    flow = OpenCVFlowTeacher("dis")(batch_src, batch_tgt)
    assert flow.shape == (2, 2, SIZE, SIZE)
    assert _interior(flow[1]).abs().max().item() < 0.05
    assert abs(_interior(flow[0, 0]).median().item() + SHIFT_X) < 0.5


def test_with_the_still_prior_what_the_pair_agrees_on_does_not_move(shifted_pair):
    source, moved = shifted_pair
    target = source.clone()
    target[..., 40:88, 40:88] = moved[..., 40:88, 40:88]  # only a window of the content moves
    flow = OpenCVFlowTeacher("dis", still_threshold=0.05, still_margin=0.07)(source, target)
    margin = 10  # 0.07 of 128 px, rounded up to an odd kernel, and one more
    assert not flow[..., : 40 - margin, :].any() and not flow[..., 88 + margin:, :].any()
    window = flow[0, :, 48:80, 48:80].flatten(1).median(dim=1).values
    assert abs(window[0].item() + SHIFT_X) < 0.5 and abs(window[1].item() + SHIFT_Y) < 0.5, window


def test_resize_flow_scales_constant_flow():
    flow = torch.empty(2, 2, 256, 256)
    flow[:, 0] = 4.0
    flow[:, 1] = -8.0
    small = resize_flow(flow, 64)
    assert small.shape == (2, 2, 64, 64)
    torch.testing.assert_close(small[:, 0], torch.full((2, 64, 64), 1.0))
    torch.testing.assert_close(small[:, 1], torch.full((2, 64, 64), -2.0))
    big = resize_flow(small, 128)
    torch.testing.assert_close(big[:, 0], torch.full((2, 128, 128), 2.0))
    torch.testing.assert_close(big[:, 1], torch.full((2, 128, 128), -4.0))
    rect = resize_flow(flow, (64, 32))
    torch.testing.assert_close(rect[:, 0], torch.full((2, 64, 32), 0.5))
    torch.testing.assert_close(rect[:, 1], torch.full((2, 64, 32), -2.0))


def test_bad_inputs_raise():
    teacher = OpenCVFlowTeacher()
    good = torch.zeros(1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        teacher(torch.zeros(3, 32, 32), torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        teacher(torch.zeros(1, 1, 32, 32), good)
    with pytest.raises(ValueError, match="same shape"):
        teacher(good, torch.zeros(1, 3, 32, 16))
    with pytest.raises(ValueError, match="floating-point"):
        teacher(good.to(torch.uint8), good.to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        resize_flow(torch.zeros(1, 3, 8, 8), 4)
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        resize_flow(torch.zeros(2, 8, 8), 4)
    with pytest.raises(ValueError, match="method"):
        OpenCVFlowTeacher(method="raft")
    with pytest.raises(ValueError, match="preset"):
        OpenCVFlowTeacher(preset="slow")
    with pytest.raises(ValueError, match="still_threshold must be > 0"):
        OpenCVFlowTeacher(still_threshold=0.0)
