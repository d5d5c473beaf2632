"""The domain network: regresses a render's attributes, and its features measure perceptual distance.

ImageNet VGG weights cannot be downloaded, so the demo domain brings its own perceptual
network: a small residual CNN trained to read the renderer's continuous attributes from the
image. Its outputs measure what an edit achieved (smile, pose, hair colour, glasses, age);
its four stage activations feed `PerceptualLoss` (training) and the domain perceptual distance
(evaluation), the way LPIPS uses a classifier's features.

Hues are circular, so each is regressed as (cos, sin) of its angle.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from warpres.checkpoints.safe_load import load_state_strict
from warpres.demo.renderer import FaceParams
from warpres.errors import CheckpointError

LINEAR_TARGETS = ("smile", "yaw", "pitch", "glasses", "age", "skin_tone", "face_width", "jaw_width", "eye_value",
                  "hair_saturation", "hair_value", "brow_thickness", "mouth_width", "freckle_density")
HUE_TARGETS = ("hair_hue", "clothing_hue", "background_hue")
TARGET_NAMES = LINEAR_TARGETS + tuple(f"{name}_{part}" for name in HUE_TARGETS for part in ("cos", "sin"))
STAGE_WIDTHS = (32, 64, 128, 192, 256)


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


class _DownBlock(nn.Module):
    """(B, Cin, H, W) -> (B, Cout, H/2, W/2): two 3x3 convs with LeakyReLU, plus a strided 1x1 skip."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.leaky_relu(self.conv1(x), 0.2))
        return F.leaky_relu(y + self.skip(x), 0.2)


class AttributeRegressor(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> attributes (B, len(TARGET_NAMES)); `features` gives the
    four stage activations (B, C, S/2**k, S/2**k), k = 1..4, for perceptual distances."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, STAGE_WIDTHS[0], 3, padding=1)
        self.stages = nn.ModuleList(_DownBlock(a, b) for a, b in zip(STAGE_WIDTHS, STAGE_WIDTHS[1:], strict=False))
        self.head = nn.Linear(STAGE_WIDTHS[-1], len(TARGET_NAMES))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.leaky_relu(self.stem(images), 0.2)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def attributes(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The attribute outputs (B, len(TARGET_NAMES)) of `features` (what `features` returned)."""
        return self.head(features[-1].mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.attributes(self.features(images))


class DomainFeatures(nn.Module):
    """A frozen regressor's `features` as a module, the form `PerceptualLoss` takes."""

    def __init__(self, regressor: AttributeRegressor) -> None:
        super().__init__()
        self.regressor = regressor.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.regressor.features(images)


def load_regressor(path: str | Path) -> AttributeRegressor:
    """An AttributeRegressor saved as safetensors (a `build` result), in eval mode."""
    regressor = AttributeRegressor()
    try:
        load_state_strict(regressor, load_file(str(path)), str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return regressor.eval()


def load_domain_features(path: str | Path) -> DomainFeatures:
    """The frozen stage features of a saved AttributeRegressor, for `PerceptualLoss`."""
    return DomainFeatures(load_regressor(path))


def explained_variance(regressor: AttributeRegressor, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """R^2 of the regressor's reading of each LINEAR_TARGETS attribute in `images` (B, 3, S, S) in
    [-1, 1] against its true `targets` (B, T): 1 reads it exactly, 0 no better than its mean."""
    with torch.no_grad():
        predicted = regressor(images).float()
    error = (predicted - targets).square().mean(dim=0)
    spread = targets.var(dim=0, unbiased=False)
    return {name: float(1 - error[i] / spread[i]) for i, name in enumerate(LINEAR_TARGETS)}


def feature_distance(maps_a: list[torch.Tensor], maps_b: list[torch.Tensor]) -> torch.Tensor:
    """Per image (B,): mean over layers of the mean squared difference of unit-normalised features
    (channel-wise, as LPIPS does before its learned weights)."""
    total = maps_a[0].new_zeros(maps_a[0].shape[0])
    for fa, fb in zip(maps_a, maps_b, strict=True):
        total = total + (F.normalize(fa, dim=1) - F.normalize(fb, dim=1)).square().sum(dim=1).mean(dim=(1, 2))
    return total / len(maps_a)
