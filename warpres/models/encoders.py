"""E0: the image-to-W+ encoders of e4e and pSp on an IR-SE ResNet body.

Both encoders share one network layout; they differ only in how the style heads become W+:

    x (B, 3, S, S) ─ input_layer ─ body (4 stages of IR / IR-SE units)
        stage ends  c0 (B, C0, S/2, S/2)    c1 (B, C1, S/4, S/4)
                    c2 (B, C2, S/8, S/8)    c3 (B, C3, S/16, S/16)
    feature pyramid p2 = up(c3) + latlayer1(c2)   (B, C3, S/8, S/8)
                    p1 = up(p2) + latlayer2(c1)   (B, C3, S/4, S/4)
    style heads     styles[0:3] read c3, styles[3:7] read p2, styles[7:] read p1; each → (B, w_dim)
    e4e  wplus[:, i] = styles[0](c3) + (styles[i](...) for i ≥ 1)   one shared code plus per-layer deltas
    pSp  wplus[:, i] = styles[i](...)                                every layer predicted directly
    both then add latent_avg (num_ws, w_dim).

For the FFHQ models (S = 256, IR-SE-50, widths 64/128/256/512) `enc_feat` is c1, the output of
body unit 6: (B, 128, 64, 64), which StyleRes / WarpRes consume.

Parameter and buffer names follow the official e4e / pSp / StyleRes modules exactly, so their
state dicts (with e4e/pSp's `encoder.` prefix stripped, or StyleRes's `ckpt['e4e']` as is) load
with `load_state_dict(strict=True)`. `latent_avg` is *not* part of that state dict: the official
checkpoints keep it beside the module weights, so here it is a non-persistent buffer that loaders
set with `StyleEncoder.set_latent_avg` (it starts at zero, i.e. W+ is the raw head output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from warpres.models.config import JsonConfig

EncoderKind = Literal["e4e", "psp"]
BodyMode = Literal["ir", "ir_se"]

# Units per body stage for each ResNet depth (the ArcFace IR / IR-SE backbones).
UNITS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
    152: (3, 8, 36, 3),
}

# W+ index ranges per pyramid level: [0, 3) coarse (c3), [3, 7) middle (p2), [7, num_ws) fine (p1).
COARSE_END = 3
MIDDLE_END = 7

BATCHNORM_EPS = 1e-5  # PyTorch's default, which the official checkpoints were trained with
STYLE_HEAD_SLOPE = 0.01  # official heads use nn.LeakyReLU() with its default slope, not StyleGAN's 0.2


@dataclass(frozen=True)
class EncoderConfig(JsonConfig):
    """Architecture of an e4e / pSp encoder; serialised as JSON next to the weights.

    kind:          'e4e' (shared code + per-layer deltas) or 'psp' (every layer predicted directly).
    num_layers:    ResNet depth of the body: 50, 100 or 152.
    mode:          'ir_se' (units with squeeze-excitation) or 'ir'.
    num_ws:        W+ layers of the generator the codes feed: 18 at 1024², 16 at 512², 14 at 256².
    w_dim:         width of one W code; also the width of the style heads' convolutions.
    input_size:    S, the encoder input is (B, 3, S, S); a power of two ≥ 32.
    stage_widths:  channels of the four body stages; (64, 128, 256, 512) in every official model.
    se_reduction:  channel reduction inside the squeeze-excitation gates (16 officially).
    feature_stage: which stage end is returned as enc_feat: 1 → c1 (B, C1, S/4, S/4), the
                   StyleRes / WarpRes default; 0, 2, 3 give S/2, S/8, S/16.
    """

    kind: EncoderKind = "e4e"
    num_layers: int = 50
    mode: BodyMode = "ir_se"
    num_ws: int = 18
    w_dim: int = 512
    input_size: int = 256
    stage_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    se_reduction: int = 16
    feature_stage: int = 1

    def __post_init__(self) -> None:
        # JSON gives lists; keep the frozen dataclass hashable and comparable.
        object.__setattr__(self, "stage_widths", tuple(int(c) for c in self.stage_widths))
        if self.kind not in ("e4e", "psp"):
            raise ValueError(f"encoder kind must be 'e4e' or 'psp', got {self.kind!r}")
        if self.num_layers not in UNITS_PER_STAGE:
            raise ValueError(
                f"encoder num_layers must be one of {sorted(UNITS_PER_STAGE)}, got {self.num_layers}"
            )
        if self.mode not in ("ir", "ir_se"):
            raise ValueError(f"encoder mode must be 'ir' or 'ir_se', got {self.mode!r}")
        if self.num_ws < 1 or self.w_dim < 1:
            raise ValueError(f"encoder num_ws and w_dim must be positive, got {self.num_ws} and {self.w_dim}")
        if self.input_size < 32 or self.input_size & (self.input_size - 1):
            # The coarsest level is S/16 and each head halves it down to 1x1, so S/16 must be a power of 2.
            raise ValueError(f"encoder input_size must be a power of two >= 32, got {self.input_size}")
        if len(self.stage_widths) != 4 or min(self.stage_widths) < 1:
            raise ValueError(f"encoder stage_widths must be four positive ints, got {self.stage_widths}")
        if self.se_reduction < 1:
            raise ValueError(f"encoder se_reduction must be positive, got {self.se_reduction}")
        if self.mode == "ir_se" and min(self.stage_widths) < self.se_reduction:
            raise ValueError(
                f"encoder se_reduction {self.se_reduction} leaves no gate channels for stage width "
                f"{min(self.stage_widths)}; lower se_reduction or widen the stages"
            )
        if self.feature_stage not in range(4):
            raise ValueError(f"encoder feature_stage must be 0, 1, 2 or 3, got {self.feature_stage}")

    @property
    def stage_end_indices(self) -> tuple[int, int, int, int]:
        """Body indices of the last unit of each stage: (2, 6, 20, 23) for IR-50.

        The official code hard-codes 6 / 20 / 23, which are the stage ends only for depth 50 (their
        100 / 152 encoders cannot run); tapping the stage ends is the same for 50 and works for all.
        """
        ends, total = [], 0
        for units in UNITS_PER_STAGE[self.num_layers]:
            total += units
            ends.append(total - 1)
        return tuple(ends)  # type: ignore[return-value]

    @property
    def feature_body_index(self) -> int:
        """Body unit whose output is enc_feat: 6 for IR-50 with feature_stage 1."""
        return self.stage_end_indices[self.feature_stage]

    @property
    def feature_channels(self) -> int:
        """Ce, the channels of enc_feat: 128 for the official models."""
        return self.stage_widths[self.feature_stage]

    @property
    def feature_size(self) -> int:
        """E, the side of enc_feat: S / 2^(feature_stage + 1), 64 for S = 256."""
        return self.input_size >> (self.feature_stage + 1)


class SqueezeExcitation(nn.Module):
    """Channel gate x * sigmoid(fc2(relu(fc1(mean_hw(x))))): (B, C, H, W) → (B, C, H, W)."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class IRUnit(nn.Module):
    """One improved-residual unit: (B, I, H, W) → (B, O, H/stride, W/stride).

    res_layer = BN → conv3x3 → PReLU → conv3x3 (carries the stride) → BN [→ SE]; the shortcut is a
    strided 1x1 conv + BN when the width changes, otherwise plain subsampling (a 1x1 max-pool,
    which has no weights, so no keys).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, se_reduction: int | None) -> None:
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels, eps=BATCHNORM_EPS),
            )
        layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels, eps=BATCHNORM_EPS),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=BATCHNORM_EPS),
        ]
        if se_reduction is not None:
            layers.append(SqueezeExcitation(out_channels, se_reduction))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def ir_input_layer(width: int) -> nn.Sequential:
    """The stem of every IR / IR-SE backbone: 3x3 conv -> BN -> PReLU (keys input_layer.{0,1,2})."""
    return nn.Sequential(
        nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False),
        nn.BatchNorm2d(width, eps=BATCHNORM_EPS),
        nn.PReLU(width),
    )


def ir_body(widths: tuple[int, ...], num_layers: int, se_reduction: int | None) -> nn.Sequential:
    """The IR / IR-SE units of a 50/100/152-layer backbone (keys body.N.*); every stage halves
    the resolution in its first unit, including the first stage."""
    units: list[nn.Module] = []
    in_channels = widths[0]
    for out_channels, num_units in zip(widths, UNITS_PER_STAGE[num_layers], strict=True):
        for u in range(num_units):
            units.append(IRUnit(in_channels, out_channels, 2 if u == 0 else 1, se_reduction))
            in_channels = out_channels
    return nn.Sequential(*units)


class EqualizedLinear(nn.Module):
    """StyleGAN's equalised-learning-rate linear layer (learning-rate multiplier 1): (B, I) → (B, O).

    The stored weight is N(0, 1); the 1/sqrt(I) He scale is applied at run time, so official
    weights must go through this layer, not a plain nn.Linear.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class StyleHead(nn.Module):
    """Map-to-style block: (B, I, R, R) → (B, w_dim).

    log2(R) stride-2 3x3 convs (each followed by a LeakyReLU) shrink R×R to 1×1, then an
    equalised linear layer. Conv k sits at `convs.{2k}`, its activation at `convs.{2k+1}`.
    """

    def __init__(self, in_channels: int, w_dim: int, resolution: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for k in range(int(math.log2(resolution))):
            layers += [
                nn.Conv2d(in_channels if k == 0 else w_dim, w_dim, kernel_size=3, stride=2, padding=1),
                nn.LeakyReLU(STYLE_HEAD_SLOPE),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualizedLinear(w_dim, w_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def pyramid_level(style_index: int) -> int:
    """Pyramid level the head of W+ layer `style_index` reads: 0 coarse (c3), 1 middle (p2), 2 fine (p1)."""
    return 0 if style_index < COARSE_END else 1 if style_index < MIDDLE_END else 2


def _upsample_add(top: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    """FPN merge: resize `top` to `lateral`'s size and add (B, C, H, W).

    Bilinear with align_corners=True, as the official weights were trained with.
    """
    return F.interpolate(top, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class StyleEncoder(nn.Module):
    """The e4e (`config.kind == 'e4e'`) or pSp (`'psp'`) encoder.

    forward(x (B, 3, S, S) in [-1, 1]) → (wplus (B, num_ws, w_dim), enc_feat (B, Ce, E, E)).
    Call `.eval()` before inference: the body's BatchNorms use running statistics only then.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        widths = config.stage_widths
        se_reduction = config.se_reduction if config.mode == "ir_se" else None

        self.input_layer = ir_input_layer(widths[0])
        self.body = ir_body(widths, config.num_layers, se_reduction)

        level_sizes = (config.input_size // 16, config.input_size // 8, config.input_size // 4)
        self.styles = nn.ModuleList(
            StyleHead(widths[3], config.w_dim, level_sizes[pyramid_level(i)]) for i in range(config.num_ws)
        )
        self.latlayer1 = nn.Conv2d(widths[2], widths[3], kernel_size=1)
        self.latlayer2 = nn.Conv2d(widths[1], widths[3], kernel_size=1)

        # Kept out of state_dict() so official module weights load strict; see set_latent_avg.
        self.register_buffer("latent_avg", torch.zeros(config.num_ws, config.w_dim), persistent=False)

    @torch.no_grad()
    def set_latent_avg(self, latent_avg: torch.Tensor | None) -> None:
        """Set the code added to every prediction; None resets it to zero.

        Accepts the shapes official checkpoints store: (num_ws, w_dim) (e4e, StyleRes, pSp), or one
        mean code (w_dim,) / (1, w_dim) (a generator's W average), which is used on every layer.
        """
        if latent_avg is None:
            self.latent_avg.zero_()
            return
        num_ws, w_dim = self.config.num_ws, self.config.w_dim
        shape = tuple(latent_avg.shape)
        if shape not in ((num_ws, w_dim), (1, w_dim), (w_dim,)):
            raise ValueError(
                f"latent_avg has shape {shape}; expected ({num_ws}, {w_dim}), (1, {w_dim}) or ({w_dim},)"
            )
        self.latent_avg.copy_(latent_avg.reshape(-1, w_dim).expand(num_ws, w_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, 3, S, S) in [-1, 1] → wplus (B, num_ws, w_dim) incl. latent_avg, enc_feat (B, Ce, E, E).

        For the FFHQ config: (B, 3, 256, 256) → (B, 18, 512), (B, 128, 64, 64).
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != cfg.input_size or x.shape[3] != cfg.input_size:
            raise ValueError(
                f"encoder input must be (B, 3, {cfg.input_size}, {cfg.input_size}), got {tuple(x.shape)}"
            )

        x = self.input_layer(x)
        stage_ends: list[torch.Tensor] = []
        end_indices = cfg.stage_end_indices
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in end_indices:
                stage_ends.append(x)
        _, c1, c2, c3 = stage_ends

        # Build only the pyramid levels some head reads (small num_ws skips the finer ones).
        levels = [c3]
        if cfg.num_ws > COARSE_END:
            levels.append(_upsample_add(c3, self.latlayer1(c2)))
        if cfg.num_ws > MIDDLE_END:
            levels.append(_upsample_add(levels[1], self.latlayer2(c1)))

        if cfg.kind == "e4e":
            base = self.styles[0](c3)
            codes = [base] + [base + self.styles[i](levels[pyramid_level(i)]) for i in range(1, cfg.num_ws)]
        else:
            codes = [head(levels[pyramid_level(i)]) for i, head in enumerate(self.styles)]
        wplus = torch.stack(codes, dim=1) + self.latent_avg
        return wplus, stage_ends[cfg.feature_stage]
