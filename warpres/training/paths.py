"""The two training paths of WarpRes (paper §3.2), for either family, as one module for DDP.

no-edit   x -> E0 -> W, F -> E1 -> residual; the branch renders W with the residual (for WarpRes
          the flow head sees the unedited features twice, so its flow should be zero) -> x_hat,
          which must match x.
cycle     W_a = W + a (M(z) - W), a ~ U(alpha), or W_a = W + s d along an edit direction d
          (`EditPlan`); x' = render(W_a); x' -> E0 -> W', F';
          step back W'' = W' - (W_a - W); x'' = render(W'' with the residual of x') must match x.
          The teacher sees the generator's plain RGB of W and W_a and supervises the flow of x'.

E0 and the generator are frozen (no parameter gradients, eval mode) but differentiable: the
cycle's gradients reach the branch through x', E0 and the second rendering. Everything a loss
needs comes back in `PathOutputs`; the losses themselves live in `warpres.training.objective`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from warpres.edits import DirectionLibrary, LinearDirection
from warpres.errors import EditError, TrainingError
from warpres.models.editor import EditingModel
from warpres.models.subgraphs import run_stage
from warpres.stages import (
    EDITED_SUFFIX,
    FUSE_STYLERES,
    OUTPUT,
    SYNTHESIS_HEAD,
    Step,
    cached_tensors,
    run_steps,
    walk,
)
from warpres.training.config import EditConfig
from warpres.training.teacher import FlowTeacher


@dataclass(frozen=True)
class EditPlan:
    """One step's random choices: the cycle path or not; for the cycle, z (B, z_dim) and alpha (B,)
    of the interpolation towards M(z) and, where the config asks for directed edits, which
    samples move along a direction instead (`directed` (B,) bool) and by what (`shift` (B, L, D))."""

    cycle: bool
    z: torch.Tensor | None = None
    alpha: torch.Tensor | None = None
    directed: torch.Tensor | None = None
    shift: torch.Tensor | None = None

    @staticmethod
    def sample(config: EditConfig, batch_size: int, z_dim: int, generator: torch.Generator,
               directions: torch.Tensor | None = None) -> EditPlan:
        """Draw a plan from `generator` (a CPU torch.Generator seeded per step and rank);
        `directions` (K, L, D) are the vectors of `config.along` (see `direction_vectors`)."""
        if torch.rand((), generator=generator).item() >= config.probability:
            return EditPlan(cycle=False)
        low, high = config.alpha
        alpha = low + (high - low) * torch.rand(batch_size, generator=generator)
        z = torch.randn(batch_size, z_dim, generator=generator)
        if not config.directed_share:
            return EditPlan(cycle=True, z=z, alpha=alpha)
        if directions is None:
            raise TrainingError("directed edits need the vectors of edits.along")
        directed = torch.rand(batch_size, generator=generator) < config.directed_share
        pick = torch.randint(len(directions), (batch_size,), generator=generator)
        strength = config.strength * (2 * torch.rand(batch_size, generator=generator) - 1)
        return EditPlan(True, z, alpha, directed, strength.view(-1, 1, 1) * directions[pick])

    def to(self, device: torch.device) -> EditPlan:
        if not self.cycle:
            return self
        moved = (None if t is None else t.to(device) for t in (self.z, self.alpha, self.directed, self.shift))
        return EditPlan(True, *moved)

    def step(self, wplus: torch.Tensor, mapping: nn.Module) -> torch.Tensor:
        """W_edit - W (B, L, D) of the cycle path."""
        towards_random = self.alpha.view(-1, 1, 1) * (mapping(self.z) - wplus)
        if self.directed is None:
            return towards_random
        return torch.where(self.directed.view(-1, 1, 1), self.shift.to(towards_random.dtype), towards_random)


def direction_vectors(config: EditConfig, num_ws: int) -> torch.Tensor | None:
    """(K, num_ws, D) float32: the linear directions `config.along` of the library `config.directions`,
    each broadcast to every W+ layer; None when the config asks for no directed edits."""
    if not config.directed_share:
        return None
    try:
        library = DirectionLibrary.load(config.directions)
        found = [library.resolve(name) for name in config.along]
    except EditError as exc:
        raise TrainingError(f"edits.directions: {exc}") from None
    vectors = []
    for direction in found:
        if not isinstance(direction, LinearDirection):
            raise TrainingError(f"edits.along: {direction.name} is not a linear direction")
        vector = torch.from_numpy(np.array(direction.vector, dtype=np.float32))
        if vector.ndim == 2 and vector.shape[0] != num_ws:
            raise TrainingError(f"edits.along: {direction.name} has {vector.shape[0]} layers, the generator {num_ws}")
        vectors.append(vector.expand(num_ws, -1) if vector.ndim == 1 else vector)
    return torch.stack(vectors)


@dataclass
class PathOutputs:
    """output: x_hat (no-edit) or x' (cycle), (B, 3, S, S) at the loss size S (the encoder input).
    additions: what E2 added to the generator features of `output` (B, Cg, E, E).
    flow: predicted (B, 2, E, E) (WarpRes) else None.
    teacher_flow: its target, (B, 2, T, T) from the teacher on the cycle path, zeros at E on the
    no-edit path. cycled: x'' (B, 3, S, S) on the cycle path, else None."""

    output: torch.Tensor
    additions: torch.Tensor
    flow: torch.Tensor | None = None
    teacher_flow: torch.Tensor | None = None
    cycled: torch.Tensor | None = None


def _as_edited(tensors: dict, branch: str = "") -> dict:
    """The synthesis head's outputs of one branch (`branch`: "" the original, EDITED_SUFFIX the
    edited one) of `tensors`, and its W+, named as the edited branch's."""
    names = (*SYNTHESIS_HEAD.outputs, "wplus")
    return {name + EDITED_SUFFIX: tensors[name + branch] for name in names if name + branch in tensors}


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size): area average when shrinking (as the official losses at
    256), bilinear when enlarging."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    if images.shape[-1] > size:
        return F.adaptive_avg_pool2d(images, (size, size))
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


class TrainingPaths(nn.Module):
    """forward(images (B, 3, S, S), plan) -> PathOutputs; only `model.branch` is trainable
    (less its `unused_submodules`)."""

    def __init__(self, model: EditingModel, teacher: FlowTeacher | None, teacher_size: int = 256) -> None:
        super().__init__()
        if model.encoder is None or model.branch is None:
            raise TrainingError(f"training needs E0 and a residual branch; the model is {model.family!r}")
        if model.branch.uses_flow and teacher is None:
            raise TrainingError("a WarpRes branch needs a flow teacher")
        self.encoder = model.encoder.requires_grad_(False)
        self.generator = model.generator.requires_grad_(False)
        self.branch = model.branch.requires_grad_(True)
        for name in model.branch.unused_submodules:
            self.branch.get_submodule(name).requires_grad_(False)
        self.teacher = teacher
        self.teacher_size = teacher_size
        self.loss_size = model.encoder.config.input_size
        # the dataflow walks (warpres.stages) of the two paths, on the networks above
        self.family = model.family
        self._stage = run_stage(model)
        self._encode = walk(self.family, {"image"}, {"wplus", "enc_feat", *SYNTHESIS_HEAD.outputs})
        self._residual = walk(self.family, {"enc_feat", "feat"}, {"residual"})
        edited_head = {name + EDITED_SUFFIX for name in SYNTHESIS_HEAD.outputs}
        self._edit_head = walk(self.family, {"wplus_edit"}, edited_head)
        self._plain = walk("inversion", {"wplus_edit", *edited_head}, {OUTPUT})  # the generator alone
        self._branch_render = walk(self.family, {*cached_tensors(self.family), "wplus_edit", *edited_head}, {OUTPUT})

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.branch.parameters() if p.requires_grad]

    def train(self, mode: bool = True) -> TrainingPaths:
        super().train(mode)
        self.encoder.eval()  # frozen: BatchNorm keeps its statistics
        self.generator.eval()
        return self

    def forward(self, images: torch.Tensor, plan: EditPlan) -> PathOutputs:
        with torch.no_grad():
            original = self._run(self._encode, {"image": images})
        original = self._run(self._residual, original)
        if not plan.cycle:  # the edited branch is the original one: W_edit = W
            output, flow, additions = self._render(original | _as_edited(original))
            zero_flow = None if flow is None else torch.zeros_like(flow)
            return PathOutputs(output=output, additions=additions, flow=flow, teacher_flow=zero_flow)

        with torch.no_grad():
            step = plan.step(original["wplus"], self.generator.mapping)
            edit = self._run(self._edit_head, original | {"wplus_edit": original["wplus"] + step})
            teacher_flow = self._teacher_flow(edit) if self.branch.uses_flow else None
        edited, flow, additions = self._render(edit)

        back = self._run(self._encode, {"image": edited})
        back = self._run(self._residual, back)
        undone = self._run(self._edit_head, back | {"wplus_edit": back["wplus"] - step})
        cycled, _, _ = self._render(undone)
        return PathOutputs(output=edited, additions=additions, flow=flow, teacher_flow=teacher_flow, cycled=cycled)

    def _run(self, steps: tuple[Step, ...], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return run_steps(steps, dict(tensors), self._stage)

    def _render(self, tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The branch's image of the edited branch of `tensors` (the edited head's outputs held) at
        the loss size, its flow (WarpRes) and what E2 added to the generator features."""
        additions = []

        def fuse_keeping_additions(step: Step, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            if step.stage.name != FUSE_STYLERES.name:
                return self._stage(step, inputs)
            feat_fused, added = self.branch.fuse_with_additions(*inputs.values())
            additions.append(added)
            return {"feat_fused": feat_fused}

        rendered = run_steps(self._branch_render, dict(tensors), fuse_keeping_additions)
        return resize_images(rendered[OUTPUT], self.loss_size), rendered.get("flow"), additions[0]

    def _teacher_flow(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The teacher's flow between the generator's own RGB of W (source) and W_a (target): the
        plain inversion's dataflow (no residual branch) rendering each latent."""
        source, target = (resize_images(self._run(self._plain, tensors | _as_edited(tensors, branch))[OUTPUT],
                                        self.teacher_size) for branch in ("", EDITED_SUFFIX))
        with torch.autocast(source.device.type, enabled=False):  # teachers are specified in fp32
            return self.teacher(source.float(), target.float())
