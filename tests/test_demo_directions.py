"""Demo edit directions: least-squares InterfaceGAN normals in W, in attribute units."""

from __future__ import annotations

import numpy as np
import pytest

from warpres.demo.directions import ATTRIBUTES, fit_direction, fit_directions
from warpres.demo.generator import new_generator


def test_a_known_linear_attribute_is_recovered_in_its_own_units():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5000, 16))
    truth = np.zeros(16)
    truth[3], truth[7] = 0.5, -0.25
    labels = w @ truth + 0.2 + 0.01 * rng.standard_normal(5000)
    vector = fit_direction(w, labels)
    cosine = vector @ truth / np.linalg.norm(vector) / np.linalg.norm(truth)
    assert cosine > 0.999
    assert float(vector @ truth) == pytest.approx(1.0, rel=1e-2)  # strength 1 = +1 label unit


def test_every_semantic_edit_gets_a_direction_in_w():
    library = fit_directions(new_generator(), samples=500)
    assert set(library.names) == set(ATTRIBUTES)
    wplus = np.zeros((1, 12, 64), dtype=np.float32)
    moved = library.resolve("pose").apply(wplus, 1.0)
    assert moved.shape == wplus.shape and np.all(moved[0, 0] == moved[0, 11]) and np.any(moved != 0)
