"""E0's codes of labelled renders: what the mapping network and the edit directions are fitted on.

Each render of a stream comes with its latent z and its renderer parameters (its labels); its
code is E0's W+. The edit directions are fitted on the W+ codes (E0 writes pose, for one, into
some layers more than others); the mapping network onto `w`, their mean over layers, the single
w whose broadcast best stands for the inversion.
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
from warpres.errors import TrainingError
from warpres.export.fingerprint import encoder_fingerprint
from warpres.files import atomic_path
from warpres.models.encoders import StyleEncoder


@dataclass(frozen=True)
class Codes:
    z: np.ndarray  # (N, z_dim) the prior's latents
    wplus: np.ndarray  # (N, num_ws, w_dim) E0's codes of their renders
    params: np.ndarray  # (N, P) float64 FaceParams vectors (with the detail seeds)
    encoder: str  # the fingerprint of the E0 that made them (export.fingerprint.encoder_fingerprint)

    @property
    def w(self) -> np.ndarray:
        """(N, w_dim) the mean over layers of each code."""
        return self.wplus.mean(axis=1)

    def faces(self) -> list[FaceParams]:
        return [FaceParams.from_vector(row) for row in self.params]

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            save_file({"z": self.z, "wplus": self.wplus, "params": self.params}, str(tmp),
                      metadata={"encoder": self.encoder})

    @classmethod
    def load(cls, path: Path) -> Codes:
        with safe_open(str(path), framework="numpy") as handle:
            encoder = (handle.metadata() or {}).get("encoder", "")
            if "wplus" not in handle.keys():
                raise TrainingError(f"{path}: codes without W+ (an earlier format); rebuild them (mapping stage)")
        return cls(**load_file(str(path)), encoder=encoder)


@torch.no_grad()
def encode_renders(encoder: StyleEncoder, seed: int, count: int, batch_size: int = 64,
                   workers: int = 1, progress: bool = True) -> Codes:
    """The codes of the first `count` renders of the stream `seed` (RenderedFaces numbering)."""
    encoder.eval()
    data = DataLoader(RenderedFaces(seed, encoder.config.input_size, count), batch_size=batch_size,
                      num_workers=workers)
    z, wplus = [], []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for images, latents, _ in tqdm(data, desc="codes", disable=not progress):
            codes, _ = encoder(images.contiguous(memory_format=torch.channels_last))
            wplus.append(codes.float())
            z.append(latents)
    params = [params_from_latent(*sample_latent(np.random.default_rng([seed, k]))).to_vector() for k in range(count)]
    return Codes(torch.cat(z).numpy(), torch.cat(wplus).numpy(), np.stack(params), encoder_fingerprint(encoder))
