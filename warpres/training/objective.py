"""The branch's training objective: every loss term of both paths, weighted by `LossWeights`.

    no-edit  l2 + perceptual + identity (x_hat vs x) + adversarial (x_hat) + feature_regularizer
             + flow (against zero flow: nothing moved)
    cycle    cycle_l2 + cycle_perceptual + cycle_identity (x'' vs x) + adversarial (x')
             + feature_regularizer + flow (against the teacher)

Terms whose network is missing (no VGG or ArcFace weights) or that a family does not have
(flow for StyleRes) get weight 0 and are not computed. Term names equal the `LossWeights`
field names, so the log columns, the weights and the config keys are one vocabulary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from warpres.training.config import LossWeights
from warpres.training.identity import IdentityLoss
from warpres.training.losses import (
    PerceptualLoss,
    feature_regularizer,
    flow_loss,
    generator_adversarial_loss,
    reconstruction_l2,
)
from warpres.training.paths import PathOutputs

log = logging.getLogger(__name__)

TERMS = tuple(f.name for f in fields(LossWeights))


class Objective:
    """Weighted generator-side loss of one step: `terms(...)` -> {name: value}, `total(terms)`."""

    def __init__(self, weights: LossWeights, perceptual: PerceptualLoss | None, identity: IdentityLoss | None,
                 uses_flow: bool) -> None:
        off = {}
        if perceptual is None:
            off |= {"perceptual": 0.0, "cycle_perceptual": 0.0}
            log.warning("perceptual loss disabled: no network weights given (perceptual.weights)")
        if identity is None:
            off |= {"identity": 0.0, "cycle_identity": 0.0}
        if not uses_flow:
            off["flow"] = 0.0
        self.weights = replace(weights, **off)
        self.perceptual = perceptual
        self.identity = identity

    def weight(self, name: str) -> float:
        return getattr(self.weights, name)

    def terms(self, outputs: PathOutputs, images: torch.Tensor,
              discriminate: Callable[[torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted values of every active term for this step's path."""
        candidates: dict[str, Callable[[], torch.Tensor]] = {
            "adversarial": lambda: generator_adversarial_loss(discriminate(outputs.output)),
            "feature_regularizer": lambda: feature_regularizer(outputs.additions),
        }
        if outputs.flow is not None:
            candidates["flow"] = lambda: flow_loss(outputs.flow, outputs.teacher_flow)
        compared, prefix = ((outputs.output, "") if outputs.cycled is None else (outputs.cycled, "cycle_"))
        candidates[f"{prefix}l2"] = lambda: reconstruction_l2(compared, images)
        if self.perceptual is not None:
            candidates[f"{prefix}perceptual"] = lambda: self.perceptual(compared, images)
        if self.identity is not None:
            candidates[f"{prefix}identity"] = lambda: self.identity(compared, images)
        return {name: compute().float() for name, compute in candidates.items() if self.weight(name) > 0}

    def total(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.weight(name) * value for name, value in terms.items())
