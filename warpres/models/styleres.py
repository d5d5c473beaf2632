"""StyleRes residual branch (Pehlivan et al., CVPR 2023) with the official parameter layout.

E1 = `FeatureAlignment` then `FeatureExtraction` turns the encoder's high-rate features and the
generator's features of the unedited latent into a residual (B, Cg, E, E); E2 = `GateNetwork`
merges that residual into the generator features of the edited latent. Submodule names match
the official `synthesis.b{E}.modify_feature_{alignment,extraction,gates}.*` keys, so the official
weights load with `strict=True` after the prefix mapping in `StyleResBranch.official_prefix_map`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.config import JsonConfig
from warpres.models.shapes import check_shape, spatial_size

LRELU_SLOPE = 0.2


class ResLayers(nn.Module):
    """Residual block: conv3x3 -> LeakyReLU(0.2) -> conv3x3 (stride `stride`) plus a shortcut.

    The shortcut is the identity when shape is kept, else a bias-free 1x1 conv with the same
    stride. No normalisation and no activation after the sum, as in the official block.
    (B, in_channels, H, W) -> (B, out_channels, H / stride, W / stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if in_channels == out_channels and stride == 1:
            self.shortcut_layer: nn.Module = nn.Identity()
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
            )
        self.res_layer = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class FeatureAlignment(nn.Module):
    """E1a: U-shaped aligner of encoder and generator features (official width 512).

    cat(enc (B, 128, 64, 64), gen (B, 512, 64, 64)) -> 1x1 -> down to E/2 and E/4 -> up with
    bilinear (align_corners=True, as official) and additive skips -> 1x1 -> (B, 512, 64, 64).
    """

    def __init__(self, in_channels: int, out_channels: int, t_channel: int = 512) -> None:
        super().__init__()
        self.first_layer = nn.Conv2d(in_channels, t_channel, kernel_size=1)
        self.conv1 = nn.Sequential(ResLayers(t_channel, t_channel))
        self.conv2 = nn.Sequential(ResLayers(t_channel, t_channel, 2), ResLayers(t_channel, t_channel))
        self.conv3 = nn.Sequential(ResLayers(t_channel, t_channel, 2), ResLayers(t_channel, t_channel))
        self.dconv1 = nn.Sequential(ResLayers(t_channel, t_channel), ResLayers(t_channel, t_channel))
        self.dconv2 = nn.Sequential(ResLayers(t_channel, t_channel), ResLayers(t_channel, t_channel))
        # Never called by the official forward, but present in the official checkpoint: kept
        # so that checkpoint loads strictly.
        self.dconv3 = nn.Sequential(ResLayers(t_channel, t_channel), ResLayers(t_channel, t_channel))
        self.out_layer = nn.Conv2d(t_channel, out_channels, kernel_size=1)

    def forward(self, encoder_feats: torch.Tensor, generator_feats: torch.Tensor) -> torch.Tensor:
        f1 = self.conv1(self.first_layer(torch.cat((encoder_feats, generator_feats), dim=1)))
        f2 = self.conv2(f1)
        f3 = self.conv3(f2)
        up = F.interpolate(f3, scale_factor=2.0, mode="bilinear", align_corners=True)
        up = F.interpolate(self.dconv1(up + f2), scale_factor=2.0, mode="bilinear", align_corners=True)
        return self.out_layer(self.dconv2(up + f1))


class FeatureExtraction(nn.Module):
    """E1b: 1x1 to `t_channel` then three residual blocks, (B, 512, E, E) -> (B, 512, E, E)."""

    def __init__(self, in_channels: int, out_channels: int, t_channel: int = 512) -> None:
        super().__init__()
        self.first_layer = nn.Conv2d(in_channels, t_channel, kernel_size=1)
        self.convs = nn.Sequential(
            ResLayers(t_channel, t_channel),
            ResLayers(t_channel, out_channels),
            ResLayers(out_channels, out_channels),
        )

    def forward(self, aligned_feats: torch.Tensor) -> torch.Tensor:
        return self.convs(self.first_layer(aligned_feats))


class GateNetwork(nn.Module):
    """E2: predicts a feature change deltaF and a soft gate from edited features and the residual.

    Both inputs (B, in_channels, E, E) are reduced by a 3x3 conv to `t_channel` and concatenated
    (2 * t_channel = 512 officially); two residual stacks give deltaF (B, out_channels, E, E) and
    the gate logits (B, 1, E, E).
    """

    def __init__(self, in_channels: int, out_channels: int, t_channel: int = 256) -> None:
        super().__init__()
        joint = 2 * t_channel
        self.down1 = nn.Conv2d(in_channels, t_channel, kernel_size=3, padding=1)
        self.down2 = nn.Conv2d(in_channels, t_channel, kernel_size=3, padding=1)
        self.convs = nn.Sequential(
            ResLayers(joint, joint), ResLayers(joint, out_channels), ResLayers(out_channels, out_channels)
        )
        self.convs2 = nn.Sequential(
            ResLayers(joint, joint), ResLayers(joint, out_channels), ResLayers(out_channels, 1)
        )

    def forward(self, generator_feats: torch.Tensor, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (deltaF (B, out_channels, E, E), gate (B, 1, E, E) in (0, 1))."""
        x = torch.cat((self.down1(generator_feats), self.down2(residual)), dim=1)
        return self.convs(x), torch.sigmoid(self.convs2(x))


@dataclass(frozen=True)
class StyleResConfig(JsonConfig):
    """Widths of the StyleRes branch; the defaults are the official FFHQ model.

    enc_channels: Ce, encoder features at E (e4e body unit 6: 128).
    feat_channels: Cg, generator features at E (512 at E=64).
    align_channels: FeatureAlignment width and output (official 512).
    extract_channels: FeatureExtraction width (official 512).
    gate_channels: GateNetwork reduction width per input (official 256).
    """

    enc_channels: int = 128
    feat_channels: int = 512
    align_channels: int = 512
    extract_channels: int = 512
    gate_channels: int = 256

    def __post_init__(self) -> None:
        bad = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) < 1}
        if bad:
            raise ValueError(f"StyleRes widths must be positive, got {bad}")


class StyleResBranch(nn.Module):
    """The StyleRes residual branch behind the family-agnostic Editor API (ARCHITECTURE §1).

    `encode_residual` (E1) depends only on the image, so the runtime caches its output; `fuse`
    (E2) reruns per edit.
    """

    family: ClassVar[str] = "styleres"
    uses_flow: ClassVar[bool] = False
    # in the official checkpoint, never called by the forward: not trained
    unused_submodules: ClassVar[tuple[str, ...]] = ("alignment.dconv3",)
    # our submodule prefix -> official submodule name inside synthesis.b{E}
    OFFICIAL_NAMES: ClassVar[dict[str, str]] = {
        "alignment.": "modify_feature_alignment.",
        "extraction.": "modify_feature_extraction.",
        "gates.": "modify_feature_gates.",
    }

    def __init__(self, config: StyleResConfig | None = None) -> None:
        super().__init__()
        self.config = config or StyleResConfig()
        c = self.config
        self.alignment = FeatureAlignment(c.enc_channels + c.feat_channels, c.align_channels, c.align_channels)
        self.extraction = FeatureExtraction(c.align_channels, c.feat_channels, c.extract_channels)
        self.gates = GateNetwork(c.feat_channels, c.feat_channels, c.gate_channels)

    @classmethod
    def official_prefix_map(cls, embed_res: int = 64) -> dict[str, str]:
        """Our state-dict prefix -> the official generator state-dict prefix, e.g.
        "alignment." -> "synthesis.b64.modify_feature_alignment."."""
        return {ours: f"synthesis.b{embed_res}.{theirs}" for ours, theirs in cls.OFFICIAL_NAMES.items()}

    def encode_residual(self, enc_feat: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """E1: enc_feat (B, Ce, E, E), feat of the unedited latent (B, Cg, E, E) -> residual (B, Cg, E, E)."""
        c = self.config
        # two stride-2 levels must upsample back to exactly E
        batch, size = spatial_size("feat", feat, multiple_of=4)
        check_shape("feat", feat, ("B", c.feat_channels, size, size))
        check_shape("enc_feat", enc_feat, (batch, c.enc_channels, size, size))
        return self.extraction(self.alignment(enc_feat, feat))

    def fuse(self, residual: torch.Tensor, feat_edit: torch.Tensor) -> torch.Tensor:
        """E2: residual (B, Cg, E, E), feat_edit (B, Cg, E, E) -> feat_fused (B, Cg, E, E)."""
        return self.fuse_with_additions(residual, feat_edit)[0]

    def fuse_with_additions(self, residual: torch.Tensor, feat_edit: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E2 and what it adds: (feat_fused, deltaF), each (B, Cg, E, E). deltaF is the official
        "additions", which the training's feature regulariser keeps small.

        feat_edit + gate * deltaF is the official x * (1 - gate) + (x + deltaF) * gate with one
        multiply instead of three (equal up to float rounding).
        """
        c = self.config
        batch, size = spatial_size("feat_edit", feat_edit, multiple_of=1)
        check_shape("feat_edit", feat_edit, ("B", c.feat_channels, size, size))
        check_shape("residual", residual, (batch, c.feat_channels, size, size))
        delta, gate = self.gates(feat_edit, residual)
        return feat_edit + gate * delta, delta


def branch_state_from_official(
    generator_state: Mapping[str, torch.Tensor], embed_res: int = 64
) -> dict[str, torch.Tensor]:
    """The StyleRes branch's tensors out of an official generator state dict, under our names.

    Keys outside the three official submodules (mapping, other synthesis layers) are left out;
    pass the result to `StyleResBranch.load_state_dict(..., strict=True)` to catch gaps.
    """
    renamed = {}
    for ours, theirs in StyleResBranch.official_prefix_map(embed_res).items():
        for key, value in generator_state.items():
            if key.startswith(theirs):
                renamed[ours + key[len(theirs):]] = value
    return renamed
