"""Identity loss of pSp / e4e / StyleRes training on an ArcFace IR-SE-50 face recogniser.

    backbone   x (B, 3, 112, 112) in [-1, 1] ─ input_layer ─ body (24 IR-SE units for depth 50)
               ─ output_layer (BN2d, Dropout, Flatten, Linear(512·7·7 → 512), BN1d) ─ L2 norm → (B, 512)
    loss       L_id = mean_b (1 - cos(f(crop(y_hat_b)), f(crop(y_b))))

Parameter and buffer names follow pSp's `model_ir_se50.pth` (a plain state dict) exactly, so it
loads with strict key and shape checks through `load_identity_backbone`. When no weights are
given, `identity_loss_or_none` returns None and the trainer runs with lambda_id = 0.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from warpres.checkpoints.safe_load import load_state_strict, load_torch_checkpoint, require_state_dict
from warpres.models.encoders import BATCHNORM_EPS, UNITS_PER_STAGE, ir_body, ir_input_layer

log = logging.getLogger(__name__)

ARCFACE_INPUT_SIZE = 112
ARCFACE_STAGE_WIDTHS = (64, 128, 256, 512)
ARCFACE_EMBEDDING_DIM = 512
ARCFACE_SE_REDUCTION = 16
# pSp / e4e train the identity loss with drop_ratio 0.6; the dropout is inactive in eval mode anyway.
ARCFACE_DROP_RATIO = 0.6

# Face region of a 256x256 aligned FFHQ image that pSp / e4e feed to ArcFace: rows 35:223, cols 32:220.
FACE_CROP_256 = (35, 223, 32, 220)

NO_WEIGHTS_WARNING = "identity loss disabled: no IR-SE-50 weights given (--id-weights)"


class ArcFaceBackbone(nn.Module):
    """ArcFace IR / IR-SE ResNet: (B, 3, S, S) in [-1, 1] → L2-normalised embeddings (B, D).

    Defaults are pSp's IR-SE-50 (S = 112, D = 512). State dict layout:
        input_layer.0   Conv2d(3, 64, 3x3, no bias)           .weight
        input_layer.1   BatchNorm2d(64)                        .weight .bias .running_mean .running_var
                                                               .num_batches_tracked
        input_layer.2   PReLU(64)                              .weight
        body.N          IRUnit (N = 0..23 for depth 50), keys res_layer.* and, where the width
                        changes (N = 3, 7, 21), shortcut_layer.0 (conv) / shortcut_layer.1 (BN)
        output_layer.0  BatchNorm2d(512)                       (5 tensors as above)
        output_layer.1  Dropout, output_layer.2 Flatten        (no tensors)
        output_layer.3  Linear(512 * (S/16)^2, D)              .weight .bias
        output_layer.4  BatchNorm1d(D, affine)                 (5 tensors; 3 if affine=False)
    Call `.eval()` before use: BatchNorms use their running statistics only then.
    """

    def __init__(
        self,
        num_layers: int = 50,
        mode: str = "ir_se",
        input_size: int = ARCFACE_INPUT_SIZE,
        stage_widths: tuple[int, int, int, int] = ARCFACE_STAGE_WIDTHS,
        embedding_dim: int = ARCFACE_EMBEDDING_DIM,
        se_reduction: int = ARCFACE_SE_REDUCTION,
        drop_ratio: float = ARCFACE_DROP_RATIO,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if num_layers not in UNITS_PER_STAGE:
            raise ValueError(f"ArcFace num_layers must be one of {sorted(UNITS_PER_STAGE)}, got {num_layers}")
        if mode not in ("ir", "ir_se"):
            raise ValueError(f"ArcFace mode must be 'ir' or 'ir_se', got {mode!r}")
        if input_size < 16 or input_size % 16:
            raise ValueError(f"ArcFace input_size must be a positive multiple of 16, got {input_size}")
        if len(stage_widths) != 4 or min(stage_widths) < 1:
            raise ValueError(f"ArcFace stage_widths must be four positive ints, got {stage_widths}")
        self.input_size = input_size
        self.embedding_dim = embedding_dim
        widths = tuple(int(c) for c in stage_widths)
        reduction = se_reduction if mode == "ir_se" else None

        self.input_layer = ir_input_layer(widths[0])
        self.body = ir_body(widths, num_layers, reduction)

        side = input_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[3], eps=BATCHNORM_EPS),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(widths[3] * side * side, embedding_dim),
            nn.BatchNorm1d(embedding_dim, eps=BATCHNORM_EPS, affine=affine),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, S, S) → unit-norm embeddings (B, D)."""
        s = self.input_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != s or x.shape[3] != s:
            raise ValueError(f"ArcFace input must be (B, 3, {s}, {s}), got {tuple(x.shape)}")
        features = self.output_layer(self.body(self.input_layer(x)))
        return F.normalize(features, p=2.0, dim=1)


class IdentityLoss(nn.Module):
    """pSp / e4e identity loss:

        L_id = (1/B) * sum_b (1 - <e(y_hat_b), e(y_b)>),   e(x) = normalize(f(pool_112(crop(x))))

    i.e. the mean over the batch of 1 - cos(f(y_hat), f(y)), in [0, 2] (clamped there against
    rounding). `crop` keeps the face region rows 35:223, cols 32:220 of a 256x256 image (the box is
    scaled proportionally for other sizes; `crop=None` keeps the whole image); `pool_112` is an
    adaptive average pool to the backbone's input side. `backbone` is any module mapping
    (B, 3, S, S) to (B, D) embeddings (an `ArcFaceBackbone` for faces; another recogniser for other
    domains); embeddings are L2-normalised here, so un-normalised ones work too.

    The backbone is frozen and always in eval mode; target embeddings carry no graph, so gradients
    reach y_hat only. Identical images give 0.
    """

    def __init__(
        self,
        backbone: nn.Module,
        crop: tuple[int, int, int, int] | None = FACE_CROP_256,
        input_size: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        self.crop = crop
        self.input_size = int(input_size or getattr(backbone, "input_size", ARCFACE_INPUT_SIZE))

    def train(self, mode: bool = True) -> IdentityLoss:
        super().train(mode)
        self.backbone.eval()  # the recogniser is always in inference mode
        return self

    def face_region(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → the face crop pooled to (B, 3, input_size, input_size)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"identity loss input must be (B, 3, H, W), got {tuple(x.shape)}")
        if self.crop is not None:
            h, w = x.shape[-2:]
            top, bottom, left, right = self.crop
            if (h, w) != (256, 256):
                top, bottom = round(top * h / 256), round(bottom * h / 256)
                left, right = round(left * w / 256), round(right * w / 256)
            x = x[:, :, top:bottom, left:right]
        return F.adaptive_avg_pool2d(x, (self.input_size, self.input_size))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → L2-normalised embeddings (B, D)."""
        emb = self.backbone(self.face_region(x))
        if emb.ndim != 2:
            raise ValueError(f"the identity backbone must return (B, D) embeddings, got {tuple(emb.shape)}")
        return F.normalize(emb, p=2.0, dim=1)

    def forward(self, y_hat: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """y_hat, y (B, 3, H, W) in [-1, 1] → scalar L_id."""
        if y_hat.shape != y.shape:
            raise ValueError(f"y_hat and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
        emb_hat = self.embed(y_hat)
        with torch.no_grad():
            emb = self.embed(y)
        cosine = (emb_hat * emb.to(emb_hat.dtype)).sum(dim=1)
        return (1.0 - cosine).clamp(0.0, 2.0).mean()


def load_identity_backbone(path: str | Path, **backbone_kwargs) -> ArcFaceBackbone:
    """pSp's `model_ir_se50.pth` (a plain state dict) → a frozen `ArcFaceBackbone` in eval mode.

    Read with torch.load(weights_only=True); any missing, unexpected or mis-shaped key raises
    CheckpointError naming it. `backbone_kwargs` go to ArcFaceBackbone (IR-SE-50 by default).
    """
    source = str(path)
    state = require_state_dict(load_torch_checkpoint(path), source)
    backbone = ArcFaceBackbone(**backbone_kwargs)
    load_state_strict(backbone, state, source)
    backbone.requires_grad_(False)
    return backbone.eval()


def identity_loss_or_none(path: str | Path | None) -> IdentityLoss | None:
    """IdentityLoss on the IR-SE-50 weights at `path`; None, with a warning, when no path is given.

    None means the trainer uses lambda_id = 0.
    """
    if path is None or str(path) == "":
        log.warning(NO_WEIGHTS_WARNING)
        return None
    return IdentityLoss(load_identity_backbone(path))
