"""Demo edit directions: the mean change of E0's W+ codes of labelled renders per unit of each
attribute, InterfaceGAN-style linear edits in the attribute's own units."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

from warpres.demo.codes import Codes, encode_renders
from warpres.demo.directions import ATTRIBUTES, fit_direction, fit_directions, readability
from warpres.demo.encoder import new_encoder
from warpres.demo.prior import params_from_latent, sample_latent, sample_params
from warpres.errors import TrainingError
from warpres.export.fingerprint import encoder_fingerprint


def test_a_known_linear_attribute_is_recovered_in_its_own_units():
    rng = np.random.default_rng(0)
    labels = rng.uniform(-1, 1, 5000)
    truth = np.zeros((4, 16))
    truth[0, 3], truth[2, 7] = 0.5, -0.25  # the attribute lives in two layers
    codes = 0.2 + labels[:, None, None] * truth + 0.1 * rng.standard_normal((5000, 4, 16))
    vector = fit_direction(codes, labels)
    assert vector.shape == (4, 16)
    np.testing.assert_allclose(vector, truth, atol=0.01)  # strength 1 = the code of a face one unit further


def test_the_direction_follows_the_attribute_not_the_reading_that_cancels_a_nuisance():
    """Dimension 0 holds the attribute plus a large nuisance that dimension 1 holds alone: the best
    linear reading is dim 0 - dim 1, but faces with a larger attribute differ in dim 0 only."""
    rng = np.random.default_rng(1)
    labels, nuisance = rng.uniform(-1, 1, 5000), 3 * rng.standard_normal(5000)
    codes = np.stack([labels + nuisance, nuisance], axis=1)
    vector = fit_direction(codes, labels)
    assert vector[0] == pytest.approx(1.0, abs=0.15) and abs(vector[1]) < 0.15


def test_labels_that_do_not_vary_have_no_direction():
    with pytest.raises(ValueError, match="do not vary"):
        fit_direction(np.ones((4, 3)), np.full(4, 0.5))


def test_codes_of_renders_keep_their_labels_and_name_the_encoder_that_made_them():
    encoder = new_encoder()
    codes = encode_renders(encoder, seed=7, count=6, batch_size=4, workers=0, progress=False)
    assert codes.encoder == encoder_fingerprint(encoder) != encoder_fingerprint(new_encoder(seed=1))
    assert codes.z.shape == (6, 24) and codes.wplus.shape == (6, encoder.config.num_ws, 64)
    assert np.all(np.isfinite(codes.wplus))
    np.testing.assert_allclose(codes.w, codes.wplus.mean(axis=1))
    first, _ = sample_latent(np.random.default_rng([7, 0]))
    np.testing.assert_array_equal(codes.z[0], first)
    assert codes.faces()[3] == params_from_latent(*sample_latent(np.random.default_rng([7, 3])))


def test_codes_survive_a_round_trip_through_their_file(tmp_path):
    rng = np.random.default_rng(0)
    codes = Codes(rng.standard_normal((5, 24)).astype(np.float32), rng.standard_normal((5, 3, 64)).astype(np.float32),
                  np.stack([sample_params(rng).to_vector() for _ in range(5)]), encoder="a" * 64)
    codes.save(tmp_path / "codes.safetensors")
    again = Codes.load(tmp_path / "codes.safetensors")
    assert again.faces() == codes.faces()
    np.testing.assert_array_equal(again.wplus, codes.wplus)
    assert again.encoder == "a" * 64


def test_codes_of_the_earlier_format_without_w_plus_are_refused_with_the_stage_that_rebuilds_them(tmp_path):
    save_file({"z": np.zeros((2, 24), np.float32), "w": np.zeros((2, 64), np.float32),
               "params": np.zeros((2, 8))}, str(tmp_path / "codes.safetensors"))
    with pytest.raises(TrainingError, match="without W\\+.*mapping stage"):
        Codes.load(tmp_path / "codes.safetensors")


def test_every_semantic_edit_gets_a_direction_in_w():
    rng = np.random.default_rng(1)
    faces = [sample_params(rng) for _ in range(300)]
    codes = Codes(np.zeros((300, 24), np.float32), rng.standard_normal((300, 12, 64)).astype(np.float32),
                  np.stack([face.to_vector() for face in faces]), encoder="")
    library = fit_directions(codes)
    assert set(library.names) == set(ATTRIBUTES)
    wplus = np.zeros((1, 12, 64), dtype=np.float32)
    moved = library.resolve("pose").apply(wplus, 1.0)
    assert moved.shape == wplus.shape and np.any(moved[0, 0] != moved[0, 11])  # each layer its own way


def test_readability_is_high_for_an_attribute_w_encodes_and_near_zero_for_one_it_does_not():
    rng = np.random.default_rng(2)
    faces = [sample_params(rng) for _ in range(2000)]
    yaw = np.array([face.yaw for face in faces])
    w = rng.standard_normal((2000, 2, 32))
    w[:, 1, 0] = yaw + 0.05 * rng.standard_normal(2000)  # pose is in W+; the smile is not
    codes = Codes(np.zeros((2000, 24), np.float32), w.astype(np.float32),
                  np.stack([face.to_vector() for face in faces]), encoder="")
    scores = readability(codes)
    assert scores["pose"] > 0.9 and abs(scores["smile"]) < 0.1
