"""What a run reports while it trains: reconstruction quality on held-out images and sample grids.

Both go through the inference pipeline (`Session(model, backend="torch")`), so they score what
users will get. PSNR (`warpres.benchmark.psnr`, as `warpres bench` and `warpres evaluate`) and
SSIM (scikit-image, data range 255, over the RGB channels) compare 8-bit images at the encoder
input size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

from warpres.benchmark import psnr
from warpres.images import to_uint8
from warpres.models.editor import EditingModel
from warpres.runtime.session import Session
from warpres.training.paths import resize_images


@dataclass(frozen=True)
class Reconstruction:
    psnr: float
    ssim: float
    images: int


def _pixels(images: torch.Tensor, size: int) -> np.ndarray:
    return to_uint8(resize_images(images.float(), size).cpu().numpy())


def _session(model: EditingModel) -> Session:
    """The PyTorch pipeline on the device the model's weights are on."""
    return Session(model, backend="torch", backend_options={"device": str(next(model.parameters()).device)})


@torch.no_grad()
def evaluate_reconstruction(model: EditingModel, batches: Iterable[torch.Tensor], limit: int = 0) -> Reconstruction:
    """Mean PSNR / SSIM of the (unedited) reconstructions of up to `limit` images (0: all)."""
    session = _session(model)
    size = model.encoder.config.input_size
    psnrs, ssims = [], []
    for batch in batches:
        if limit and len(psnrs) >= limit:
            break
        output = session.edit(session.invert(batch.float()))
        for real, fake in zip(_pixels(batch, size), _pixels(output, size), strict=True):
            if limit and len(psnrs) >= limit:
                break
            psnrs.append(psnr(fake, real))
            ssims.append(structural_similarity(real, fake, data_range=255, channel_axis=2))
    return Reconstruction(float(np.mean(psnrs)), float(np.mean(ssims)), len(psnrs))


@torch.no_grad()
def sample_grid(model: EditingModel, images: torch.Tensor, edit_latents: torch.Tensor,
                alphas: Iterable[float]) -> np.ndarray:
    """uint8 RGB grid (rows = images): input | reconstruction | one column per alpha, each the
    edit W + alpha (edit_latent - W) towards that image's random latent (B, L, w_dim)."""
    session = _session(model)
    size = model.encoder.config.input_size
    inversion = session.invert(images.float())
    targets = edit_latents.detach().float().cpu().numpy()
    towards = [lambda wplus, alpha=alpha: wplus + np.float32(alpha) * (targets - wplus) for alpha in alphas]
    columns = [images, *session.edit_many(inversion, [None, *towards])]
    tiles = [_pixels(column, size) for column in columns]  # each (B, S, S, 3)
    return np.concatenate([np.concatenate(list(row), axis=1) for row in zip(*tiles, strict=True)], axis=0)
