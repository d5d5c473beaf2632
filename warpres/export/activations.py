"""Realistic stage inputs: the PyTorch dataflow of ARCHITECTURE §1 run on random images.

Every stage is traced and validated on the activations it meets in deployment, not on white
noise: the encoder sees images in [-1, 1], the head sees encoder latents (and an edited copy),
E1 / flow / E2 / tail see features produced by the stages before them. Graph errors scale with
activation magnitudes, so inputs of the right scale make the tolerances mean something.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from warpres.models.editor import EditingModel
from warpres.models.subgraphs import run_stage
from warpres.stages import dataflow, run_steps, walk

# Edited latent = W+ + EDIT_SCALE * N(0, 1): a strong, dense edit, off the encoder's manifold.
EDIT_SCALE = 0.5

Activations = dict[str, torch.Tensor]
"""Dataflow tensor name (warpres.stages) -> (B, ...) float32: image, wplus, enc_feat, feat,
tap_quarter, tap_half, rgb, wplus_edit and the head's outputs of it with an `_edit` suffix, then
residual, flow and feat_fused as the family has them."""


@torch.no_grad()
def pipeline_activations(model: EditingModel, batch: int, seed: int) -> Activations:
    """Run `model` (in eval mode) on `batch` random images drawn with `seed`; every dataflow tensor a
    stage reads (warpres.stages.dataflow), e.g. for FFHQ image (B, 3, 256, 256), wplus (B, 18, 512),
    feat (B, 512, 64, 64)."""
    if model.encoder is None:
        raise ValueError(f"a {model.family} model has no encoder; its stages cannot be fed real activations")
    generator = torch.Generator().manual_seed(seed)
    size = model.encoder.config.input_size
    family, run = model.family, run_stage(model)
    acts = run_steps(walk(family, {"image"}, {"wplus"}),
                     {"image": torch.rand(batch, 3, size, size, generator=generator) * 2 - 1}, run)
    acts["wplus_edit"] = acts["wplus"] + EDIT_SCALE * torch.randn(acts["wplus"].shape, generator=generator)
    read = {source for step in dataflow(family) for _, source in step.feeds}
    return run_steps(walk(family, set(acts), read), acts, run)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in eval mode (BatchNorm on running statistics) for the block; each submodule's
    training flag is restored after."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        yield model.eval()
    finally:
        for module, flag in flags:
            module.training = flag
