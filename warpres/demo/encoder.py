"""The demo E0, a reduced e4e encoder, fitted jointly with the demo generator's synthesis.

The pair is trained as an autoencoder on renders: x -> E0 -> W+ -> synthesis -> p, where p is x
rendered without its identity details (`renderer.without_details`: freckles, moles, earrings,
clothing patterns, background textures). Those are what W cannot hold and what the residual
branches restore; as targets they dominated L1 with errors no code could lower. The loss is L1
plus the domain perceptual distance (at half resolution: a quarter of the cost, while L1 keeps
the full-resolution detail). At weight 1 the perceptual term was 3% of the loss and the faces
stayed blurred (L1 0.155 at step 1,000); from step 1,000 it has weight 10, about a third,
closer to pSp's recipe, where LPIPS outweighs the pixel loss. e4e's delta regulariser keeps
every layer's style near the base code (W+ = w + deltas, the deltas penalised), so that
inversions stay close to a single w, where the mapping network (fitted afterwards onto these
base codes) and the edit directions (fitted in the same space) mean what they should.

Two terms make the semantic attributes live in W, which plain reconstruction did not do: after
3,000 steps the codes read pose (held-out R^2 0.61) but not the smile (0.00), and the faces had
no mouths. The eyes and the mouth are ~2% of the pixels, so their share of L1 was smaller than
the noise of the patterns no code can hold; their L1 is weighted up (the facial-component
emphasis of face restoration losses), using the renderer's masks. And a linear probe reads the
semantic attributes from the standardised mean code, supervised by the renderer's labels, so
that an InterfaceGAN direction fitted in W has something to move.

The codes also collapse without a floor on their spread: while the synthesis cannot use them
yet, shrinking them is what lowers the loss, and they fell from a spread of 0.58 per dimension
to 0.12 within 500 steps, where the styles vary by ~6% between images and the generator draws
one blurred face for all. VICReg's variance hinge keeps every dimension's spread over the
batch at SPREAD or above, measured on tanh of the codes: on the raw codes one image with huge
codes satisfies the hinge for the whole batch, and E0 learnt exactly that (a striped-background
render got codes 6x the others' in training mode, 150x through the running BatchNorm statistics,
while the rest stayed collapsed). Bounded, one image moves a dimension's spread by at most
~1/sqrt(batch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from warpres.demo.generator import DEMO_GENERATOR, RESOLUTION
from warpres.demo.regressor import TARGET_NAMES
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator
from warpres.training.losses import PerceptualLoss

DEMO_ENCODER = EncoderConfig(kind="e4e", num_ws=DEMO_GENERATOR.num_ws, w_dim=DEMO_GENERATOR.w_dim,
                             input_size=RESOLUTION, stage_widths=(16, 32, 64, 128), se_reduction=8)
PERCEPTUAL_SIZE = 64
PERCEPTUAL_WEIGHT = 10.0
DELTA_WEIGHT = 0.1
COMPONENT_WEIGHT = 10.0
PROBE_WEIGHT = 1.0
SPREAD, SPREAD_WEIGHT = 0.4, 1.0  # spread of tanh(code); codes ~N(0, 0.6) give 0.45
PROBED_TARGETS = ("smile", "yaw", "pitch", "glasses", "age", "hair_hue_cos", "hair_hue_sin")


def spread_shortfall(codes: torch.Tensor) -> torch.Tensor:
    """How far each dimension's spread over the batch, of tanh(codes (B, D)), falls short of
    SPREAD, averaged over the dimensions: the variance hinge (see the module docstring)."""
    return F.relu(SPREAD - torch.tanh(codes).std(dim=0)).mean()


def new_encoder(seed: int = 0) -> StyleEncoder:
    torch.manual_seed(seed)
    return StyleEncoder(DEMO_ENCODER)


class AutoencoderPair(torch.nn.Module):
    """E0, the generator and the attribute probe as one module, so the fitting loop trains and
    checkpoints them together."""

    def __init__(self, encoder: StyleEncoder, generator: Generator) -> None:
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        w_dim = generator.config.w_dim
        self.probe = torch.nn.Sequential(torch.nn.BatchNorm1d(w_dim, affine=False),
                                         torch.nn.Linear(w_dim, len(PROBED_TARGETS)))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images -> (reconstruction, W+)"""
        wplus, _ = self.encoder(images)
        return self.generator.synthesis(wplus), wplus


_PROBED_INDEX = [TARGET_NAMES.index(name) for name in PROBED_TARGETS]


class AutoencoderObjective:
    """batch (images x, z, targets, component masks, plain renders p) of
    `RenderedFaces(autoencoder=True)` -> {"loss", "l1", "components", "probe", "spread", "delta",
    "perceptual"} of G(E0(x)) against p, x without its details."""

    def __init__(self, pair: AutoencoderPair, perceptual: PerceptualLoss | None) -> None:
        self.pair = pair
        self.perceptual = perceptual

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, _, targets, components, plain = batch
        output, wplus = self.pair(images)
        output, wplus = output.float(), wplus.float()
        error = (output - plain).abs()
        codes = wplus.mean(dim=1)
        attributes = self.pair.probe(codes).float()
        covered = components.sum() * images.shape[1]
        terms = {"l1": error.mean(),
                 "components": (error * components).sum() / covered.clamp(min=1.0),
                 "probe": (attributes - targets[:, _PROBED_INDEX]).square().mean(),
                 "spread": spread_shortfall(codes),
                 "delta": (wplus[:, 1:] - wplus[:, :1]).square().mean()}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(F.adaptive_avg_pool2d(output, PERCEPTUAL_SIZE),
                                                  F.adaptive_avg_pool2d(plain, PERCEPTUAL_SIZE))
        emphasis = COMPONENT_WEIGHT * (error * components).mean()  # their L1, counted COMPONENT_WEIGHT more times
        terms["loss"] = (terms["l1"] + emphasis + PROBE_WEIGHT * terms["probe"] + SPREAD_WEIGHT * terms["spread"]
                         + DELTA_WEIGHT * terms["delta"] + PERCEPTUAL_WEIGHT * terms.get("perceptual", 0.0))
        return terms
