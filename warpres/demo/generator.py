"""The demo generator: a reduced StyleGAN2 whose synthesis is learnt jointly with E0, and whose
mapping network is then fitted to where E0 puts the prior's faces.

Regressing G(z) on render(params(z)) directly (the first attempt) was too slow for a CPU
budget: after 2,800 steps of batch 16 every face was still the blurred mean face (L1 0.205 in
[-1, 1] and flat for 1,000 steps), because the synthesis had to learn the renderer's fixed,
highly non-linear code (hue quantiles, categories) before drawing anything. Fitted as an
autoencoder with E0 (`warpres.demo.encoder.AutoencoderObjective`), the latent code is learnt
instead, and the synthesis sees sharp targets from its first step. The mapping network is
fitted last, by regression of M(z) onto E0's base code of render(params(z)) (`fit_mapping`):
then M(z) for z ~ N(0, I) is a random face of the domain, as for a GAN-trained generator,
and the trainer's cycle path (W + a (M(z) - W)) works unchanged. The architecture stays
StyleGAN2's (mapping, modulated convs, W+ of 12 styles), so encoders, residual branches, edits
and export treat it like any StyleGAN2. The seeded details (freckles, moles, clothing patterns,
background textures) are left to a code of 12 x 64 numbers to carry: what it cannot, the
residual branches are for.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from warpres.demo.prior import LATENT_DIM
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan

RESOLUTION = 128
# Mapping at the synthesis' learning rate: it is fitted by plain regression, not in a GAN game.
DEMO_GENERATOR = GeneratorConfig(
    resolution=RESOLUTION, channels=channel_plan(RESOLUTION, channel_base=2048, channel_max=256),
    z_dim=LATENT_DIM, w_dim=64, mapping_layers=4, mapping_lr_multiplier=1.0, embed_res=32)


def new_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(DEMO_GENERATOR)


def fit_mapping(generator: Generator, z: torch.Tensor, w: torch.Tensor, steps: int = 4000, batch_size: int = 256,
                lr: float = 3e-3, seed: int = 0, progress: bool = True) -> float:
    """Fit generator.mapping so that M(z) ~ w (mean squared error) on pairs z (N, z_dim),
    w (N, w_dim); lr drops tenfold for the last fifth. Sets w_avg to the mean of M over z and
    returns the final mean squared error over all pairs."""
    mapping = generator.mapping
    optimizer = torch.optim.Adam(mapping.parameters(), lr=lr, betas=(0.9, 0.99))
    order = torch.Generator().manual_seed(seed)
    mapping.train()
    for step in tqdm(range(steps), desc="mapping", disable=not progress):
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 if step >= 0.8 * steps else 1.0)
        rows = torch.randint(len(z), (batch_size,), generator=order)
        loss = (mapping(z[rows])[:, 0] - w[rows]).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    mapping.eval()
    with torch.no_grad():
        predicted = mapping(z)[:, 0]
        mapping.w_avg.copy_(predicted.mean(dim=0))
        return float((predicted - w).square().mean())
