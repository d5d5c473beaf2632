"""`warpres evaluate`: the paper's comparison on a domain with ground truth.

On held-out renders (the prior's faces with their detail seeds), for each model (E0 only,
StyleRes, WarpRes) running on a runtime backend:

- reconstruction: PSNR and SSIM against the input, and the domain perceptual distance
  (`warpres.training.domain.feature_distance`);
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

import json
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity
from tqdm import tqdm

from warpres.benchmark import psnr
from warpres.demo.directions import FIELD_EDITS
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import TARGET_NAMES, AttributeRegressor, hue_from_targets
from warpres.training.domain import feature_distance
from warpres.demo.renderer import FaceParams, render, render_with_masks
from warpres.demo.showcase import EDITS, edited_truth
from warpres.export import export_checkpoint
from warpres.images import to_model_input
from warpres.runtime.session import Session

DETAIL_REGIONS = ("face", "earrings")
CYCLE_EDIT = "pose"
FAMILY_TITLES = {"inversion": "E0 only", "styleres": "StyleRes", "warpres": "WarpRes"}
HELD_OUT_SEED = 1000  # the stream of faces no demo model is fitted on


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


@dataclass
class Reading:
    """What the domain network sees in a batch of images: its attribute outputs (B, T) and its
    stage features (for perceptual distances), from one pass."""

    targets: torch.Tensor
    features: list[torch.Tensor]

    @classmethod
    def of(cls, regressor: AttributeRegressor, images: np.ndarray) -> Reading:
        """Of uint8 (B, H, W, 3) images."""
        with torch.no_grad():
            features = regressor.features(torch.from_numpy(to_model_input(images, images.shape[1])))
            return cls(regressor.attributes(features), features)

    def attribute(self, edit: str) -> np.ndarray:
        """(B,) the reading of the attribute `edit` moves, in the units of its direction."""
        if edit in ("hair_red", "hair_blue"):
            angle = 2 * math.pi * hue_from_targets(self.targets, "hair_hue").numpy()
            return np.cos(angle) if edit == "hair_red" else -np.sin(angle)
        return self.targets[:, TARGET_NAMES.index(FIELD_EDITS[edit])].numpy()


@dataclass
class EditTruth:
    """The renderer's images of a batch of faces with one attribute changed, their identity-detail
    masks (B, H, W) and what the domain network reads in them."""

    images: np.ndarray
    detail: np.ndarray
    reading: Reading


@dataclass
class GroundTruth:
    """One batch of held-out faces at one resolution: the reference renders and each EDITS
    entry's ground truth, shared by every model scored on them."""

    references: np.ndarray
    reading: Reading
    edits: dict[str, EditTruth]

    @classmethod
    def of(cls, faces: list[FaceParams], size: int, regressor: AttributeRegressor) -> GroundTruth:
        references = np.stack([render(face, size) for face in faces])
        edits = {}
        for name, strength in EDITS:
            rendered = [render_with_masks(edited_truth(face, name, strength), size) for face in faces]
            images = np.stack([image for image, _ in rendered])
            detail = np.stack([np.logical_or.reduce([masks[region] for region in DETAIL_REGIONS])
                               for _, masks in rendered])
            edits[name] = EditTruth(images, detail, Reading.of(regressor, images))
        return cls(references, Reading.of(regressor, references), edits)


def masked_psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR in dB over the pixels where `mask` (H, W) is set."""
    error = (image.astype(np.float64) - reference.astype(np.float64))[mask]
    mse = float(np.mean(error**2)) if error.size else 0.0
    return float("inf") if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def evaluate(checkpoints: dict[str, Path], regressor: AttributeRegressor, directions: Path, count: int = 500,
             seed: int = HELD_OUT_SEED, backend: str = "auto", batch: int = 16, progress: bool = True) -> list[Scores]:
    """Scores of each {family: checkpoint} on `count` held-out faces; the ground truth of each
    batch is rendered and read once for all models."""
    faces = held_out_faces(count, seed)
    sessions = {family: Session(checkpoint, backend, directions=directions, exporter=export_checkpoint)
                for family, checkpoint in checkpoints.items()}
    values: dict[str, dict[str, list[float]]] = {family: defaultdict(list) for family in sessions}
    elapsed = dict.fromkeys(sessions, 0.0)
    for start in tqdm(range(0, len(faces), batch), desc="evaluate", unit="batch", disable=not progress):
        chunk = faces[start:start + batch]
        truths: dict[int, GroundTruth] = {}
        for family, session in sessions.items():
            size, out_size = session.info.image_size, session.info.resolution
            if out_size not in truths:
                truths[out_size] = GroundTruth.of(chunk, out_size, regressor)
            inputs = truths[out_size].references if size == out_size else np.stack([render(f, size) for f in chunk])
            elapsed[family] += _score_batch(session, inputs, truths[out_size], regressor, values[family])
    return [_scores(family, values[family], elapsed[family] / len(faces)) for family in sessions]


def _score_batch(session: Session, inputs: np.ndarray, truth: GroundTruth, regressor: AttributeRegressor,
                 values: dict[str, list[float]]) -> float:
    """Append one batch's metrics to `values`; the seconds the model took (inversion and edits)."""
    specs = [f"{name}={strength}" for name, strength in EDITS]
    started = time.perf_counter()
    inversion = session.invert(inputs)
    reconstruction, *edited = session.edit_many(inversion, [None, *specs])
    seconds = time.perf_counter() - started
    for real, fake in zip(truth.references, reconstruction, strict=True):
        values["psnr"].append(psnr(fake, real))
        values["ssim"].append(structural_similarity(real, fake, data_range=255, channel_axis=2))
    base = Reading.of(regressor, reconstruction)
    values["perceptual"].extend(feature_distance(truth.reading.features, base.features).tolist())
    for (name, strength), images in zip(EDITS, edited, strict=True):
        target = truth.edits[name]
        values[f"achieved/{name}"].extend((Reading.of(regressor, images).attribute(name)
                                           - base.attribute(name)).tolist())
        values[f"wanted/{name}"].extend((target.reading.attribute(name) - truth.reading.attribute(name)).tolist())
        for image, reference, detail in zip(images, target.images, target.detail, strict=True):
            values[f"truth/{name}"].append(psnr(image, reference))
            values[f"detail/{name}"].append(masked_psnr(image, reference, detail))
        if name == CYCLE_EDIT:
            undone = session.edit(session.invert(images), f"{name}={-strength}")
            values["cycle"].extend(psnr(back, real) for back, real in zip(undone, truth.references, strict=True))
    return seconds


def _scores(family: str, values: dict[str, list[float]], seconds: float) -> Scores:
    return Scores(family, _mean(values["psnr"]), _mean(values["ssim"]), _mean(values["perceptual"]),
                  {n: _mean(values[f"achieved/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"wanted/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"truth/{n}"]) for n, _ in EDITS},
                  {n: _mean(values[f"detail/{n}"]) for n, _ in EDITS},
                  _mean(values["cycle"]), seconds)


def json_report(scores: list[Scores], count: int) -> str:
    """The scores as JSON: the images scored, the edits (name -> strength) and per model its title
    and every mean of `Scores` (per-edit means keyed by edit name)."""
    models = [{"title": FAMILY_TITLES[row.family], **asdict(row)} for row in scores]
    return json.dumps({"images": count, "edits": dict(EDITS), "cycle_edit": CYCLE_EDIT, "models": models}, indent=1)


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
