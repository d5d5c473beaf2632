"""The demo models' fitting loop resumes exactly, and the domain data stream is reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader

from tests.conftest import tiny_editing_model
from warpres.demo import build
from warpres.demo.build import (
    READER_SEED,
    _start_from,
    branch_config,
    build_directions,
    build_reader,
    same_base,
)
from warpres.demo.data import PoseCurriculum, RenderedFaces
from warpres.demo.encoder import (
    COMPONENT_WEIGHT,
    DELTA_WEIGHT,
    PROBE_WEIGHT,
    PROBED_TARGETS,
    SPREAD,
    SPREAD_WEIGHT,
    AutoencoderObjective,
    AutoencoderPair,
    new_encoder,
    spread_shortfall,
)
from warpres.demo.fitting import FitConfig, fit
from warpres.demo.generator import fit_mapping, new_generator
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import (
    LINEAR_TARGETS,
    TARGET_NAMES,
    AttributeRegressor,
    explained_variance,
    hue_from_targets,
    load_regressor,
    regression_targets,
)
from warpres.demo.renderer import FaceParams, render, render_with_masks, with_attribute
from warpres.errors import TrainingError
from warpres.images import to_model_input
from warpres.training.runlog import read_log


def _fit(work, until, group_lrs=(), pose_curriculum=None):
    torch.manual_seed(0)
    regressor = AttributeRegressor()

    def objective(batch):
        images, _, targets = batch
        return {"loss": (regressor(images).float() - targets).abs().mean()}

    config = FitConfig(steps=4, batch_size=2, workers=0, log_every=1, checkpoint_every=3, group_lrs=group_lrs,
                       pose_curriculum=pose_curriculum)
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


def test_parameter_groups_train_at_their_own_rates_and_drop_with_the_rest(tmp_path, monkeypatch):
    """With lr 2e-3 and the head at 0 (a rate of its own), the head stays put, the rest moves, and a
    run interrupted before the drop (step 4 of 4 is past 80%) resumes into the same weights."""
    initial = {k: v.clone() for k, v in _fit(tmp_path / "init", until=0).state_dict().items()}
    trained = _fit(tmp_path / "a", until=None, group_lrs=(("head.", 0.0),)).state_dict()
    head = [k for k in trained if k.startswith("head.")]
    assert head and all(torch.equal(trained[k], initial[k]) for k in head)
    body = [k for k in trained if not k.startswith("head.") and trained[k].is_floating_point()]
    assert any(not torch.equal(trained[k], initial[k]) for k in body)
    _fit(tmp_path / "b", until=2, group_lrs=(("head.", 0.0),))
    resumed = _fit(tmp_path / "b", until=None, group_lrs=(("head.", 0.0),)).state_dict()
    for name, value in trained.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(TrainingError, match="fitted with other group_lrs"):
        _fit(tmp_path / "b", until=None, group_lrs=(("head.", 1e-3),))
    with pytest.raises(TrainingError, match="fitted with other pose_curriculum"):
        _fit(tmp_path / "b", until=None, group_lrs=(("head.", 0.0),), pose_curriculum=(1, 1))


def test_rendered_faces_are_a_pure_function_of_seed_and_index():
    first, again, other = RenderedFaces(seed=1, size=32)[5], RenderedFaces(seed=1, size=32)[5], RenderedFaces(2, 32)[5]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], other[0])
    assert first[0].shape == (3, 32, 32) and first[1].shape == (24,) and first[2].shape == (len(TARGET_NAMES),)


def test_the_pose_curriculum_renders_early_samples_frontally_then_ramps_to_the_prior():
    curriculum = PoseCurriculum(frontal=4, ramp=4)
    assert [curriculum.scale(k) for k in range(10)] == [0, 0, 0, 0, 0.25, 0.5, 0.75, 1, 1, 1]
    plain, taught = RenderedFaces(seed=7, size=64), RenderedFaces(seed=7, size=64, pose_curriculum=curriculum)
    (early, _, early_targets), (early_posed, _, early_posed_targets) = taught[2], plain[2]
    frontal = params_from_latent(*sample_latent(np.random.default_rng([7, 2])))
    assert abs(frontal.yaw) > 0.01
    expected = render(with_attribute(frontal, yaw=0.0, pitch=0.0), 64)
    torch.testing.assert_close(early, torch.from_numpy(to_model_input(expected, 64)[0]))
    assert not torch.equal(early, early_posed)
    yaw = TARGET_NAMES.index("yaw")
    assert early_targets[yaw] == 0 and early_posed_targets[yaw] != 0  # the labels follow the pose drawn
    ramped_yaw, prior_yaw = taught[5][2][yaw].item(), plain[5][2][yaw].item()
    assert prior_yaw != 0 and ramped_yaw == pytest.approx(0.5 * prior_yaw, abs=1e-6)
    assert all(torch.equal(a, b) for a, b in zip(taught[8], plain[8], strict=True))


def test_hues_are_recovered_from_their_circular_targets():
    targets = torch.from_numpy(regression_targets(FaceParams(hair_hue=0.93, clothing_hue=0.02)))[None]
    assert hue_from_targets(targets, "hair_hue").item() == pytest.approx(0.93, abs=1e-6)
    assert hue_from_targets(targets, "clothing_hue").item() == pytest.approx(0.02, abs=1e-6)


def _renders(count):
    faces = RenderedFaces(seed=4, autoencoder=True)
    return tuple(torch.stack(t) for t in zip(*(faces[k] for k in range(count)), strict=True))


def test_the_component_mask_covers_the_eyes_and_mouth_with_a_margin_and_nothing_else():
    params = params_from_latent(*sample_latent(np.random.default_rng([4, 0])))
    _, masks = render_with_masks(params, 128)
    mask = RenderedFaces(seed=4, autoencoder=True)[0][3][0].numpy().astype(bool)
    assert np.array_equal(RenderedFaces(seed=4, autoencoder=True)[0][0], RenderedFaces(seed=4)[0][0])
    assert mask[masks["mouth"] | masks["eyes"]].all()
    grown = mask & ~(masks["mouth"] | masks["eyes"])
    assert 0 < grown.sum() < 3 * (masks["mouth"] | masks["eyes"]).sum()
    assert not mask[masks["background"] | masks["clothing"] | masks["hair"]].any()


def test_the_autoencoder_objective_trains_e0_the_synthesis_and_the_probe_together():
    pair = AutoencoderPair(new_encoder(), new_generator())
    images, z, targets, components, plain = _renders(3)
    terms = AutoencoderObjective(pair, None)((images, z, targets, components, plain))
    terms["loss"].backward()
    with torch.no_grad():
        wplus, _ = pair.encoder(images)
        error = (pair.generator.synthesis(wplus) - plain).abs()  # the input without its details
        codes = wplus.mean(dim=1)
        standardised = (codes - codes.mean(dim=0)) / (codes.var(dim=0, unbiased=False) + 1e-5).sqrt()
        probed = pair.probe[1](standardised)  # the batch's own statistics, as in training
    torch.testing.assert_close(terms["l1"], error.mean())
    inside = components.expand_as(error).bool()
    torch.testing.assert_close(terms["components"], error[inside].mean())
    torch.testing.assert_close(terms["delta"], (wplus[:, 1:] - wplus[:, :1]).square().mean())
    expected_probe = (probed - targets[:, [TARGET_NAMES.index(n) for n in PROBED_TARGETS]]).square().mean()
    torch.testing.assert_close(terms["probe"], expected_probe)
    torch.testing.assert_close(terms["spread"], (SPREAD - codes.tanh().std(dim=0)).clamp(min=0).mean())
    emphasis = COMPONENT_WEIGHT * terms["components"] * components.mean()
    torch.testing.assert_close(terms["loss"], terms["l1"] + emphasis + PROBE_WEIGHT * terms["probe"]
                               + SPREAD_WEIGHT * terms["spread"] + DELTA_WEIGHT * terms["delta"])
    trained = [*pair.encoder.parameters(), *pair.generator.synthesis.parameters(), *pair.probe.parameters()]
    assert all(p.grad is not None for p in trained)
    assert all(p.grad is None for p in pair.generator.mapping.parameters())  # fitted afterwards


def test_one_image_with_huge_codes_cannot_lift_the_spread_of_a_collapsed_batch():
    collapsed = torch.zeros(16, 64)
    collapsed[0] = 100.0
    assert collapsed.std(dim=0).min() > SPREAD  # the raw spread would count it as spread out
    assert float(spread_shortfall(collapsed)) > SPREAD - 0.26  # one of 16 lifts tanh's spread by <= 1/4
    torch.manual_seed(0)
    assert float(spread_shortfall(0.8 * torch.randn(256, 64))) < 0.02


def test_a_new_autoencoder_fit_starts_from_an_earlier_e0_and_g(tmp_path):
    earlier = AutoencoderPair(new_encoder(seed=1), new_generator())
    state = {f"module.{k}": v for k, v in earlier.state_dict().items() if not k.startswith("probe.")}
    save_file(state, str(tmp_path / "earlier.safetensors"))
    pair = AutoencoderPair(new_encoder(seed=2), new_generator())
    _start_from(pair, tmp_path / "earlier.safetensors")
    for name, value in earlier.generator.state_dict().items():
        assert torch.equal(pair.generator.state_dict()[name], value), name
    images = _renders(2)[0]
    earlier.encoder.eval(), pair.encoder.eval()
    with torch.no_grad():
        before, after = earlier.encoder(images)[0], pair.encoder(images)[0]
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_a_new_autoencoder_fit_refuses_a_checkpoint_of_another_network(tmp_path):
    save_file({"module.head.weight": torch.zeros(2, 2)}, str(tmp_path / "regressor.safetensors"))
    with pytest.raises(TrainingError, match="not an autoencoder fit"):
        _start_from(AutoencoderPair(new_encoder(), new_generator()), tmp_path / "regressor.safetensors")


def test_the_mapping_is_fitted_onto_the_codes_and_tracks_their_mean():
    generator = new_generator()
    rng = torch.Generator().manual_seed(0)
    z = torch.randn(2000, generator.config.z_dim, generator=rng)
    direction = z / z.norm(dim=1, keepdim=True)  # all the mapping sees of z: it normalises z first
    w = torch.tanh(direction[:, :8] @ torch.randn(8, generator.config.w_dim, generator=rng)) + 0.5
    spread = float(w.var(dim=0).mean())
    error = fit_mapping(generator, z, w, steps=600, progress=False)
    assert error < 0.2 * spread
    torch.testing.assert_close(generator.mapping.w_avg, generator.mapping(z)[:, 0].mean(dim=0))


def test_resuming_with_another_plan_is_refused(tmp_path):
    _fit(tmp_path, until=2)
    regressor = AttributeRegressor()
    other = FitConfig(steps=4, batch_size=2, lr=1e-3, workers=0)
    with pytest.raises(TrainingError, match="fitted with other lr"):
        fit("regressor", regressor, lambda batch: {}, RenderedFaces(seed=3, size=32), tmp_path, other, progress=False)


def test_a_run_is_lengthened_before_its_learning_rate_drops_but_not_after(tmp_path):
    _fit(tmp_path, until=3)  # 4 steps: the rate drops after step 3
    longer = FitConfig(steps=40, batch_size=2, workers=0, log_every=1)
    fit("regressor", AttributeRegressor(), lambda batch: {"loss": torch.zeros((), requires_grad=True)},
        RenderedFaces(seed=3, size=32), tmp_path, longer, progress=False, until=4)
    assert [row["step"] for row in read_log(tmp_path / "regressor.log.csv")][-1] == 4
    zero = lambda batch: {"loss": torch.zeros((), requires_grad=True)}  # noqa: E731
    ten = FitConfig(steps=10, batch_size=2, workers=0)  # the rate drops after step 8
    fit("regressor", AttributeRegressor(), zero, RenderedFaces(seed=3, size=32), tmp_path / "dropped", ten,
        progress=False, until=9)
    with pytest.raises(TrainingError, match="fitted with other steps"):
        fit("regressor", AttributeRegressor(), zero, RenderedFaces(seed=3, size=32), tmp_path / "dropped",
            FitConfig(steps=20, batch_size=2, workers=0), progress=False)


def test_a_finished_fit_continues_to_more_steps_as_a_warm_restart(tmp_path, caplog):
    _fit(tmp_path, until=None)
    longer = FitConfig(steps=6, batch_size=2, workers=0, log_every=1)
    with caplog.at_level("WARNING"):
        fit("regressor", AttributeRegressor(), lambda batch: {"loss": torch.zeros((), requires_grad=True)},
            RenderedFaces(seed=3, size=32), tmp_path, longer, progress=False)
    assert "warm restart" in caplog.text
    assert [row["step"] for row in read_log(tmp_path / "regressor.log.csv")] == [1, 2, 3, 4, 5, 6]


def test_a_branch_run_on_another_e0_and_generator_is_told_apart():
    model = tiny_editing_model("warpres")
    other = tiny_editing_model("warpres")
    assert same_base(model, other)
    with torch.no_grad():
        other.generator.synthesis.b16.conv0.weight[0, 0, 0, 0] += 1e-3
    assert not same_base(model, other)


@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_the_directed_phase_continues_the_first_phase_result_with_directed_edits(tmp_path, family):
    first, directed = branch_config(tmp_path, family), branch_config(tmp_path, family, directed=True)
    assert directed.model == tmp_path / f"{family}.safetensors" and directed.output != first.output
    assert first.edits.directed_share == 0 and directed.edits.directed_share > 0
    assert directed.edits.directions == tmp_path / "directions" and "pose" in directed.edits.along
    assert directed.teacher.size > first.teacher.size


def test_a_missing_input_names_the_stage_that_makes_it(tmp_path):
    with pytest.raises(TrainingError, match="build the mapping stage first"):
        build_directions(tmp_path)


def test_the_reader_is_the_regressor_refitted_with_a_squared_error(tmp_path, monkeypatch):
    with pytest.raises(TrainingError, match="build the regressor stage first"):
        build_reader(tmp_path, FitConfig(steps=1))
    torch.manual_seed(0)
    regressor = AttributeRegressor()
    save_file({k: v.contiguous() for k, v in regressor.state_dict().items()}, str(tmp_path / "regressor.safetensors"))
    monkeypatch.setattr(build, "READER_CHECK", 4)
    config = FitConfig(steps=1, batch_size=2, lr=1e-3, workers=0, log_every=1)
    reader = load_regressor(build_reader(tmp_path, config, progress=False))

    images, _, targets = next(iter(DataLoader(RenderedFaces(READER_SEED, count=2), batch_size=2)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        first_error = (regressor(images).float() - targets).square().mean().item()
    assert read_log(tmp_path / "reader.log.csv")[0]["loss"] == pytest.approx(first_error, rel=0.02)
    start, fitted = regressor.state_dict(), reader.state_dict()
    assert not torch.equal(start["head.weight"], fitted["head.weight"])
    moved = max((fitted[k] - start[k]).abs().max().item() for k in start)
    assert moved <= 2e-3  # one Adam step of 1e-3 from the regressor's weights (bf16 rounding aside)
    assert load_file(str(tmp_path / "regressor.safetensors")).keys() == fitted.keys()


def test_explained_variance_is_one_for_an_exact_reading_and_zero_for_the_mean():
    torch.manual_seed(0)
    regressor = AttributeRegressor()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        exact = regressor(images)
    assert explained_variance(regressor, images, exact) == pytest.approx(dict.fromkeys(LINEAR_TARGETS, 1.0))
    with torch.no_grad():
        regressor.head.weight.zero_()  # reads every image as its bias: the truth's mean below
    spread = regressor.head.bias.detach() + torch.tensor([-1.0, 0.0, 1.0])[:, None]
    assert explained_variance(regressor, images, spread) == pytest.approx(dict.fromkeys(LINEAR_TARGETS, 0.0), abs=1e-6)
