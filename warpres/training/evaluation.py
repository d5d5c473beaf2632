"""What a run reports while it trains: reconstruction quality on held-out images and sample grids.

Both go through the inference pipeline (`Editor`), so they score what users will get. PSNR
(`warpres.benchmark.psnr`, as `warpres bench` and `warpres evaluate`) and SSIM (scikit-image,
data range 255, over the RGB channels) compare 8-bit images at the encoder input size.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from skimage.metrics import structural_similarity

from warpres.benchmark import psnr
from warpres.images import to_uint8
from warpres.models.editor import EditingModel, Editor
from warpres.training.paths import resize_images


@dataclass(frozen=True)
class Reconstruction:
    psnr: float
    ssim: float
    images: int


def _pixels(images: torch.Tensor, size: int) -> np.ndarray:
    return to_uint8(resize_images(images.float(), size).cpu().numpy())


@torch.no_grad()
def evaluate_reconstruction(model: EditingModel, batches: Iterable[torch.Tensor], limit: int = 0) -> Reconstruction:
    """Mean PSNR / SSIM of the (unedited) reconstructions of up to `limit` images (0: all)."""
    editor = Editor(model)
    size = model.encoder.config.input_size
    psnrs, ssims = [], []
    for batch in batches:
        if limit and len(psnrs) >= limit:
            break
        device = next(model.parameters()).device
        output = editor.edit(editor.invert(batch.to(device)))
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
    editor = Editor(model)
    size = model.encoder.config.input_size
    device = next(model.parameters()).device
    inversion = editor.invert(images.to(device))
    columns = [images, editor.edit(inversion)]
    for alpha in alphas:
        columns.append(editor.render(inversion, inversion.wplus + alpha * (edit_latents.to(device) - inversion.wplus)))
    tiles = [_pixels(column, size) for column in columns]  # each (B, S, S, 3)
    return np.concatenate([np.concatenate(list(row), axis=1) for row in zip(*tiles, strict=True)], axis=0)
