"""Edit directions of the demo domain, fitted InterfaceGAN-style in W+ on labelled samples.

InterfaceGAN separates samples labelled by an attribute with a linear boundary in W and edits
along its normal. Here the samples are E0's W+ codes of renders (`warpres.demo.codes`), each
labelled exactly by the renderer parameters behind it, so the linear model is fitted on all
samples without thresholding, in the generative direction: the edit vector is the mean change
of the code per unit of the attribute, Cov(W+, a) / Var(a) (for a two-class label, the
difference of the class means). Strength t moves a code to where the codes of faces whose
attribute is t higher lie, in the attribute's own units (smile and pose in [-1, 1], so pose=1
turns the head by ~35 degrees). The normal of the least-squares reading a ~ <n, W> is no edit
direction here: it also cancels whatever it can of the other attributes' variation, and on the
demo's codes strength 0.8 along it turned the rendered heads by 0.04 (read by the regressor;
the ground truth: 0.57), against 0.42 along the W+ vector above.

How far the generator's edit reaches the ground truth, read by the bundle's reader on 64 faces
(stream 8): along these vectors at 1, 1.5 and 2 times the strength, pose=0.8 reads 61%, 78% and
81% of the truth's turn and smile=1 66%, 71% and 72% of its smile; E0's inversion of the
ground-truth images themselves reads 89% (pose) and 65% (smile). Scaling the directions cannot
lift the smile past what this autoencoder draws of a mouth.

Hair colour is a hue (circular), so it is edited along two linear readings of it: `hair_red`
(cos of the hue angle: red +, cyan -) and `hair_blue` (minus its sine: blue +, yellow -).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from warpres.demo.codes import Codes
from warpres.demo.renderer import FaceParams
from warpres.edits import DirectionLibrary, LinearDirection

# edit name -> the FaceParams field it moves, for the edits that move one field linearly
FIELD_EDITS = {"smile": "smile", "pose": "yaw", "pitch": "pitch", "glasses": "glasses", "age": "age"}
ATTRIBUTES: dict[str, Callable[[FaceParams], float]] = {
    **{edit: (lambda p, field=field: getattr(p, field)) for edit, field in FIELD_EDITS.items()},
    "hair_red": lambda p: math.cos(2 * math.pi * p.hair_hue),
    "hair_blue": lambda p: -math.sin(2 * math.pi * p.hair_hue),
}
# The strengths that stay inside the renderer's range from a typical face: a field edit swings
# its [-1, 1] or [0, 1] field by at most 1; a hue reading in [-1, 1] by 1.5.
STRENGTH_RANGES = {**{edit: (-1.0, 1.0) for edit in FIELD_EDITS}, "hair_red": (-1.5, 1.5), "hair_blue": (-1.5, 1.5)}


def fit_direction(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """codes (N, ...), labels (N,) -> the edit vector (...): the slope of the least-squares fit
    codes ~ c + labels * v, i.e. Cov(codes, labels) / Var(labels)."""
    centred = labels - labels.mean()
    spread = float(centred @ centred)
    if spread == 0:
        raise ValueError("the labels do not vary: no direction to fit")
    return np.tensordot(centred, codes - codes.mean(axis=0), axes=1) / spread


def readability(codes: Codes, held_out: float = 0.25) -> dict[str, float]:
    """Per ATTRIBUTES entry, the R^2 on the last `held_out` share of the codes of the linear
    reading fitted on the rest: how much of the attribute W+ encodes linearly. Near 0, the
    attribute's direction has nothing to move."""
    w, faces = codes.wplus.reshape(len(codes.wplus), -1).astype(np.float64), codes.faces()
    design = np.concatenate([w, np.ones((w.shape[0], 1))], axis=1)
    split = int(round(len(w) * (1 - held_out)))
    scores = {}
    for name, read in ATTRIBUTES.items():
        labels = np.array([read(face) for face in faces])
        solution, *_ = np.linalg.lstsq(design[:split], labels[:split], rcond=None)
        residual = labels[split:] - design[split:] @ solution
        scores[name] = float(1 - residual.var() / max(labels[split:].var(), 1e-12))
    return scores


def fit_directions(codes: Codes) -> DirectionLibrary:
    """One LinearDirection (num_ws, w_dim) per ATTRIBUTES entry, fitted on E0's W+ codes of
    labelled renders."""
    w, faces = codes.wplus.astype(np.float64), codes.faces()
    return DirectionLibrary(
        LinearDirection(name, fit_direction(w, np.array([read(face) for face in faces])), source="interfacegan",
                        strength_range=STRENGTH_RANGES[name])
        for name, read in ATTRIBUTES.items())
