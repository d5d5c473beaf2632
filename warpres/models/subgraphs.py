"""Each deployment stage (warpres.stages) as a PyTorch module over the EditingModel.

The modules take the stage's inputs positionally in the stage's order and return its outputs
as a tuple in the stage's order: what the ONNX exporter traces and what the torch backend runs,
so the reference and the exported graphs are the same computation by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from warpres.errors import WarpresError
from warpres.models.editor import EditingModel
from warpres.stages import Stage, Step, stages_for


class StageModule(nn.Module):
    """Wraps one stage's computation; `stage` names its tensors."""

    def __init__(self, stage: Stage, owner: nn.Module, compute: Callable[..., tuple[torch.Tensor, ...]]) -> None:
        super().__init__()
        self.stage = stage
        self.owner = owner  # registers the parameters the computation reads
        self._compute = compute

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self._compute(*inputs)
        return tuple(outputs)


def stage_computations(model: EditingModel) -> dict[str, tuple[nn.Module, Callable[..., tuple[torch.Tensor, ...]]]]:
    """Per stage name of the model's family: the module owning the computation's parameters and
    the computation (stage inputs in order -> outputs in order)."""
    synthesis, branch = model.generator.synthesis, model.branch
    computations: dict[str, tuple[nn.Module, Callable[..., tuple[torch.Tensor, ...]]]] = {
        "encoder": (model.encoder, lambda image: model.encoder(image)),
        "synthesis_head": (synthesis, lambda wplus: synthesis.head(wplus)),
        "synthesis_tail": (synthesis, lambda feat_fused, rgb, wplus: (synthesis.tail(feat_fused, rgb, wplus),)),
    }
    if branch is not None:
        computations |= {
            "residual_encoder": (branch, lambda enc_feat, feat: (branch.encode_residual(enc_feat, feat),)),
            "fuse": (branch, lambda *inputs: (branch.fuse(*inputs),)),
        }
        if branch.uses_flow:
            computations["flow"] = (branch, lambda *taps: (branch.estimate_flow(*taps),))
    return computations


def stage_module(model: EditingModel, stage: Stage) -> StageModule:
    """The module computing `stage` for `model` (whose family must include the stage)."""
    if stage not in stages_for(model.family):
        raise WarpresError(f"a {model.family} model has no {stage.name} stage with inputs {stage.inputs}")
    owner, compute = stage_computations(model)[stage.name]
    return StageModule(stage, owner, compute).eval()


def run_stage(model: EditingModel) -> Callable[[Step, Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """A `warpres.stages.run_steps` executor computing each stage call with the model's networks
    as they are (no mode change, gradients as the caller's context has them)."""
    computations = stage_computations(model)

    def run(step: Step, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        _, compute = computations[step.stage.name]
        return dict(zip(step.stage.outputs, compute(*inputs.values()), strict=True))

    return run
