"""E0's codes of labelled renders: what the mapping network and the edit directions are fitted on.

Each render of a stream comes with its latent z and its renderer parameters (its labels); its
code is the mean over layers of E0's W+, the single w whose broadcast best stands for the
inversion (and the quantity an edit added to every layer moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from torch.utils.data import DataLoader
from tqdm import tqdm

from warpres.demo.data import RenderedFaces
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.renderer import FaceParams
from warpres.export.fingerprint import encoder_fingerprint
from warpres.files import atomic_path
from warpres.models.encoders import StyleEncoder


@dataclass(frozen=True)
class Codes:
    z: np.ndarray  # (N, z_dim) the prior's latents
    w: np.ndarray  # (N, w_dim) E0's codes of their renders
    params: np.ndarray  # (N, P) float64 FaceParams vectors (with the detail seeds)
    encoder: str  # the fingerprint of the E0 that made them (export.fingerprint.encoder_fingerprint)

    def faces(self) -> list[FaceParams]:
        return [FaceParams.from_vector(row) for row in self.params]

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            save_file({"z": self.z, "w": self.w, "params": self.params}, str(tmp),
                      metadata={"encoder": self.encoder})

    @classmethod
    def load(cls, path: Path) -> Codes:
        with safe_open(str(path), framework="numpy") as handle:
            encoder = (handle.metadata() or {}).get("encoder", "")
        return cls(**load_file(str(path)), encoder=encoder)


@torch.no_grad()
def encode_renders(encoder: StyleEncoder, seed: int, count: int, batch_size: int = 64,
                   workers: int = 1, progress: bool = True) -> Codes:
    """The codes of the first `count` renders of the stream `seed` (RenderedFaces numbering)."""
    encoder.eval()
    data = DataLoader(RenderedFaces(seed, encoder.config.input_size, count), batch_size=batch_size,
                      num_workers=workers)
    z, w = [], []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for images, latents, _ in tqdm(data, desc="codes", disable=not progress):
            wplus, _ = encoder(images.contiguous(memory_format=torch.channels_last))
            w.append(wplus.float().mean(dim=1))
            z.append(latents)
    params = [params_from_latent(*sample_latent(np.random.default_rng([seed, k]))).to_vector() for k in range(count)]
    return Codes(torch.cat(z).numpy(), torch.cat(w).numpy(), np.stack(params), encoder_fingerprint(encoder))
