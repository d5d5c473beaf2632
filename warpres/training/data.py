"""Training images: a folder read with the runtime's preprocessing, in a resumable order.

Sample k of the run (k = 0, 1, 2, ... over all steps and ranks) is image perm_e[k mod N] of
epoch e = k // N, mirrored or not by a coin drawn from (seed, k). The order is a pure function
of (seed, k), so a resumed run reads exactly the images the uninterrupted run would have read,
and DDP ranks read disjoint samples without a DistributedSampler's epoch bookkeeping.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from warpres.images import to_model_input
from warpres.media.imageio import list_images, read_image

log = logging.getLogger(__name__)


def step_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from the run seed and integer keys (step, rank, sample index...)."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> 1)


class ImageFolder(Dataset):
    """Every readable image under `folder`, as float (3, size, size) in [-1, 1] (runtime preprocessing).

    Indexed by image number (0..N-1); files are listed once, sorted, so the numbering is stable.
    """

    def __init__(self, folder: str | Path, size: int) -> None:
        listing = list_images([folder])
        for reason in listing.skipped:
            log.warning(reason)
        self.paths = listing.paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(to_model_input(read_image(self.paths[index]), self.size)[0])

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """The images in file order, in batches (evaluation)."""
        for start in range(0, len(self), batch_size):
            yield torch.stack([self[i] for i in range(start, min(start + batch_size, len(self)))])


class SampleStream(Dataset):
    """Sample number k -> the k-th training image of the run (see the module docstring)."""

    def __init__(self, images: ImageFolder, seed: int, hflip: bool) -> None:
        self.images = images
        self.seed = seed
        self.hflip = hflip

    def image_index(self, k: int) -> int:
        count = len(self.images)
        epoch, position = divmod(k, count)
        order = np.random.default_rng(step_seed(self.seed, 0, epoch)).permutation(count)
        return int(order[position])

    def __getitem__(self, k: int) -> torch.Tensor:
        image = self.images[self.image_index(k)]
        if self.hflip and np.random.default_rng(step_seed(self.seed, 1, k)).random() < 0.5:
            image = image.flip(-1)
        return image


class StepSampler(Sampler[int]):
    """Sample numbers for steps first_step, first_step + 1, ... of one rank: at step s (1-based),
    rank r reads k = ((s - 1) * world + r) * batch + j for j < batch."""

    def __init__(self, first_step: int, batch_size: int, rank: int = 0, world_size: int = 1) -> None:
        self.first_step = first_step
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        step = self.first_step
        while True:
            base = ((step - 1) * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            step += 1


def training_batches(stream: SampleStream, first_step: int, batch_size: int, rank: int, world_size: int,
                     workers: int) -> Iterator[torch.Tensor]:
    """(batch, 3, S, S) batches for steps first_step, first_step + 1, ... (endless)."""
    loader = DataLoader(stream, batch_size=batch_size, sampler=StepSampler(first_step, batch_size, rank, world_size),
                        num_workers=workers, persistent_workers=workers > 0)
    return iter(loader)
