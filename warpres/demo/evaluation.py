"""`warpres evaluate`: the paper's comparison on a domain with ground truth.

On held-out renders (the prior's faces with their detail seeds), for each model (E0 only,
StyleRes, WarpRes) running on a runtime backend:

- reconstruction: PSNR and SSIM against the input, and the domain perceptual distance
  (`warpres.demo.regressor.perceptual_distance`);
- edits: for each EDITS entry, the attribute change the regressor reads between the edited
  image and the reconstruction, beside the change it reads between the ground truth and the
  input (the strength, in the same units, less what the attribute's range clips),
  and the PSNR against the ground truth, the renderer's image of the same face with the attribute
  changed, over the whole image and over the identity details (face skin with its freckles and
  moles, earrings: the pixels a geometric edit must carry along);
- cycle: the pose edit undone (the edited image inverted again and moved back) against the input;
- time: seconds per image for one inversion and all edits.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from warpres.benchmark import psnr
from warpres.demo.directions import FIELD_EDITS
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import TARGET_NAMES, AttributeRegressor, hue_from_targets, perceptual_distance
from warpres.demo.renderer import FaceParams, render, render_with_masks
from warpres.demo.showcase import EDITS, edited_truth
from warpres.images import to_model_input
from warpres.runtime.session import Session

DETAIL_REGIONS = ("face", "earrings")
CYCLE_EDIT = "pose"
FAMILY_TITLES = {"inversion": "E0 only", "styleres": "StyleRes", "warpres": "WarpRes"}


@dataclass
class Scores:
    """Means over the evaluated images of one model."""

    family: str
    psnr: float = 0.0
    ssim: float = 0.0
    perceptual: float = 0.0
    achieved: dict[str, float] = field(default_factory=dict)
    wanted: dict[str, float] = field(default_factory=dict)
    truth_psnr: dict[str, float] = field(default_factory=dict)
    detail_psnr: dict[str, float] = field(default_factory=dict)
    cycle_psnr: float = 0.0
    seconds: float = 0.0


def held_out_faces(count: int, seed: int) -> list[FaceParams]:
    return [params_from_latent(*sample_latent(np.random.default_rng([seed, k]))) for k in range(count)]


def attribute_reading(regressor: AttributeRegressor, images: np.ndarray, edit: str) -> np.ndarray:
    """What the regressor reads (B,) of the attribute `edit` moves, from uint8 (B, H, W, 3) images."""
    with torch.no_grad():
        targets = regressor(torch.from_numpy(to_model_input(images, images.shape[1])))
    if edit in ("hair_red", "hair_blue"):
        angle = 2 * math.pi * hue_from_targets(targets, "hair_hue").numpy()
        return np.cos(angle) if edit == "hair_red" else -np.sin(angle)
    return targets[:, TARGET_NAMES.index(FIELD_EDITS[edit])].numpy()


def masked_psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the pixels where `mask` (H, W) is set."""
    error = (image.astype(np.float64) - reference.astype(np.float64))[mask]
    mse = float(np.mean(error**2)) if error.size else 0.0
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def evaluate(checkpoints: dict[str, Path], regressor: AttributeRegressor, directions: Path, count: int = 500,
             seed: int = 1000, backend: str = "auto", batch: int = 16, progress: bool = True) -> list[Scores]:
    """Scores of each {family: checkpoint} on `count` held-out faces."""
    faces = held_out_faces(count, seed)
    return [_evaluate_model(family, Session(checkpoint, backend, directions=directions), faces, regressor, batch,
                            progress) for family, checkpoint in checkpoints.items()]


def _evaluate_model(family: str, session: Session, faces: list[FaceParams], regressor: AttributeRegressor,
                    batch: int, progress: bool) -> Scores:
    values: dict[str, list[float]] = defaultdict(list)
    specs = [f"{name}={strength}" for name, strength in EDITS]
    size, out_size = session.info.image_size, session.info.resolution
    elapsed = 0.0
    for start in tqdm(range(0, len(faces), batch), desc=FAMILY_TITLES[family], disable=not progress):
        chunk = faces[start:start + batch]
        inputs = np.stack([render(face, size) for face in chunk])
        references = inputs if out_size == size else np.stack([render(face, out_size) for face in chunk])
        started = time.perf_counter()
        inversion = session.invert(inputs)
        reconstruction, *edited = session.edit_many(inversion, [None, *specs])
        elapsed += time.perf_counter() - started
        for real, fake in zip(references, reconstruction, strict=True):
            values["psnr"].append(psnr(fake, real))
            values["ssim"].append(structural_similarity(real, fake, data_range=255, channel_axis=2))
        with torch.no_grad():
            distance = perceptual_distance(regressor.features, torch.from_numpy(to_model_input(references, out_size)),
                                           torch.from_numpy(to_model_input(reconstruction, out_size)))
        values["perceptual"].extend(distance.tolist())
        for (name, strength), images in zip(EDITS, edited, strict=True):
            base = attribute_reading(regressor, reconstruction, name)
            values[f"achieved/{name}"].extend((attribute_reading(regressor, images, name) - base).tolist())
            truths = []
            for face, image in zip(chunk, images, strict=True):
                truth, masks = render_with_masks(edited_truth(face, name, strength), out_size)
                detail = np.logical_or.reduce([masks[region] for region in DETAIL_REGIONS])
                values[f"truth/{name}"].append(psnr(image, truth))
                values[f"detail/{name}"].append(masked_psnr(image, truth, detail))
                truths.append(truth)
            wanted = attribute_reading(regressor, np.stack(truths), name) - attribute_reading(regressor, references,
                                                                                              name)
            values[f"wanted/{name}"].extend(wanted.tolist())
            if name == CYCLE_EDIT:
                undone = session.edit(session.invert(images), f"{name}={-strength}")
                values["cycle"].extend(psnr(back, real) for back, real in zip(undone, references, strict=True))
    return Scores(family, _mean(values["psnr"]), _mean(values["ssim"]), _mean(values["perceptual"]),
                  {n: _mean(values[f"achieved/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"wanted/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"truth/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"detail/{n}"]) for n, _ in EDITS},
                  _mean(values["cycle"]), elapsed / len(faces))


def markdown_table(scores: list[Scores]) -> str:
    """One row per model, the columns of the module docstring."""
    header = ["model", "PSNR ↑", "SSIM ↑", "perceptual ↓"]
    header += [f"{name} {strength:+g}: read / truth read / truth PSNR / detail PSNR" for name, strength in EDITS]
    header += [f"{CYCLE_EDIT} cycle PSNR ↑", "s / image"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in scores:
        cells = [FAMILY_TITLES[row.family], f"{row.psnr:.2f}", f"{row.ssim:.4f}", f"{row.perceptual:.4f}"]
        cells += [f"{row.achieved[n]:+.2f} / {row.wanted[n]:+.2f} / {row.truth_psnr[n]:.2f} / {row.detail_psnr[n]:.2f}"
                  for n, _ in EDITS]
        cells += [f"{row.cycle_psnr:.2f}", f"{row.seconds:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
