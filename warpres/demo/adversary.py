"""The image critic of a demo fit: a StyleGAN2 discriminator trained beside the fitted module.

Reconstruction losses alone let the demo autoencoder settle on the conditional mean wherever E0
does not yet say precisely where a small feature is: after 8,000 steps (and 2,500 more with the
synthesis at StyleGAN2's own rate) every face had a blurred band of stripes where the eyes
belong and no mouth, and W+ optimised per image through that synthesis drew none either. A
critic that tells renders from reconstructions penalises the band itself, as in GAN training,
while the reconstruction terms keep each face the input's.

The critic owns its optimiser (Adam, StyleGAN2's betas (0, 0.99)) and steps it inside the
objective: `update(real, fake)` once per fitting step, with the lazy R1 penalty on renders every
R1_INTERVAL updates (computed in fp32: its double backward is too coarse in bf16); then
`generator_loss(fake)` with the critic frozen. `fit` saves and resumes its weights and moments
with the fitted module's.
"""

from __future__ import annotations

import torch
from torch import nn

from warpres.models.discriminator import Discriminator, DiscriminatorConfig
from warpres.training.losses import discriminator_adversarial_loss, generator_adversarial_loss, r1_penalty

R1_INTERVAL = 16


def r1_gamma_for(resolution: int, batch_size: int) -> float:
    """StyleGAN2-ADA's heuristic gamma = 0.0002 * resolution^2 / batch."""
    return 0.0002 * resolution**2 / batch_size


class Adversary(nn.Module):
    """A discriminator and its Adam optimiser; `updates` counts its steps (R1 every R1_INTERVAL)."""

    def __init__(self, config: DiscriminatorConfig, lr: float = 2e-3, r1_gamma: float = 0.2, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.discriminator = Discriminator(config)
        self.r1_gamma = r1_gamma
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=lr, betas=(0.0, 0.99))
        self.discriminator.requires_grad_(False)

    def generator_loss(self, fake: torch.Tensor) -> torch.Tensor:
        """Non-saturating loss of `fake` (gradients reach fake, not the critic)."""
        return generator_adversarial_loss(self.discriminator(fake).float())

    def update(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """One critic step on renders `real` against reconstructions `fake` (detached here);
        returns its logistic loss."""
        self.discriminator.requires_grad_(True)
        try:
            with torch.enable_grad():
                loss = discriminator_adversarial_loss(self.discriminator(real.detach()).float(),
                                                      self.discriminator(fake.detach()).float())
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if int(self.updates) % R1_INTERVAL == 0 and self.r1_gamma > 0:
                    with torch.autocast("cpu", enabled=False):
                        renders = real.detach().float().requires_grad_(True)
                        penalty = r1_penalty(renders, self.discriminator(renders))
                        (self.r1_gamma / 2 * R1_INTERVAL * penalty).backward()
                self.optimizer.step()
        finally:
            self.discriminator.requires_grad_(False)
        self.updates += 1
        return loss.detach()
