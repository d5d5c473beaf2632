"""The demo E0, a reduced e4e encoder, fitted jointly with the demo generator's synthesis.

The pair is trained as an autoencoder on renders: x -> E0 -> W+ -> synthesis -> x, under L1 and
the domain perceptual distance (at half resolution: a quarter of the cost, while L1 keeps the
full-resolution detail). At weight 1 the perceptual term was 3% of the loss and the faces
stayed blurred (L1 0.155 at step 1,000); from step 1,000 it has weight 10, about a third,
closer to pSp's recipe, where LPIPS outweighs the pixel loss. e4e's delta regulariser keeps
every layer's style near the base code (W+ = w + deltas, the deltas penalised), so that
inversions stay close to a single w, where the mapping network (fitted afterwards onto these
base codes) and the edit directions (fitted in the same space) mean what they should.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warpres.demo.generator import DEMO_GENERATOR, RESOLUTION
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator
from warpres.training.losses import PerceptualLoss

DEMO_ENCODER = EncoderConfig(kind="e4e", num_ws=DEMO_GENERATOR.num_ws, w_dim=DEMO_GENERATOR.w_dim,
                             input_size=RESOLUTION, stage_widths=(16, 32, 64, 128), se_reduction=8)
PERCEPTUAL_SIZE = 64
PERCEPTUAL_WEIGHT = 10.0
DELTA_WEIGHT = 0.1


def new_encoder(seed: int = 0) -> StyleEncoder:
    torch.manual_seed(seed)
    return StyleEncoder(DEMO_ENCODER)


class AutoencoderPair(torch.nn.Module):
    """E0 and the generator as one module, so the fitting loop trains and checkpoints both."""

    def __init__(self, encoder: StyleEncoder, generator: Generator) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (reconstruction, W+)"""
        wplus, _ = self.encoder(images)
        return self.generator.synthesis(wplus), wplus


class AutoencoderObjective:
    """batch (images, z, targets) -> {"loss", "l1", "perceptual", "delta"} of G(E0(x)) against x."""

    def __init__(self, pair: AutoencoderPair, perceptual: PerceptualLoss | None) -> None:
        self.pair = pair
        self.perceptual = perceptual

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images = batch[0]
        output, wplus = self.pair(images)
        output, wplus = output.float(), wplus.float()
        terms = {"l1": (output - images).abs().mean(), "delta": (wplus[:, 1:] - wplus[:, :1]).square().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(F.adaptive_avg_pool2d(output, PERCEPTUAL_SIZE),
                                                  F.adaptive_avg_pool2d(images, PERCEPTUAL_SIZE))
        terms["loss"] = terms["l1"] + DELTA_WEIGHT * terms["delta"] + PERCEPTUAL_WEIGHT * terms.get("perceptual", 0.0)
        return terms
