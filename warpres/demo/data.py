"""Rendered faces as training data: sample k of a stream is a pure function of (seed, k)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import regression_targets
from warpres.demo.renderer import FaceParams, render, render_with_masks, with_attribute, without_details
from warpres.images import to_model_input

FACIAL_COMPONENTS = ("eyes", "mouth")
COMPONENT_MARGIN = 2  # pixels at 128: an edit of the mouth's shape moves it past its own outline


def component_mask(masks: dict[str, np.ndarray], size: int) -> np.ndarray:
    """float32 (1, size, size): 1 on the eyes and the mouth and a margin around them, else 0."""
    union = np.logical_or.reduce([masks[name] for name in FACIAL_COMPONENTS]).astype(np.uint8)
    radius = max(1, round(COMPONENT_MARGIN * size / 128))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(union, kernel)[None].astype(np.float32)


@dataclass(frozen=True)
class PoseCurriculum:
    """Head pose scaled down early in a stream: sample k is posed at `scale(k)` times the prior's
    yaw and pitch, 0 (frontal) for the first `frontal` samples, then rising linearly to 1 over the
    next `ramp` samples.

    Pose moves the eyes and the mouth across the image; while it varies, an autoencoder's
    reconstruction averages them into a blurred band for thousands of steps. Frontal faces keep
    them in place, and the synthesis learns to draw them within the first thousand steps; the
    ramp then teaches it to move them."""

    frontal: int
    ramp: int

    def scale(self, k: int) -> float:
        if k < self.frontal:
            return 0.0
        return min(1.0, (k - self.frontal + 1) / max(self.ramp, 1))

    def apply(self, params: FaceParams, k: int) -> FaceParams:
        factor = self.scale(k)
        return with_attribute(params, yaw=factor * params.yaw, pitch=factor * params.pitch)


class RenderedFaces(Dataset):
    """Item k: image (3, size, size) in [-1, 1], its latent z (D,), its regression targets (T,)
    and, with `autoencoder`, the :func:`component_mask` of its eyes and mouth (1, size, size)
    and the render of the same face :func:`without_details` (3, size, size).

    `count` bounds the stream (a held-out set); None leaves it endless (read it with a sampler).
    `pose_curriculum` poses the early samples of the stream frontally (z stays the prior's draw;
    the image and the targets show the pose drawn).
    """

    def __init__(self, seed: int, size: int = 128, count: int | None = None, autoencoder: bool = False,
                 pose_curriculum: PoseCurriculum | None = None) -> None:
        self.seed = seed
        self.size = size
        self.count = count
        self.autoencoder = autoencoder
        self.pose_curriculum = pose_curriculum

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless RenderedFaces stream has no length")
        return self.count

    def __getitem__(self, k: int) -> tuple[torch.Tensor, ...]:
        if self.count is not None and not 0 <= k < self.count:
            raise IndexError(k)
        z, seeds = sample_latent(np.random.default_rng([self.seed, k]))
        params = params_from_latent(z, seeds)
        if self.pose_curriculum is not None:
            params = self.pose_curriculum.apply(params, k)
        if self.autoencoder:
            pixels, masks = render_with_masks(params, self.size)
        else:
            pixels, masks = render(params, self.size), None
        item = (self._tensor(pixels), torch.from_numpy(z), torch.from_numpy(regression_targets(params)))
        if masks is None:
            return item
        plain = self._tensor(render(without_details(params), self.size))
        return (*item, torch.from_numpy(component_mask(masks, self.size)), plain)

    def _tensor(self, pixels: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_model_input(pixels, self.size)[0])
