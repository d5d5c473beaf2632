"""The trainer's parts, each on a case with a known answer: config, data order, paths, objective."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_editing_model, torch_edit
from warpres.errors import ConfigError, ImageError
from warpres.models.editor import EditingModel
from warpres.media.imageio import write_image
from warpres.training.config import EditConfig, LossWeights, config_from_mapping, load_config
from warpres.training.data import ImageFolder, SampleStream, StepSampler
from warpres.training.objective import Objective
from warpres.training.paths import EditPlan, PathOutputs, TrainingPaths, resize_images

MINIMAL = {"model": "base.safetensors", "output": "run", "data": {"train": "images"}}


# -- config -------------------------------------------------------------------------------------

def test_config_resolves_relative_paths_against_the_config_folder(tmp_path):
    (tmp_path / "run.yaml").write_text("model: base.safetensors\noutput: out\ndata: {train: images}\n")
    config = load_config(tmp_path / "run.yaml")
    assert config.model == tmp_path / "base.safetensors" and config.data.train == tmp_path / "images"
    assert config.optim.lr == 1e-4 and config.optim.milestones == (5000, 10000, 15000)


def test_config_overrides_use_dotted_keys(tmp_path):
    (tmp_path / "run.yaml").write_text("model: m\noutput: o\ndata: {train: t}\nidentity:\n")
    config = load_config(tmp_path / "run.yaml", {"schedule.eval_every": 7, "losses.flow": 2,
                                                 "identity.weights": "w.pth"})
    assert config.schedule.eval_every == 7 and config.losses.flow == 2.0
    assert config.identity.weights == tmp_path / "w.pth"


def test_yaml_exponent_notation_is_a_number(tmp_path):
    """YAML 1.1 reads 1e-4 (no dot) as a string; the config still means the number."""
    (tmp_path / "run.yaml").write_text("model: m\noutput: o\ndata: {train: t}\noptim: {lr: 1e-4}\n")
    assert load_config(tmp_path / "run.yaml").optim.lr == 1e-4


def test_an_override_below_a_value_is_an_error(tmp_path):
    (tmp_path / "run.yaml").write_text("model: m\noutput: o\ndata: {train: t}\nsteps: 5\n")
    with pytest.raises(ConfigError, match="cannot set steps.x: steps is not a section"):
        load_config(tmp_path / "run.yaml", {"steps.x": 1})


@pytest.mark.parametrize(("settings", "message"), [
    ({**MINIMAL, "losses": {"flw": 1.0}}, "unknown key losses.flw"),
    ({**MINIMAL, "steps": "many"}, "steps must be int"),
    ({**MINIMAL, "edits": {"alpha": [0.6, 0.4]}}, "edits.alpha must be an interval"),
    ({**MINIMAL, "family": "stylegan"}, "family must be one of"),
    ({**MINIMAL, "teacher": {"kind": "raft"}}, "needs teacher.checkpoint"),
    ({"output": "o", "data": {"train": "t"}}, "missing required key model"),
    ({**MINIMAL, "losses": {"l2": -1}}, r"loss weights must be >= 0: \['l2'\]"),
    ({**MINIMAL, "optim": {"lr": float("nan")}}, "optim.lr must be finite"),
    ({**MINIMAL, "edits": {"directed_share": 0.5}}, "needs edits.directions and the names in edits.along"),
    ({**MINIMAL, "edits": {"strength": 0}}, "edits.strength > 0"),
    ({**MINIMAL, "seed": -1}, "seed >= 0"),
    ({**MINIMAL, "schedule": {"checkpoint_every": 100, "keep_every": 150}}, "multiple of schedule.checkpoint_every"),
    ({**MINIMAL, "model": ""}, "model must be a path"),
])
def test_config_mistakes_are_named(settings, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(settings, base=Path("."))


# -- data ---------------------------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path) -> ImageFolder:
    for index in range(5):
        write_image(tmp_path / f"{index}.png", torch.full((40, 30, 3), index * 50, dtype=torch.uint8).numpy())
    return ImageFolder(tmp_path, size=16)


def test_images_are_preprocessed_like_the_runtime(image_folder):
    image = image_folder[1]
    assert image.shape == (3, 16, 16)
    torch.testing.assert_close(image, torch.full((3, 16, 16), (50 - 127.5) / 127.5))


def test_every_epoch_visits_every_image_once_in_a_seeded_order(image_folder):
    stream = SampleStream(image_folder, seed=3, hflip=False)
    epochs = [[stream.image_index(k) for k in range(e * 5, e * 5 + 5)] for e in range(3)]
    assert all(sorted(epoch) == list(range(5)) for epoch in epochs)
    assert len({tuple(epoch) for epoch in epochs}) > 1
    assert epochs[0] == [SampleStream(image_folder, seed=3, hflip=False).image_index(k) for k in range(5)]


def test_ranks_read_disjoint_samples_and_a_resumed_sampler_continues_the_sequence():
    take = lambda sampler, n: [next(it) for it in [iter(sampler)] for _ in range(n)]  # noqa: E731
    rank0, rank1 = take(StepSampler(1, 2, 0, 2), 6), take(StepSampler(1, 2, 1, 2), 6)
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == list(range(12))
    assert take(StepSampler(3, 2), 4) == take(StepSampler(1, 2), 8)[4:]


def test_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(ImageError, match="no image files found"):
        ImageFolder(tmp_path, size=16)


# -- paths --------------------------------------------------------------------------------------

class ShiftTeacher:
    """A teacher that answers a constant flow of (+3, -2) pixels and records its inputs."""

    def __call__(self, source, target):
        self.pair = (source, target)
        flow = torch.zeros(source.shape[0], 2, *source.shape[2:])
        flow[:, 0], flow[:, 1] = 3.0, -2.0
        return flow


@pytest.fixture(params=["warpres", "styleres"])
def paths(request) -> TrainingPaths:
    return TrainingPaths(tiny_editing_model(request.param), ShiftTeacher(), teacher_size=32).train()


def test_the_no_edit_path_renders_what_inference_renders(paths, images):
    outputs = paths(images, EditPlan(cycle=False))
    with torch.no_grad():
        expected = torch_edit(EditingModel(paths.generator, paths.encoder, paths.branch), images)
    paths.train()
    torch.testing.assert_close(outputs.output, resize_images(expected, 64), atol=1e-5, rtol=0)
    assert outputs.cycled is None
    if paths.branch.uses_flow:
        assert torch.count_nonzero(outputs.teacher_flow) == 0


def test_only_the_branch_receives_gradients(paths, images):
    plan = EditPlan(cycle=True, z=torch.randn(2, 32), alpha=torch.tensor([0.4, 0.5]))
    outputs = paths(images, plan)
    (outputs.output.square().mean() + outputs.cycled.square().mean()).backward()
    assert all(p.grad is None for p in [*paths.encoder.parameters(), *paths.generator.parameters()])
    assert all(p.grad is not None for p in paths.trainable_parameters())


def test_a_zero_edit_cycle_returns_to_the_no_edit_rendering_of_the_edited_image(paths, images):
    """alpha = 0: x' is the reconstruction, and x'' is the reconstruction of x'."""
    plan = EditPlan(cycle=True, z=torch.randn(2, 32), alpha=torch.zeros(2))
    outputs = paths(images, plan)
    torch.testing.assert_close(outputs.output, paths(images, EditPlan(cycle=False)).output, atol=1e-5, rtol=0)
    again = paths(outputs.output.detach(), EditPlan(cycle=False)).output
    torch.testing.assert_close(outputs.cycled, again, atol=1e-5, rtol=0)


def test_the_teacher_sees_the_plain_generator_images_of_w_and_w_alpha(images):
    model = tiny_editing_model("warpres")
    teacher = ShiftTeacher()
    paths = TrainingPaths(model, teacher, teacher_size=32)
    z, alpha = torch.randn(2, 32), torch.tensor([0.4, 0.5])
    outputs = paths(images, EditPlan(cycle=True, z=z, alpha=alpha))
    with torch.no_grad():
        wplus, _ = model.encoder(images)
        edited = wplus + alpha.view(-1, 1, 1) * (model.generator.mapping(z) - wplus)
        expected = (model.generator.synthesis(wplus), model.generator.synthesis(edited))
    for seen, image in zip(teacher.pair, expected, strict=True):
        torch.testing.assert_close(seen, resize_images(image, 32), atol=1e-5, rtol=0)
    assert outputs.teacher_flow.shape == (2, 2, 32, 32)


def test_a_directed_cycle_renders_w_plus_its_shift(images):
    model = tiny_editing_model("warpres")
    teacher = ShiftTeacher()
    paths = TrainingPaths(model, teacher, teacher_size=32)
    shift = 0.3 * torch.randn(2, model.generator.config.num_ws, model.generator.config.w_dim)
    paths(images, EditPlan(True, torch.randn(2, 32), torch.tensor([0.4, 0.5]), torch.tensor([True, True]), shift))
    with torch.no_grad():
        wplus, _ = model.encoder(images)
        expected = model.generator.synthesis(wplus + shift)
    torch.testing.assert_close(teacher.pair[1], resize_images(expected, 32), atol=1e-5, rtol=0)


def test_edit_plans_follow_the_probability_and_the_alpha_range():
    rng = torch.Generator().manual_seed(0)
    plans = [EditPlan.sample(EditConfig(probability=0.5, alpha=(0.4, 0.5)), 3, 8, rng) for _ in range(400)]
    cycles = [plan for plan in plans if plan.cycle]
    assert 0.4 < len(cycles) / len(plans) < 0.6
    alphas = torch.cat([plan.alpha for plan in cycles])
    assert alphas.min() >= 0.4 and alphas.max() <= 0.5 and cycles[0].z.shape == (3, 8)


def test_directed_plans_move_their_share_of_samples_along_a_picked_direction_within_the_strength():
    directions = torch.zeros(2, 2, 8)
    directions[0, :, 0] = 1.0  # direction k moves only coordinate k
    directions[1, :, 1] = 1.0
    config = EditConfig(probability=1.0, directions=Path("unused"), along=("a", "b"), strength=0.5,
                        directed_share=0.25)
    rng = torch.Generator().manual_seed(0)
    plans = [EditPlan.sample(config, 4, 8, rng, directions) for _ in range(300)]
    assert 0.2 < torch.cat([plan.directed for plan in plans]).float().mean() < 0.3
    moved = torch.cat([plan.shift for plan in plans])[:, 0, :2]  # (samples, direction)
    assert (torch.count_nonzero(moved, dim=1) == 1).all()
    assert (moved[:, 0] != 0).float().mean() == pytest.approx(0.5, abs=0.1)
    assert moved.abs().max() <= 0.5 and (moved < -0.25).any() and (moved > 0.25).any()


def test_a_plan_steps_directed_samples_by_their_shift_and_the_others_towards_m_of_z():
    def mapping(z):
        return z[:, None, :].repeat(1, 2, 1)

    wplus = torch.randn(2, 2, 8)
    plan = EditPlan(True, torch.randn(2, 8), torch.tensor([0.4, 0.5]), torch.tensor([True, False]),
                    torch.full((2, 2, 8), 3.0))
    step = plan.step(wplus, mapping)
    torch.testing.assert_close(step[0], torch.full((2, 8), 3.0))
    torch.testing.assert_close(step[1], 0.5 * (mapping(plan.z)[1] - wplus[1]))


def test_direction_vectors_broadcast_named_directions_to_every_layer(tmp_path):
    import numpy as np

    from warpres.edits import DirectionLibrary, LinearDirection
    from warpres.errors import TrainingError
    from warpres.training.paths import direction_vectors

    per_layer = np.arange(24, dtype=np.float32).reshape(3, 8)
    DirectionLibrary([LinearDirection("pose", np.ones(8, np.float32)),
                      LinearDirection("smile", per_layer)]).save(tmp_path)
    config = EditConfig(directions=tmp_path, along=("smile", "pose"), directed_share=0.5)
    vectors = direction_vectors(config, num_ws=3)
    assert vectors.shape == (2, 3, 8)
    assert torch.equal(vectors[0], torch.from_numpy(per_layer)) and torch.equal(vectors[1], torch.ones(3, 8))
    assert direction_vectors(EditConfig(), num_ws=3) is None
    with pytest.raises(TrainingError, match="unknown edit 'age'"):
        direction_vectors(EditConfig(directions=tmp_path, along=("age",), directed_share=0.5), num_ws=3)
    with pytest.raises(TrainingError, match="smile has 3 layers, the generator 4"):
        direction_vectors(config, num_ws=4)


# -- objective ----------------------------------------------------------------------------------

class MeanAbs(torch.nn.Module):
    """A stand-in feature network / recogniser with a closed form: features = the image itself."""

    def forward(self, x):
        return [x]


def _outputs(images, *, cycle: bool, flow_error: float = 0.0, additions_value: float = 0.0) -> PathOutputs:
    flow = torch.zeros(images.shape[0], 2, 8, 8)
    teacher = torch.zeros(images.shape[0], 2, 32, 32) + flow_error * 4  # at 32: 4x the pixels at 8
    return PathOutputs(output=images.clone(), additions=torch.full((images.shape[0], 4, 8, 8), additions_value),
                       flow=flow, teacher_flow=teacher, cycled=images.clone() if cycle else None)


def test_identical_images_zero_flow_and_zero_residual_cost_only_the_adversarial_term(images):
    from warpres.training.losses import PerceptualLoss

    objective = Objective(LossWeights(), PerceptualLoss(MeanAbs()), None, uses_flow=True)
    for cycle in (False, True):
        terms = objective.terms(_outputs(images, cycle=cycle), images, lambda x: torch.zeros(x.shape[0], 1))
        assert terms.pop("adversarial").item() == pytest.approx(math.log(2))
        assert all(value.item() == 0 for value in terms.values()), terms


def test_known_flow_error_and_residual_give_their_l1_values(images):
    objective = Objective(LossWeights(), None, None, uses_flow=True)
    terms = objective.terms(_outputs(images, cycle=True, flow_error=1.5, additions_value=-0.25), images,
                            lambda x: torch.zeros(x.shape[0], 1))
    assert terms["flow"].item() == pytest.approx(1.5)
    assert terms["feature_regularizer"].item() == pytest.approx(0.25)
    assert set(terms) == {"adversarial", "feature_regularizer", "flow", "cycle_l2"}


def test_the_total_is_the_weighted_sum_and_missing_networks_weigh_nothing(images):
    objective = Objective(LossWeights(l2=2.0, adversarial=0.5), None, None, uses_flow=False)
    assert objective.weight("perceptual") == 0 and objective.weight("identity") == 0 and objective.weight("flow") == 0
    shifted = images + 0.1
    terms = objective.terms(_outputs(shifted, cycle=False), images, lambda x: torch.zeros(x.shape[0], 1))
    assert terms["l2"].item() == pytest.approx(0.01, rel=1e-4)
    expected = 2.0 * terms["l2"] + 0.5 * math.log(2) + 5.0 * 0.0
    assert objective.total(terms).item() == pytest.approx(expected.item(), rel=1e-6)
