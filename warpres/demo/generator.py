"""The demo generator: a reduced StyleGAN2 fitted parametrically to the renderer.

Its mapping network takes the prior's latent z (`warpres.demo.prior`), and the generator is
fitted so that G(z) reproduces render(params_from_latent(z, seeds)) under L1 and the domain
perceptual distance, for random detail seeds it cannot see. A GAN would need millions of
images to reach that quality; on a CPU budget of hours this regression converges instead,
and keeps the StyleGAN2 architecture (mapping, modulated convs, W+ of 12 styles), so the
encoders, residual branches, edits and export treat it like any StyleGAN2. What it cannot
reproduce (freckles, moles, clothing patterns, background textures: the seeded details) is
what the residual branches are for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from warpres.demo.prior import LATENT_DIM
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan
from warpres.training.losses import PerceptualLoss

RESOLUTION = 128
# Mapping at the synthesis' learning rate: z carries everything here, and StyleGAN's slow mapping
# (for GAN stability) left G(z) nearly the same for every z (L1 0.284 at step 450 with 0.1; 0.265 with 1.0).
DEMO_GENERATOR = GeneratorConfig(
    resolution=RESOLUTION, channels=channel_plan(RESOLUTION, channel_base=2048, channel_max=256),
    z_dim=LATENT_DIM, w_dim=64, mapping_layers=4, mapping_lr_multiplier=1.0, embed_res=32)
PERCEPTUAL_WEIGHT = 1.0
PERCEPTUAL_SIZE = 64  # domain features at half resolution cost a quarter; L1 keeps the full-resolution detail


class GeneratorObjective:
    """batch (images, z, targets) -> {"loss", "l1", "perceptual"} for G(z) against the render."""

    def __init__(self, generator: Generator, perceptual: PerceptualLoss | None) -> None:
        self.generator = generator
        self.perceptual = perceptual

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, z, _ = batch
        output = self.generator(z).float()
        terms = {"l1": (output - images).abs().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(F.adaptive_avg_pool2d(output, PERCEPTUAL_SIZE),
                                                  F.adaptive_avg_pool2d(images, PERCEPTUAL_SIZE))
        terms["loss"] = terms["l1"] + PERCEPTUAL_WEIGHT * terms.get("perceptual", 0.0)
        return terms


@torch.no_grad()
def set_w_avg(generator: Generator, samples: int = 10000, seed: int = 0) -> None:
    """Track the mean W of the prior in mapping.w_avg (what truncation and e4e start from)."""
    z = torch.randn(samples, generator.config.z_dim, generator=torch.Generator().manual_seed(seed))
    generator.mapping.w_avg.copy_(generator.mapping(z)[:, 0].mean(dim=0))


def new_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(DEMO_GENERATOR)


def frozen(module: nn.Module) -> nn.Module:
    return module.requires_grad_(False).eval()
