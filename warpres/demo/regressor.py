"""The demo domain's attribute regressor: what its outputs mean.

ImageNet VGG weights cannot be downloaded, so the demo domain brings its own perceptual
network (`warpres.training.domain.DomainNetwork`), trained to read the renderer's continuous
attributes from the image. Its outputs measure what an edit achieved (smile, pose, hair colour,
glasses, age); its stage features feed `PerceptualLoss` (training) and the domain perceptual
distance (evaluation).

Hues are circular, so each is regressed as (cos, sin) of its angle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from warpres.demo.renderer import FaceParams
from warpres.training.domain import DomainNetwork, load_domain_network

LINEAR_TARGETS = ("smile", "yaw", "pitch", "glasses", "age", "skin_tone", "face_width", "jaw_width", "eye_value",
                  "hair_saturation", "hair_value", "brow_thickness", "mouth_width", "freckle_density")
HUE_TARGETS = ("hair_hue", "clothing_hue", "background_hue")
TARGET_NAMES = LINEAR_TARGETS + tuple(f"{name}_{part}" for name in HUE_TARGETS for part in ("cos", "sin"))


def regression_targets(params: FaceParams) -> np.ndarray:
    """float32 (len(TARGET_NAMES),): the linear fields, then (cos, sin) of each hue."""
    linear = [float(getattr(params, name)) for name in LINEAR_TARGETS]
    angles = [2 * math.pi * float(getattr(params, name)) for name in HUE_TARGETS]
    circular = [f(angle) for angle in angles for f in (math.cos, math.sin)]
    return np.array(linear + circular, dtype=np.float32)


def hue_from_targets(targets: torch.Tensor, name: str) -> torch.Tensor:
    """The hue in [0, 1) that a (B, T) regression output encodes for `name`."""
    index = TARGET_NAMES.index(f"{name}_cos")
    return torch.atan2(targets[:, index + 1], targets[:, index]).div(2 * math.pi).remainder(1.0)


class AttributeRegressor(DomainNetwork):
    """The demo domain's network: reads TARGET_NAMES from a render."""

    def __init__(self) -> None:
        super().__init__(len(TARGET_NAMES))


def load_regressor(path: str | Path) -> AttributeRegressor:
    """An AttributeRegressor saved as safetensors (a `build` result), in eval mode."""
    return load_domain_network(path, AttributeRegressor())


def explained_variance(regressor: AttributeRegressor, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """R^2 of the regressor's reading of each LINEAR_TARGETS attribute in `images` (B, 3, S, S) in
    [-1, 1] against its true `targets` (B, T): 1 reads it exactly, 0 no better than its mean."""
    with torch.no_grad():
        predicted = regressor(images).float()
    error = (predicted - targets).square().mean(dim=0)
    spread = targets.var(dim=0, unbiased=False)
    return {name: float(1 - error[i] / spread[i]) for i, name in enumerate(LINEAR_TARGETS)}
