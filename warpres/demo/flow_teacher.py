"""A flow teacher for the demo domain: RAFT trained on the generator's own edits, with the renderer's
true motion of the face as its target.

The paper supervises WarpRes's flow head with a pretrained optical-flow network. None can be
downloaded here, and on this domain no hand-made estimator reads the generator's images well:
DIS on the generator's pose edits moves content by 0.36 of the face's true motion
(`python -m warpres.demo.motion`), and the flow head trained on it follows it. Yet WarpRes with the
true motion as its flow keeps the details best of all (detail PSNR 18.88 against E0's 18.15). This
teacher learns to see that motion in the images the trainer shows it: pairs G(W), G(W + s d) of
the generator's pictures of E0's code W of a render and of that code edited along `pose`, `pitch`
or `smile` (s uniform in [-1, 1]), each with the renderer's backward flow of the face between the
render and its ground-truth edit (`true_flow`; zero off the face, where nothing moves). It is the
domain's counterpart of the paper's teacher, trained on the domain's own motion.

    python -m warpres.demo.build flow-teacher --work WORK   # -> WORK/flow-teacher.safetensors

The network is torchvision's RAFT-small layout (`warpres.training.raft`), trained from scratch with
RAFT's sequence loss; its state dict, saved as safetensors, loads as a
`teacher: {kind: raft, checkpoint: ...}`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.interpolate import griddata
from torch.utils.data import Dataset

from warpres.demo.generator import RESOLUTION
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.renderer import FaceParams, render, surface_motion
from warpres.demo.showcase import edited_truth
from warpres.edits import DirectionLibrary, EditRequest, LinearDirection
from warpres.images import to_model_input
from warpres.models.editor import EditingModel
from warpres.models.subgraphs import run_stage
from warpres.stages import OUTPUT, run_steps, walk
from warpres.training.raft import RAFT

TEACHER_EDITS = ("pose", "pitch", "smile")  # the edits that move (or, smile, keep) the face's surface
TRAIN_UPDATES = 8  # RAFT's refinement steps while training (the teacher runs the trainer's `iterations`)
SEQUENCE_DECAY = 0.8  # RAFT's sequence loss: update i of N weighs DECAY ** (N - 1 - i)


# surface points 0.04 apart in face units: 3.5x faster than 0.02 (24 against 83 ms a face) and within
# 0.006 px of it on average (10 pose edits), so the data stream keeps up with the fit
TARGET_SPACING = 0.04


def true_flow(before: FaceParams, after: FaceParams, size: int, grid: int, spacing: float = 0.02) -> np.ndarray:
    """The renderer's motion of the face as a backward flow (2, grid, grid) in pixels of a grid x
    grid lattice over the image: interpolated between surface points on the face (`spacing` apart
    in face units), zero elsewhere (background, clothing and neck do not move)."""
    points, displacement = surface_motion(before, after, size, spacing=spacing)
    if len(points) < 3:  # the face turned out of view: nothing on it is seen in both renders
        return np.zeros((2, grid, grid), np.float32)
    centres = (np.arange(grid) + 0.5) * size / grid
    lattice = tuple(np.meshgrid(centres, centres))
    flow = [griddata(points, displacement[:, c], lattice, method="linear", fill_value=0.0) for c in range(2)]
    return np.stack(flow).astype(np.float32) * grid / size


class MotionPairs(Dataset):
    """Item k of the stream `seed`: a render (3, S, S) in [-1, 1], the index of its edit in
    TEACHER_EDITS, the edit's strength and the true backward flow (2, S, S) from the render to its
    ground-truth edit, at S = RESOLUTION. Endless: read it with a sampler."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __len__(self) -> int:
        return 2**62

    def __getitem__(self, k: int):
        rng = np.random.default_rng([self.seed, k])
        face = params_from_latent(*sample_latent(rng))
        edit = int(rng.integers(len(TEACHER_EDITS)))
        strength = float(rng.uniform(-1.0, 1.0))
        image = to_model_input(render(face, RESOLUTION)[None], RESOLUTION)[0]
        flow = true_flow(face, edited_truth(face, TEACHER_EDITS[edit], strength), RESOLUTION, RESOLUTION,
                         TARGET_SPACING)
        return torch.from_numpy(image), edit, torch.tensor(strength, dtype=torch.float32), torch.from_numpy(flow)


class GeneratorPairs:
    """What the trainer's teacher is shown: the generator's RGB of E0's W+ of a batch of renders
    and of that W+ edited (one edit of TEACHER_EDITS and a strength per image), both in [-1, 1]."""

    def __init__(self, model: EditingModel, directions: DirectionLibrary) -> None:
        self.model = model.eval().requires_grad_(False)
        for name in TEACHER_EDITS:  # the pairs are `wplus + strength * vector`, batched
            if not isinstance(directions.resolve(name), LinearDirection):
                raise ValueError(f"the {name!r} direction is not linear: the teacher's pairs need linear edits")
        # a linear edit of strength 1 applied to zero codes: each direction's per-layer vector
        zero = np.zeros((1, model.generator.config.num_ws, model.generator.config.w_dim), np.float32)
        self.vectors = torch.stack([torch.from_numpy(np.asarray(directions.apply(zero, [EditRequest(name, 1.0)])[0],
                                                                np.float32)) for name in TEACHER_EDITS])

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, edits: torch.Tensor, strengths: torch.Tensor):
        stage = run_stage(self.model)
        wplus = run_steps(walk("inversion", {"image"}, {"wplus"}), {"image": images}, stage)["wplus"]
        edited = wplus + strengths.view(-1, 1, 1).to(wplus.dtype) * self.vectors[edits].to(wplus.dtype)
        source, target = (run_steps(walk("inversion", {"wplus_edit"}, {OUTPUT}), {"wplus_edit": w}, stage)[OUTPUT]
                          for w in (wplus, edited))
        return source.float(), target.float()


def sequence_loss(predictions: list[torch.Tensor], flow: torch.Tensor) -> torch.Tensor:
    """RAFT's sequence loss: the mean L1 error of every update's flow, later updates weighing more."""
    count = len(predictions)
    return sum(SEQUENCE_DECAY ** (count - 1 - i) * (prediction.float() - flow).abs().mean()
               for i, prediction in enumerate(predictions))


class TeacherObjective:
    """fit() objective: RAFT(target, source) (the trainer's teacher convention: a flow on the edited
    image's grid pointing into the unedited one) against the true backward flow."""

    def __init__(self, network: RAFT, pairs: GeneratorPairs) -> None:
        self.network, self.pairs = network, pairs

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        images, edits, strengths, flow = batch
        source, target = self.pairs(images, edits, strengths)
        predictions = self.network.predictions(target, source, TRAIN_UPDATES)
        endpoint = (predictions[-1].float() - flow).norm(dim=1).mean()
        return {"loss": sequence_loss(predictions, flow), "endpoint_error": endpoint.detach()}
