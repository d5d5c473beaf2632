"""The demo prior: a Gaussian latent whose normal-CDF quantiles are the domain's distributions."""

from __future__ import annotations

import numpy as np
import pytest

from warpres.demo.prior import LATENT_DIM, LATENT_FIELDS, params_from_latent, sample_latent, sample_params
from warpres.demo.renderer import SEMANTIC_ATTRIBUTES, FaceParams


@pytest.fixture(scope="module")
def faces() -> list[FaceParams]:
    rng = np.random.default_rng(0)
    return [sample_params(rng) for _ in range(20000)]


def test_every_field_but_the_detail_seeds_is_a_latent_coordinate():
    seeds = {"freckle_seed", "mole_seed", "clothing_seed", "background_seed"}
    assert set(LATENT_FIELDS) == set(FaceParams.field_names()) - seeds
    assert set(SEMANTIC_ATTRIBUTES) <= set(LATENT_FIELDS) and LATENT_DIM == 24


def test_a_face_depends_only_on_the_direction_of_z_as_the_mapping_network_does():
    z, seeds = sample_latent(np.random.default_rng(1))
    np.testing.assert_allclose(params_from_latent(z, seeds).to_vector(), params_from_latent(3.7 * z, seeds).to_vector(),
                               rtol=0, atol=1e-6)  # 3.7 * z rounds in float32


def test_seeds_are_carried_verbatim():
    face = params_from_latent(np.ones(LATENT_DIM), seeds=(1, 2, 3, 4))
    assert (face.freckle_seed, face.mole_seed, face.clothing_seed, face.background_seed) == (1, 2, 3, 4)


@pytest.mark.parametrize(("field", "check"), [
    ("smile", lambda v: abs(np.mean(v)) < 0.03 and abs(np.quantile(v, 0.25) + 0.5) < 0.03),
    ("yaw", lambda v: abs(np.std(v) - 0.4) < 0.02),
    ("glasses", lambda v: abs(np.mean(v == 0) - 0.6) < 0.02 and v[v > 0].min() >= 0.6),
    ("freckle_density", lambda v: abs(np.mean(v == 0) - 0.5) < 0.02 and v[v > 0].min() >= 0.3),
    ("hair_hue", lambda v: abs(np.mean((v >= 0.02) & (v <= 0.12)) - 0.82) < 0.03),
    ("mole_count", lambda v: np.allclose(np.bincount(v.astype(int)) / len(v), [0.4, 0.3, 0.2, 0.1], atol=0.02)),
    ("hair_style", lambda v: np.allclose(np.bincount(v.astype(int)) / len(v), 1 / 6, atol=0.02)),
    ("earring_style", lambda v: abs(np.mean(v == 0) - 0.6) < 0.02 and set(np.unique(v)) == {0, 1, 2, 3}),
])
def test_fields_follow_the_documented_distributions(faces, field, check):
    assert check(np.array([getattr(face, field) for face in faces], dtype=np.float64))
