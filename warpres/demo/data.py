"""Rendered faces as training data: sample k of a stream is a pure function of (seed, k)."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import regression_targets
from warpres.demo.renderer import render
from warpres.images import to_model_input


class RenderedFaces(Dataset):
    """Item k: image (3, size, size) in [-1, 1], its latent z (D,), its regression targets (T,).

    `count` bounds the stream (a held-out set); None leaves it endless (read it with a sampler).
    """

    def __init__(self, seed: int, size: int = 128, count: int | None = None) -> None:
        self.seed = seed
        self.size = size
        self.count = count

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("an endless RenderedFaces stream has no length")
        return self.count

    def __getitem__(self, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.count is not None and not 0 <= k < self.count:
            raise IndexError(k)
        z, seeds = sample_latent(np.random.default_rng([self.seed, k]))
        params = params_from_latent(z, seeds)
        image = to_model_input(render(params, self.size), self.size)[0]
        return torch.from_numpy(image), torch.from_numpy(z), torch.from_numpy(regression_targets(params))
