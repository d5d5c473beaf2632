"""One declarative export spec per stage (ARCHITECTURE §5, as HF optimum's OnnxConfig).

A spec names its stage (tensor names, order and where each input comes from are the stage
table's: `warpres.stages`) and the tolerance validation holds the exported graph to, with the
reason for it. The dynamic axis is the same for every stage tensor (ARCHITECTURE §2): axis 0,
`warpres.stages.BATCH_AXIS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch

from warpres.errors import ExportError
from warpres.export.activations import pipeline_activations
from warpres.models.editor import EditingModel
from warpres.stages import (
    ENCODER,
    FLOW,
    FUSE_STYLERES,
    FUSE_WARPRES,
    RESIDUAL_ENCODER,
    SYNTHESIS_HEAD,
    SYNTHESIS_TAIL,
    Stage,
    stage_feeds,
    stages_for,
)


@dataclass(frozen=True)
class Tolerance:
    """An output passes when max |onnx - torch| <= atol + rtol * max |torch|."""

    atol: float
    rtol: float
    reason: str

    def allowed(self, reference_max: float) -> float:
        return self.atol + self.rtol * reference_max


@dataclass(frozen=True)
class ExportSpec:
    """How one stage is exported and validated. The synthesis head is traced and validated on
    its edited call (`warpres.stages.stage_feeds`): latents off the encoder's manifold, the harder case."""

    stage: Stage
    tolerance: Tolerance

    def dummy_inputs(self, model: EditingModel, batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """Realistic inputs of `batch` fresh random images (see `pipeline_activations`)."""
        return stage_feeds(model.family, self.stage, pipeline_activations(model, batch, seed))


# Tolerances are relative to the output's largest magnitude: float32 has a 6e-8 unit roundoff,
# and ONNX Runtime sums convolutions in another order (and with other kernels) than PyTorch.
# Measured (random weights, ONNX Runtime 1.32 CPU): <= 1.5e-6 of max |output| on the tiny models,
# <= 2e-6 at FFHQ-1024; rtol 1e-4 leaves 50x for trained weights and other CPUs' kernels.
_CONV_CHAIN = "float32 conv sums over up to 4608 terms, reordered by ONNX Runtime's kernels"
SPECS: Mapping[Stage, ExportSpec] = MappingProxyType({
    ENCODER: ExportSpec(ENCODER, Tolerance(
        atol=1e-5, rtol=1e-4, reason="50 IR-SE units with BatchNorm: rounding compounds over ~130 convs")),
    SYNTHESIS_HEAD: ExportSpec(SYNTHESIS_HEAD, Tolerance(
        atol=1e-5, rtol=1e-4, reason=f"{_CONV_CHAIN}; demodulation rsqrt of folded weight energies")),
    RESIDUAL_ENCODER: ExportSpec(RESIDUAL_ENCODER, Tolerance(atol=1e-5, rtol=1e-4, reason=_CONV_CHAIN)),
    FLOW: ExportSpec(FLOW, Tolerance(
        atol=1e-4, rtol=1e-4, reason="two GridSample warps turn feature rounding into sub-pixel position error")),
    FUSE_STYLERES: ExportSpec(FUSE_STYLERES, Tolerance(atol=1e-5, rtol=1e-4, reason=_CONV_CHAIN)),
    FUSE_WARPRES: ExportSpec(FUSE_WARPRES, Tolerance(
        atol=1e-5, rtol=1e-4, reason=f"{_CONV_CHAIN}; GridSample weights rounded in float32")),
    SYNTHESIS_TAIL: ExportSpec(SYNTHESIS_TAIL, Tolerance(
        atol=1e-4, rtol=1e-4, reason="image in [-1, 1]: 1e-4 is 1/80 of an 8-bit grey level")),
})


def spec_for(stage: Stage) -> ExportSpec:
    try:
        return SPECS[stage]
    except KeyError:
        raise ExportError(f"no export spec for stage {stage.name} with inputs {stage.inputs}") from None


def specs_for(family: str) -> tuple[ExportSpec, ...]:
    """The specs of a family's stages, in execution order."""
    return tuple(spec_for(stage) for stage in stages_for(family))
