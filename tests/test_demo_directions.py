"""Demo edit directions: least-squares InterfaceGAN normals, in attribute units, in the W of
E0's codes of labelled renders."""

from __future__ import annotations

import numpy as np
import pytest

from warpres.demo.codes import Codes, encode_renders
from warpres.demo.directions import ATTRIBUTES, fit_direction, fit_directions, readability
from warpres.demo.encoder import new_encoder
from warpres.demo.prior import params_from_latent, sample_latent, sample_params
from warpres.export.fingerprint import encoder_fingerprint


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


def test_codes_of_renders_keep_their_labels_and_name_the_encoder_that_made_them():
    encoder = new_encoder()
    codes = encode_renders(encoder, seed=7, count=6, batch_size=4, workers=0, progress=False)
    assert codes.encoder == encoder_fingerprint(encoder) != encoder_fingerprint(new_encoder(seed=1))
    assert codes.z.shape == (6, 24) and codes.w.shape == (6, 64) and np.all(np.isfinite(codes.w))
    first, _ = sample_latent(np.random.default_rng([7, 0]))
    np.testing.assert_array_equal(codes.z[0], first)
    assert codes.faces()[3] == params_from_latent(*sample_latent(np.random.default_rng([7, 3])))


def test_codes_survive_a_round_trip_through_their_file(tmp_path):
    rng = np.random.default_rng(0)
    codes = Codes(rng.standard_normal((5, 24)).astype(np.float32), rng.standard_normal((5, 64)).astype(np.float32),
                  np.stack([sample_params(rng).to_vector() for _ in range(5)]), encoder="a" * 64)
    codes.save(tmp_path / "codes.safetensors")
    again = Codes.load(tmp_path / "codes.safetensors")
    assert again.faces() == codes.faces()
    np.testing.assert_array_equal(again.w, codes.w)
    assert again.encoder == "a" * 64


def test_every_semantic_edit_gets_a_direction_in_w():
    rng = np.random.default_rng(1)
    faces = [sample_params(rng) for _ in range(300)]
    codes = Codes(np.zeros((300, 24), np.float32), rng.standard_normal((300, 64)).astype(np.float32),
                  np.stack([face.to_vector() for face in faces]), encoder="")
    library = fit_directions(codes)
    assert set(library.names) == set(ATTRIBUTES)
    wplus = np.zeros((1, 12, 64), dtype=np.float32)
    moved = library.resolve("pose").apply(wplus, 1.0)
    assert moved.shape == wplus.shape and np.all(moved[0, 0] == moved[0, 11]) and np.any(moved != 0)


def test_readability_is_high_for_an_attribute_w_encodes_and_near_zero_for_one_it_does_not():
    rng = np.random.default_rng(2)
    faces = [sample_params(rng) for _ in range(2000)]
    yaw = np.array([face.yaw for face in faces])
    w = rng.standard_normal((2000, 64))
    w[:, 0] = yaw + 0.05 * rng.standard_normal(2000)  # pose is in W; the smile is not
    codes = Codes(np.zeros((2000, 24), np.float32), w.astype(np.float32),
                  np.stack([face.to_vector() for face in faces]), encoder="")
    scores = readability(codes)
    assert scores["pose"] > 0.9 and abs(scores["smile"]) < 0.1
