"""`warpres demo`: the shipped models edit the shipped samples; one grid PNG shows the result.

Rows are (sample, edit) pairs; columns are the input, the ground truth (the renderer's image of
the same face with the attribute changed by the same amount), and the edit by E0 only, by
StyleRes and by WarpRes. Each model runs through `Session` on the default backend (OpenVINO on
a CPU), exported into the cache the first time (`warpres.demo.bundle.exported`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from warpres.demo import DIRECTIONS, SAMPLES
from warpres.demo.bundle import BUNDLE, demo_models
from warpres.demo.directions import FIELD_EDITS
from warpres.demo.renderer import FaceParams, render
from warpres.errors import EditError
from warpres.media.imageio import read_image, write_image
from warpres.runtime.session import Session

COLUMNS = (("input", None), ("ground truth", None), ("E0 only", "inversion"), ("StyleRes", "styleres"),
           ("WarpRes", "warpres"))
EDITS = (("smile", 1.0), ("pose", 0.8), ("hair_blue", 1.2))
_LABEL_HEIGHT = 18


@dataclass(frozen=True)
class DemoResult:
    path: Path
    seconds: float
    backends: dict[str, str]


def edited_truth(params: FaceParams, edit: str, strength: float) -> FaceParams:
    """The face the edit asks for, in the units `warpres.demo.directions` fits its directions in."""
    if edit in FIELD_EDITS:
        field = FIELD_EDITS[edit]
        low = -1.0 if field in ("smile", "yaw", "pitch") else 0.0
        return dataclasses.replace(params, **{field: float(np.clip(getattr(params, field) + strength, low, 1.0))})
    if edit not in ("hair_red", "hair_blue"):
        raise EditError(f"no ground truth for the edit {edit!r}")
    angle = 2 * math.pi * params.hair_hue
    red, blue = math.cos(angle), -math.sin(angle)
    red, blue = (red + strength, blue) if edit == "hair_red" else (red, blue + strength)
    return dataclasses.replace(params, hair_hue=(math.atan2(-blue, red) / (2 * math.pi)) % 1.0)


def load_samples(folder: Path = SAMPLES) -> list[tuple[np.ndarray, FaceParams]]:
    """The sample images (uint8 RGB) and the renderer parameters they were drawn from."""
    vectors = json.loads((folder / "samples.json").read_text())
    return [(read_image(folder / name), FaceParams.from_vector(np.array(vector))) for name, vector in vectors.items()]


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((_LABEL_HEIGHT, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (3, _LABEL_HEIGHT - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile])


def run_demo(output: Path, backend: str = "auto", bundle: Path = BUNDLE, samples: Path = SAMPLES,
             directions: Path = DIRECTIONS, cache: Path | None = None) -> DemoResult:
    """Edit every sample with every EDITS entry by each family; write the grid to `output`."""
    started = time.perf_counter()
    models = demo_models(backend, bundle, cache)
    sessions = {family: Session(path, backend, directions=directions) for family, path in models.items()}
    faces = load_samples(samples)
    images = [image for image, _ in faces]
    specs = [f"{name}={strength}" for name, strength in EDITS]
    edited = {family: session.edit_many(session.invert(images), specs) for family, session in sessions.items()}
    size = images[0].shape[0]
    rows = []
    for sample, (image, params) in enumerate(faces):
        for index, (edit, strength) in enumerate(EDITS):
            truth = render(edited_truth(params, edit, strength), size)
            outputs = [edited[family][index][sample] for _, family in COLUMNS[2:]]
            tiles = [image, truth, *(cv2.resize(o, (size, size), interpolation=cv2.INTER_AREA) for o in outputs)]
            titles = [f"{edit} {strength:+g}", "ground truth", *(title for title, _ in COLUMNS[2:])]
            rows.append(np.concatenate([_label(t, title) for t, title in zip(tiles, titles, strict=True)], axis=1))
    write_image(output, np.concatenate(rows, axis=0))
    return DemoResult(output, time.perf_counter() - started,
                      {family: session.backend_reason for family, session in sessions.items()})
