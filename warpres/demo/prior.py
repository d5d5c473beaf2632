"""The demo domain's prior: a Gaussian latent z that determines a face up to its detail seeds.

The demo generator is a StyleGAN2 whose mapping network takes this z, so `M(z)` for
z ~ N(0, I) is a random face of the domain, exactly as for a GAN-trained generator, and the
trainer's cycle path (W + a (M(z) - W)) works unchanged. Every non-seed field of
:class:`FaceParams` is one coordinate of z (LATENT_FIELDS, in order): the coordinate goes
through the standard normal CDF to u in (0, 1) and then through that field's quantile
function (uniform ranges, the clipped normals of yaw and pitch, the mixtures of hair hue,
glasses, eye colour, freckles and earrings, the category probabilities). The four detail
seeds (freckles, moles, clothing, background) are not in z: the generator cannot know them,
which is what leaves those details to the residual branches.

The mapping network normalises z to unit RMS before its first layer, so z and 2 z give the
same W. The prior therefore reads only the direction of z: it normalises z the same way
(sqrt(D) z / |z|) before the CDF, and a face never depends on information the mapping discards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from warpres.demo.renderer import (
    SEED_LIMIT,
    BackgroundStyle,
    ClothingPattern,
    EarringStyle,
    FaceParams,
    HairStyle,
)

SEED_FIELDS = ("freckle_seed", "mole_seed", "clothing_seed", "background_seed")


def _uniform(low: float, high: float) -> Callable[[float, float], float]:
    return lambda u, g: low + (high - low) * u


def _clipped_normal(sigma: float) -> Callable[[float, float], float]:
    return lambda u, g: float(np.clip(sigma * g, -1.0, 1.0))


def _zero_or_uniform(p_zero: float, low: float, high: float) -> Callable[[float, float], float]:
    return lambda u, g: 0.0 if u < p_zero else low + (high - low) * (u - p_zero) / (1 - p_zero)


def _mixture(parts: Sequence[tuple[float, float, float]]) -> Callable[[float, float], float]:
    """parts: (probability, low, high) of uniform components, in order of u."""
    weights = np.array([probability for probability, _, _ in parts])
    ends = np.cumsum(weights)

    def quantile(u: float, g: float) -> float:
        k = min(int(np.searchsorted(ends, u, side="right")), len(parts) - 1)
        _, low, high = parts[k]
        return low + (high - low) * min((u - (ends[k] - weights[k])) / weights[k], 1.0)
    return quantile


def _category(probabilities: Sequence[float]) -> Callable[[float, float], int]:
    edges = np.cumsum(probabilities)[:-1]
    return lambda u, g: int(np.searchsorted(edges, u, side="right"))


def _uniform_category(count: int) -> Callable[[float, float], int]:
    return _category([1 / count] * count)


_EARRINGS = len(EarringStyle) - 1
QUANTILES: dict[str, Callable[[float, float], float | int]] = {
    "smile": _uniform(-1.0, 1.0),
    "yaw": _clipped_normal(0.4),
    "pitch": _clipped_normal(0.3),
    "hair_hue": _mixture([(0.8, 0.02, 0.12), (0.2, 0.0, 1.0)]),  # natural, else dyed
    "glasses": _zero_or_uniform(0.6, 0.6, 1.0),
    "age": _uniform(0.0, 1.0),
    "skin_tone": _uniform(0.0, 1.0),
    "face_width": _uniform(0.0, 1.0),
    "jaw_width": _uniform(0.0, 1.0),
    "eye_hue": _mixture([(0.5, 0.05, 0.1), (0.3, 0.5, 0.62), (0.2, 0.2, 0.33)]),  # brown, blue-grey, green
    "eye_value": _uniform(0.0, 1.0),
    "hair_style": _uniform_category(len(HairStyle)),
    "hair_saturation": _uniform(0.2, 0.8),
    "hair_value": _uniform(0.08, 0.95),
    "brow_thickness": _uniform(0.0, 1.0),
    "mouth_width": _uniform(0.0, 1.0),
    "freckle_density": _zero_or_uniform(0.5, 0.3, 1.0),
    "mole_count": _category([0.4, 0.3, 0.2, 0.1]),
    "earring_style": _category([0.6] + [0.4 / _EARRINGS] * _EARRINGS),
    "earring_hue": _uniform(0.0, 1.0),
    "clothing_pattern": _uniform_category(len(ClothingPattern)),
    "clothing_hue": _uniform(0.0, 1.0),
    "background_style": _uniform_category(len(BackgroundStyle)),
    "background_hue": _uniform(0.0, 1.0),
}
LATENT_FIELDS = tuple(QUANTILES)
LATENT_DIM = len(LATENT_FIELDS)


def normalized_latent(z: np.ndarray) -> np.ndarray:
    """sqrt(D) z / |z|: the part of z the mapping network sees (unit RMS)."""
    z = np.asarray(z, dtype=np.float64)
    if z.shape != (LATENT_DIM,):
        raise ValueError(f"z must have shape ({LATENT_DIM},), got {z.shape}")
    return z * math.sqrt(LATENT_DIM) / max(float(np.linalg.norm(z)), 1e-12)


def params_from_latent(z: np.ndarray, seeds: Sequence[int] = (0, 0, 0, 0)) -> FaceParams:
    """The face of latent z (D,) with detail seeds (freckle, mole, clothing, background)."""
    if len(seeds) != len(SEED_FIELDS):
        raise ValueError(f"expected {len(SEED_FIELDS)} seeds {SEED_FIELDS}, got {len(seeds)}")
    values = {}
    for name, g in zip(LATENT_FIELDS, normalized_latent(z), strict=True):
        u = 0.5 * (1.0 + math.erf(g / math.sqrt(2.0)))
        values[name] = QUANTILES[name](min(max(u, 0.0), math.nextafter(1.0, 0.0)), float(g))
    values |= {name: int(seed) for name, seed in zip(SEED_FIELDS, seeds, strict=True)}
    return FaceParams(**values)


def sample_latent(rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, ...]]:
    """z ~ N(0, I) (float32, (D,)) and four detail seeds uniform in [0, 2**24)."""
    z = rng.standard_normal(LATENT_DIM).astype(np.float32)
    seeds = tuple(int(s) for s in rng.integers(SEED_LIMIT, size=len(SEED_FIELDS)))
    return z, seeds


def sample_params(rng: np.random.Generator) -> FaceParams:
    """A random face of the domain: `params_from_latent` of a `sample_latent` draw."""
    return params_from_latent(*sample_latent(rng))
