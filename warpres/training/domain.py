"""A domain's own perceptual network, for domains without ImageNet VGG weights (the demo's).

A small residual CNN trained to read a domain's attributes from its images; its four stage
activations feed `PerceptualLoss` and a perceptual distance, the way LPIPS uses a classifier's
features. What the outputs mean (the demo's face attributes) belongs to the domain
(`warpres.demo.regressor`); training only needs the features.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from warpres.checkpoints.safe_load import load_safetensors, load_state_strict
from warpres.errors import CheckpointError

STAGE_WIDTHS = (32, 64, 128, 192, 256)


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


class DomainNetwork(nn.Module):
    """images (B, 3, S, S) in [-1, 1] -> `outputs` attributes; `features` gives the four stage
    activations (B, C, S/2**k, S/2**k), k = 1..4, for perceptual distances."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, STAGE_WIDTHS[0], 3, padding=1)
        self.stages = nn.ModuleList(_DownBlock(a, b) for a, b in zip(STAGE_WIDTHS, STAGE_WIDTHS[1:], strict=False))
        self.head = nn.Linear(STAGE_WIDTHS[-1], outputs)

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.leaky_relu(self.stem(images), 0.2)
        maps = []
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        return maps

    def attributes(self, features: list[torch.Tensor]) -> torch.Tensor:
        """The attribute outputs (B, outputs) of `features` (what `features` returned)."""
        return self.head(features[-1].mean(dim=(2, 3)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.attributes(self.features(images))


class DomainFeatures(nn.Module):
    """A frozen network's `features` as a module, the form `PerceptualLoss` takes."""

    def __init__(self, network: DomainNetwork) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.network.features(images)


def load_domain_network(path: str | Path, network: DomainNetwork | None = None) -> DomainNetwork:
    """A DomainNetwork saved as safetensors, in eval mode: into `network`, or into a new one as
    wide as the file's head."""
    state = load_safetensors(path)
    if network is None:
        if "head.weight" not in state:
            raise CheckpointError(f"{path}: not a domain network (no head.weight)")
        network = DomainNetwork(state["head.weight"].shape[0])
    load_state_strict(network, state, str(path))
    return network.eval()


def load_domain_features(path: str | Path) -> DomainFeatures:
    """The frozen stage features of a saved DomainNetwork, for `PerceptualLoss`."""
    return DomainFeatures(load_domain_network(path))


def feature_distance(maps_a: list[torch.Tensor], maps_b: list[torch.Tensor]) -> torch.Tensor:
    """Per image (B,): mean over layers of the mean squared difference of unit-normalised features
    (channel-wise, as LPIPS does before its learned weights)."""
    total = maps_a[0].new_zeros(maps_a[0].shape[0])
    for fa, fb in zip(maps_a, maps_b, strict=True):
        total = total + (F.normalize(fa, dim=1) - F.normalize(fb, dim=1)).square().sum(dim=1).mean(dim=(1, 2))
    return total / len(maps_a)
