"""VGG-16 feature extractor for the perceptual loss (our own module, torchvision-compatible keys).

The network is the convolutional part of VGG-16 (configuration D of Simonyan & Zisserman): 13
3x3 convolutions with ReLU and four 2x2 max-pools between the blocks used here (the fifth pool
and the classifier are not needed). Its state-dict keys follow torchvision's ``vgg16`` layout for
``features``: ``features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}``, so a torchvision
``vgg16`` state dict saved with ``torch.save(model.state_dict(), path)`` loads directly; its
``classifier.*`` keys are ignored.

Input: RGB (B, 3, H, W) in [-1, 1]. It is mapped to [0, 1] by (x + 1) / 2 and then normalised
with the ImageNet statistics mean = (0.485, 0.456, 0.406), std = (0.229, 0.224, 0.225), the
normalisation torchvision's ImageNet weights expect. Output: the activations after relu1_2,
relu2_2, relu3_3 and relu4_3, i.e. (B, 64, H, W), (B, 128, H/2, W/2), (B, 256, H/4, W/4),
(B, 512, H/8, W/8).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from warpres.errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Configuration D up to relu4_3: channel counts, "M" = 2x2 max-pool.
_CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
# Indices (in `features`) of the ReLUs whose outputs are returned: relu1_2, relu2_2, relu3_3, relu4_3.
TAP_INDICES = (3, 8, 15, 22)
LAYER_NAMES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
# torchvision's vgg16 has 13 convs in `features` up to index 28 (the last conv, conv5_3).
_ALL_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)


def _build_features() -> nn.Sequential:
    """All of torchvision's vgg16.features (indices 0..30), so the key indices match exactly."""
    layers: list[nn.Module] = []
    in_channels = 3
    for item in (*_CONFIG, "M", 512, 512, 512, "M"):
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers.append(nn.Conv2d(in_channels, int(item), kernel_size=3, padding=1))
            layers.append(nn.ReLU(inplace=False))
            in_channels = int(item)
    return nn.Sequential(*layers)


class VGG16Features(nn.Module):
    """VGG-16 (configuration D) features; forward returns [relu1_2, relu2_2, relu3_3, relu4_3].

    All 13 convolutions are kept so that the state dict has every ``features.*`` key of
    torchvision's ``vgg16``; forward stops after relu4_3 (conv5_* are loaded but unused).
    Parameters are frozen (requires_grad=False); gradients still flow to the input.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = _build_features()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> VGG16Features:
        """Load a torchvision-layout VGG-16 state dict from `path` (torch.load(weights_only=True))."""
        model = cls()
        model.load_torchvision_state_dict(path)
        return model

    def load_torchvision_state_dict(self, path: str | Path) -> None:
        """Strictly load the ``features.*`` keys (names and shapes) of a plain state dict file.

        ``classifier.*`` keys are ignored; any other missing, unexpected or misshaped key raises
        `CheckpointError` naming the file and the key.
        """
        path = Path(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as exc:
            raise CheckpointError(f"{path}: VGG-16 weights file not found") from exc
        except Exception as exc:  # unpickling refused, corrupt file, ...
            raise CheckpointError(
                f"{path}: cannot read VGG-16 weights with torch.load(weights_only=True): {exc}"
            ) from exc
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a plain state dict, got {type(state).__name__}")
        expected = self.state_dict()
        features = {key: value for key, value in state.items() if not str(key).startswith("classifier.")}
        for key, reference in expected.items():
            if key not in features:
                raise CheckpointError(f"{path}: missing VGG-16 key {key!r}")
            value = features[key]
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: key {key!r} is not a tensor ({type(value).__name__})")
            if tuple(value.shape) != tuple(reference.shape):
                raise CheckpointError(
                    f"{path}: key {key!r} has shape {tuple(value.shape)}, expected {tuple(reference.shape)}"
                )
        unexpected = sorted(str(key) for key in features if key not in expected)
        if unexpected:
            raise CheckpointError(f"{path}: unexpected VGG-16 key {unexpected[0]!r}")
        self.load_state_dict({key: features[key] for key in expected}, strict=True)

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (B, 3, H, W) in [-1, 1], H and W multiples of 8 -> the four ReLU activations."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be an RGB batch (B, 3, H, W), got {tuple(images.shape)}")
        x = ((images + 1.0) * 0.5 - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        outputs: list[torch.Tensor] = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in TAP_INDICES:
                outputs.append(x)
                if index == TAP_INDICES[-1]:
                    break
        return outputs
