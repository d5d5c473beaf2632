"""WarpRes residual branch ("Warping the Residuals for Image Editing with StyleGAN", Yildirim,
Pehlivan, Dundar, IJCV 2024). No public code exists; the layers follow the paper's description.

E1 (`ResidualEncoder`) encodes the image's high-rate residual once per image, the flow head
(`warpres.models.flow.FlowHead`) predicts per edit how the edit moved the content, the residual
is warped by that flow, and E2 (`ResidualRefiner`) adapts the warped residual to the edited
features: feat_fused = feat_edit + E2(warp(residual, flow), feat_edit).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.config import JsonConfig
from warpres.models.flow import FlowHead, warp
from warpres.models.shapes import check_shape, spatial_size
from warpres.models.styleres import ResLayers

ENCODER_LEVELS = 3  # stride-2 blocks in E1, so E must be a multiple of 2**3
REFINER_BLOCKS = 4


class ResidualEncoder(nn.Module):
    """E1: encoder-decoder over cat(enc_feat, feat) with additive skips.

    (B, Ce, E, E), (B, Cg, E, E) -> 1x1 to `width` -> 3 stride-2 ResLayers down to E/8 -> 3 x
    (bilinear x2, + same-resolution encoder activation, ResLayers) back to E -> 1x1 to
    (B, Cg, E, E).
    """

    def __init__(self, enc_channels: int, feat_channels: int, width: int = 128) -> None:
        super().__init__()
        self.stem = nn.Conv2d(enc_channels + feat_channels, width, kernel_size=1)
        self.down = nn.ModuleList(ResLayers(width, width, stride=2) for _ in range(ENCODER_LEVELS))
        self.up = nn.ModuleList(ResLayers(width, width) for _ in range(ENCODER_LEVELS))
        self.out_layer = nn.Conv2d(width, feat_channels, kernel_size=1)

    def forward(self, enc_feat: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        x = self.stem(torch.cat((enc_feat, feat), dim=1))
        skips = []
        for block in self.down:
            skips.append(x)
            x = block(x)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            x = block(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False) + skip)
        return self.out_layer(x)


class ResidualRefiner(nn.Module):
    """E2: a feature correction from the warped residual and the edited features.

    (B, Cg, E, E) each -> 3x3 to width/2 -> concat (B, width, E, E) -> 4 ResLayers -> 3x3 to
    (B, Cg, E, E). The last conv starts at zero, so an untrained refiner adds nothing and the
    branch starts as the plain edited generator.
    """

    def __init__(self, feat_channels: int, width: int = 128) -> None:
        super().__init__()
        if width % 2:
            raise ValueError(f"ResidualRefiner width must be even (two halves are concatenated), got {width}")
        self.residual_in = nn.Conv2d(feat_channels, width // 2, kernel_size=3, padding=1)
        self.feat_in = nn.Conv2d(feat_channels, width // 2, kernel_size=3, padding=1)
        self.blocks = nn.Sequential(*(ResLayers(width, width) for _ in range(REFINER_BLOCKS)))
        self.out_layer = nn.Conv2d(width, feat_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.out_layer.weight)
        nn.init.zeros_(self.out_layer.bias)

    def forward(self, warped_residual: torch.Tensor, feat_edit: torch.Tensor) -> torch.Tensor:
        x = torch.cat((self.residual_in(warped_residual), self.feat_in(feat_edit)), dim=1)
        return self.out_layer(self.blocks(x))


@dataclass(frozen=True)
class WarpResConfig(JsonConfig):
    """Widths of the WarpRes branch; defaults are for FFHQ at E = 64.

    enc_channels: Ce, encoder features at E (e4e: 128).
    feat_channels: Cg, generator features at E (512).
    tap_quarter_channels, tap_half_channels: generator block outputs at E/4 and E/2 (512, 512).
    width: E1 and E2 width (128).
    adapter_channels: per-scale flow-head adapter width (64); the flow predictors run at twice it.
    """

    enc_channels: int = 128
    feat_channels: int = 512
    tap_quarter_channels: int = 512
    tap_half_channels: int = 512
    width: int = 128
    adapter_channels: int = 64

    def __post_init__(self) -> None:
        bad = {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) < 1}
        if bad:
            raise ValueError(f"WarpRes widths must be positive, got {bad}")
        if self.width % 2:
            raise ValueError(f"WarpRes width must be even, got {self.width}")


class WarpResBranch(nn.Module):
    """The WarpRes residual branch behind the family-agnostic Editor API (ARCHITECTURE §1).

    Per image: `encode_residual` (cacheable). Per edit: `estimate_flow`, then `fuse`.
    """

    family: ClassVar[str] = "warpres"
    uses_flow: ClassVar[bool] = True
    unused_submodules: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: WarpResConfig | None = None) -> None:
        super().__init__()
        self.config = config or WarpResConfig()
        c = self.config
        self.residual_encoder = ResidualEncoder(c.enc_channels, c.feat_channels, c.width)
        self.flow_head = FlowHead(c.tap_quarter_channels, c.tap_half_channels, c.feat_channels, c.adapter_channels)
        self.refiner = ResidualRefiner(c.feat_channels, c.width)

    def encode_residual(self, enc_feat: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        """E1: enc_feat (B, Ce, E, E), feat of the unedited latent (B, Cg, E, E) -> residual (B, Cg, E, E)."""
        c = self.config
        batch, size = spatial_size("feat", feat, multiple_of=2**ENCODER_LEVELS)
        check_shape("feat", feat, ("B", c.feat_channels, size, size))
        check_shape("enc_feat", enc_feat, (batch, c.enc_channels, size, size))
        return self.residual_encoder(enc_feat, feat)

    def estimate_flow(
        self,
        tap_quarter: torch.Tensor,
        tap_half: torch.Tensor,
        feat: torch.Tensor,
        tap_quarter_edit: torch.Tensor,
        tap_half_edit: torch.Tensor,
        feat_edit: torch.Tensor,
    ) -> torch.Tensor:
        """Taps and features of both latents (see FlowHead) -> flow (B, 2, E, E) in pixels."""
        return self.flow_head(tap_quarter, tap_half, feat, tap_quarter_edit, tap_half_edit, feat_edit)

    def fuse(self, residual: torch.Tensor, feat_edit: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """residual (B, Cg, E, E), feat_edit (B, Cg, E, E), flow (B, 2, E, E) -> feat_fused (B, Cg, E, E)."""
        return self.fuse_with_additions(residual, feat_edit, flow)[0]

    def fuse_with_additions(self, residual: torch.Tensor, feat_edit: torch.Tensor,
                            flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`fuse` and what E2 adds to feat_edit: (feat_fused, additions), each (B, Cg, E, E)."""
        c = self.config
        batch, size = spatial_size("feat_edit", feat_edit, multiple_of=1)
        check_shape("feat_edit", feat_edit, ("B", c.feat_channels, size, size))
        check_shape("residual", residual, (batch, c.feat_channels, size, size))
        check_shape("flow", flow, (batch, 2, size, size))
        additions = self.refiner(warp(residual, flow), feat_edit)
        return feat_edit + additions, additions
