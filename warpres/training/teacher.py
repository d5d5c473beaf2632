"""Teacher flows that supervise the WarpRes flow head.

Convention (the one of `warpres.models.flow.warp`): a teacher called as `teacher(source, target)`
returns a flow (B, 2, H, W) in pixels, channel 0 = x (columns), channel 1 = y (rows), defined on
the grid of the *target* and pointing into the *source*:

    target(p) ~= source(p + flow(p))   for every target pixel p,

so `warp(source_features, flow)` (which computes out(p) = features(p + flow(p))) samples the
source and aligns its content with the target. For WarpRes, source = RGB of the unedited latent,
target = RGB of the edited latent: the flow maps the edited frame into the unedited one, the
same meaning as the output of `FlowHead`.

OpenCV's dense flow `calcOpticalFlow*(prev, next)` returns f with prev(y, x) ~= next(y + fy, x + fx),
i.e. a flow on the grid of `prev` pointing into `next`. Hence the teacher calls OpenCV with
prev = target and next = source, and the result is already in warp's convention (no negation,
no inversion).
"""

from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

_DIS_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}
_METHODS = ("dis", "farneback")


class FlowTeacher(Protocol):
    """source, target: RGB (B, 3, H, W) in [-1, 1] -> flow (B, 2, H, W) in pixels at H x W.

    The flow lives on the target grid and satisfies target(p) ~= source(p + flow(p)), so
    `warpres.models.flow.warp(source_features, flow)` aligns source content with the target.
    """

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


def check_rgb_pair(source: torch.Tensor, target: torch.Tensor) -> None:
    for name, image in (("source", source), ("target", target)):
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"{name} must be an RGB batch (B, 3, H, W), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got {image.dtype}")
    if source.shape != target.shape:
        raise ValueError(
            f"source and target must have the same shape, got {tuple(source.shape)} and {tuple(target.shape)}"
        )
    if source.shape[2] < 8 or source.shape[3] < 8:
        raise ValueError(f"images must be at least 8x8 for optical flow, got {tuple(source.shape)}")


def _to_gray_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) RGB in [-1, 1] -> (B, H, W) uint8 luma (ITU-R BT.601 weights)."""
    rgb = images.detach().to(device="cpu", dtype=torch.float32)
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    luma = (rgb * weights).sum(dim=1)
    return ((luma + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


class OpenCVFlowTeacher:
    """Dense optical flow from OpenCV on CPU, image by image ("dis" or "farneback").

    Returns float32 flow on the device of the inputs, in the convention of `FlowTeacher`.

    still_threshold: where no channel of the pair differs by more than this (in [-1, 1] units)
    within `still_margin` (a fraction of the image width) of a pixel, the pixel has not moved
    and its flow is zero. Flow methods fill textureless regions by smoothing the motion around
    them into them; an edit that leaves the background alone should not teach it to move.
    """

    def __init__(self, method: str = "dis", preset: str = "medium", still_threshold: float | None = None,
                 still_margin: float = 0.07) -> None:
        if method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
        if method == "dis" and preset not in _DIS_PRESETS:
            raise ValueError(f"preset must be one of {tuple(_DIS_PRESETS)}, got {preset!r}")
        if still_threshold is not None and (still_threshold <= 0 or not 0 <= still_margin < 1):
            raise ValueError(f"still_threshold must be > 0 and still_margin in [0, 1), got "
                             f"{still_threshold} and {still_margin}")
        self.method = method
        self.preset = preset
        self.still_threshold = still_threshold
        self.still_margin = still_margin
        self._dis = cv2.DISOpticalFlow_create(_DIS_PRESETS[preset]) if method == "dis" else None

    def _flow(self, prev: np.ndarray, nxt: np.ndarray) -> np.ndarray:
        """OpenCV flow (H, W, 2) with prev(y, x) ~= nxt(y + fy, x + fx)."""
        if self._dis is not None:
            return self._dis.calc(prev, nxt, None)
        return cv2.calcOpticalFlowFarneback(
            prev, nxt, None, pyr_scale=0.5, levels=4, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0
        )

    def __call__(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_rgb_pair(source, target)
        src = _to_gray_uint8(source)
        tgt = _to_gray_uint8(target)
        # prev = target, next = source: the flow is on the target grid and points into the source.
        flows = [self._flow(np.ascontiguousarray(t), np.ascontiguousarray(s)) for s, t in zip(src, tgt, strict=True)]
        flow = torch.from_numpy(np.stack(flows).astype(np.float32, copy=False)).permute(0, 3, 1, 2).contiguous()
        if self.still_threshold is not None:
            flow = flow * self._changed(source, target)
        return flow.to(source.device)

    def _changed(self, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) float: 1 within still_margin of a pixel the pair disagrees on, else 0."""
        difference = (source.detach().float() - target.detach().float()).abs().amax(dim=1).cpu().numpy()
        width = 2 * int(round(self.still_margin * source.shape[-1] / 2)) + 1
        kernel = np.ones((width, width), np.uint8)
        masks = [cv2.dilate((d > self.still_threshold).astype(np.uint8), kernel) for d in difference]
        return torch.from_numpy(np.stack(masks)[:, None].astype(np.float32))


def resize_flow(flow: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize a pixel flow (B, 2, H, W) to `size` (int -> square) and rescale its values.

    Area averaging when shrinking, bilinear (align_corners=False) when enlarging; x values are
    multiplied by new_W / W and y values by new_H / H (pixel-centre alignment between the grids,
    as for a 256 -> 64 teacher flow whose values are divided by 256 / 64).
    """
    if not isinstance(flow, torch.Tensor) or flow.ndim != 4 or flow.shape[1] != 2:
        shape = tuple(flow.shape) if isinstance(flow, torch.Tensor) else type(flow).__name__
        raise ValueError(f"flow must be (B, 2, H, W), got {shape}")
    if not flow.is_floating_point():
        raise ValueError(f"flow must be floating-point, got {flow.dtype}")
    out_h, out_w = (size, size) if isinstance(size, int) else tuple(size)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"size must be positive, got {size}")
    height, width = flow.shape[2:]
    if (out_h, out_w) == (height, width):
        return flow.clone()
    if out_h <= height and out_w <= width:
        resized = F.interpolate(flow, size=(out_h, out_w), mode="area")
    else:
        resized = F.interpolate(flow, size=(out_h, out_w), mode="bilinear", align_corners=False)
    scale = torch.tensor([out_w / width, out_h / height], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)
    return resized * scale
