"""The demo E0: a reduced e4e encoder fitted to invert the demo generator.

Each render comes with the latent z it was drawn from, so besides the image losses (L1 and
the domain perceptual distance of G(E0(x)) to x) the encoder is told where the image lives:
an L2 pull of its W+ towards M(z) on every layer. That keeps inversions inside the generator's
domain, where edit directions mean what they were fitted for, as e4e's latent regularisers
do for FFHQ. The seeded details the generator cannot draw stay out of reach: that gap is what
the residual branches are trained to close.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warpres.demo.generator import DEMO_GENERATOR, PERCEPTUAL_SIZE, RESOLUTION
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator
from warpres.training.losses import PerceptualLoss

DEMO_ENCODER = EncoderConfig(kind="e4e", num_ws=DEMO_GENERATOR.num_ws, w_dim=DEMO_GENERATOR.w_dim,
                             input_size=RESOLUTION, stage_widths=(16, 32, 64, 128), se_reduction=8)
LATENT_WEIGHT = 1.0
PERCEPTUAL_WEIGHT = 1.0


def new_encoder(generator: Generator, seed: int = 0) -> StyleEncoder:
    """A fresh demo encoder whose predictions start from the generator's mean W."""
    torch.manual_seed(seed)
    encoder = StyleEncoder(DEMO_ENCODER)
    encoder.set_latent_avg(generator.mapping.w_avg)
    return encoder


class EncoderObjective:
    """batch (images, z, targets) -> {"loss", "l1", "perceptual", "latent"} for G(E0(x)) against x."""

    def __init__(self, encoder: StyleEncoder, generator: Generator, perceptual: PerceptualLoss | None) -> None:
        self.encoder = encoder
        self.generator = generator.requires_grad_(False).eval()
        self.perceptual = perceptual

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, z, _ = batch
        wplus, _ = self.encoder(images)
        output = self.generator.synthesis(wplus).float()
        with torch.no_grad():
            target_w = self.generator.mapping(z).float()
        terms = {"l1": (output - images).abs().mean(), "latent": (wplus.float() - target_w).square().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(F.adaptive_avg_pool2d(output, PERCEPTUAL_SIZE),
                                                  F.adaptive_avg_pool2d(images, PERCEPTUAL_SIZE))
        terms["loss"] = terms["l1"] + LATENT_WEIGHT * terms["latent"] + PERCEPTUAL_WEIGHT * terms.get("perceptual", 0.0)
        return terms
