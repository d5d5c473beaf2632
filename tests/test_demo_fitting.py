"""The demo models' fitting loop resumes exactly, and the domain data stream is reproducible."""

from __future__ import annotations

import pytest
import torch

from warpres.demo.data import RenderedFaces
from warpres.demo.encoder import EncoderObjective, new_encoder
from warpres.demo.fitting import FitConfig, fit
from warpres.demo.generator import GeneratorObjective, new_generator
from warpres.demo.regressor import TARGET_NAMES, AttributeRegressor, hue_from_targets, regression_targets
from warpres.demo.renderer import FaceParams
from warpres.errors import TrainingError
from warpres.training.runlog import read_log


def _fit(work, until):
    torch.manual_seed(0)
    regressor = AttributeRegressor()

    def objective(batch):
        images, _, targets = batch
        return {"loss": (regressor(images).float() - targets).abs().mean()}

    config = FitConfig(steps=4, batch_size=2, workers=0, log_every=1, checkpoint_every=3)
    fit("regressor", regressor, objective, RenderedFaces(seed=3, size=32), work, config, progress=False, until=until)
    return regressor


def test_an_interrupted_fit_continues_exactly(tmp_path):
    straight = _fit(tmp_path / "a", until=None)
    _fit(tmp_path / "b", until=2)
    resumed = _fit(tmp_path / "b", until=None)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert [row["loss"] for row in read_log(tmp_path / "a" / "regressor.log.csv")] == [
        row["loss"] for row in read_log(tmp_path / "b" / "regressor.log.csv")]


def test_rendered_faces_are_a_pure_function_of_seed_and_index():
    first, again, other = RenderedFaces(seed=1, size=32)[5], RenderedFaces(seed=1, size=32)[5], RenderedFaces(2, 32)[5]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == (3, 32, 32) and first[1].shape == (24,) and first[2].shape == (len(TARGET_NAMES),)


def test_hues_are_recovered_from_their_circular_targets():
    targets = torch.from_numpy(regression_targets(FaceParams(hair_hue=0.93, clothing_hue=0.02)))[None]
    assert hue_from_targets(targets, "hair_hue").item() == pytest.approx(0.93, abs=1e-6)
    assert hue_from_targets(targets, "clothing_hue").item() == pytest.approx(0.02, abs=1e-6)


def test_the_encoder_objective_trains_e0_through_the_frozen_generator():
    generator = new_generator()
    encoder = new_encoder(generator)
    images, z, targets = (torch.stack(t) for t in zip(*(RenderedFaces(seed=4)[k] for k in range(2)), strict=True))
    terms = EncoderObjective(encoder, generator, None)((images, z, targets))
    terms["loss"].backward()
    assert set(terms) == {"loss", "l1", "latent"} and all(torch.isfinite(v) for v in terms.values())
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is not None for p in encoder.parameters())


def test_the_generator_objective_compares_g_of_z_with_the_render():
    generator = new_generator()
    images, z, targets = (torch.stack(t) for t in zip(*(RenderedFaces(seed=4)[k] for k in range(2)), strict=True))
    terms = GeneratorObjective(generator, None)((images, z, targets))
    with torch.no_grad():
        expected = (generator(z) - images).abs().mean()
    torch.testing.assert_close(terms["l1"], expected)
    assert torch.equal(terms["loss"], terms["l1"])  # no perceptual network given


def test_resuming_with_another_plan_is_refused(tmp_path):
    _fit(tmp_path, until=2)
    regressor = AttributeRegressor()
    other = FitConfig(steps=6, batch_size=2, workers=0)
    with pytest.raises(TrainingError, match="fitted with other steps"):
        fit("regressor", regressor, lambda batch: {}, RenderedFaces(seed=3, size=32), tmp_path, other, progress=False)
