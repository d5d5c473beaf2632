"""The demo's learnt flow teacher: its training pairs, targets and loss (`warpres.demo.flow_teacher`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from warpres.demo.build import _save_result
from warpres.demo.flow_teacher import (TEACHER_EDITS, GeneratorPairs, MotionPairs, TeacherObjective, sequence_loss,
                                       true_flow)
from warpres.training.raft import RAFT, load_raft


@pytest.fixture(scope="module")
def pairs():
    from warpres.demo.bundle import read_bundle
    from warpres.demo.showcase import DIRECTIONS
    from warpres.edits import DirectionLibrary

    return GeneratorPairs(read_bundle()["inversion"], DirectionLibrary.load(DIRECTIONS))


def test_an_item_is_a_render_its_edit_and_the_true_motion_to_its_ground_truth():
    from warpres.demo.prior import params_from_latent, sample_latent
    from warpres.demo.showcase import edited_truth

    stream = MotionPairs(8)
    image, edit, strength, flow = stream[3]
    again = stream[3]
    assert torch.equal(image, again[0]) and torch.equal(flow, again[3])  # item k is a function of (seed, k)
    assert image.shape == (3, 128, 128) and -1 <= image.min() and image.max() <= 1
    assert 0 <= edit < len(TEACHER_EDITS) and -1 <= float(strength) <= 1 and flow.shape == (2, 128, 128)
    face = params_from_latent(*sample_latent(np.random.default_rng([8, 3])))
    exact = true_flow(face, edited_truth(face, TEACHER_EDITS[edit], float(strength)), 128, 128)
    assert np.abs(flow.numpy() - exact).mean() < 0.05  # the coarser surface grid stays close to the fine one


def test_a_pose_edit_moves_the_face_and_nothing_off_it():
    from warpres.demo.prior import params_from_latent, sample_latent
    from warpres.demo.showcase import edited_truth

    face = params_from_latent(*sample_latent(np.random.default_rng([8, 0])))
    flow = true_flow(face, edited_truth(face, "pose", 0.8), 128, 128)
    assert np.linalg.norm(flow, axis=0).max() > 5  # the face turns by pixels
    assert not flow[:, :, :6].any() and not flow[:, -6:].any()  # the image's left edge and the clothing stay


def test_the_pairs_are_the_generators_images_of_the_code_and_of_its_edit(pairs):
    stream = MotionPairs(8)
    images = torch.stack([stream[k][0] for k in range(2)])
    unedited = pairs(images, torch.tensor([0, 2]), torch.zeros(2))
    assert torch.equal(unedited[0], unedited[1])  # strength 0: the same picture
    source, target = pairs(images, torch.tensor([0, 0]), torch.tensor([0.8, -0.8]))
    assert source.shape == target.shape == (2, 3, 128, 128)
    assert (target - source).abs().mean() > 0.02  # a pose edit changes the picture


def test_the_sequence_loss_weighs_later_updates_more_and_is_zero_for_the_truth():
    flow = torch.ones(1, 2, 8, 8)
    assert sequence_loss([flow, flow], flow) == 0
    early, late = sequence_loss([flow * 0, flow], flow), sequence_loss([flow, flow * 0], flow)
    assert early == pytest.approx(0.8) and late == pytest.approx(1.0)


def test_one_fitting_step_trains_raft_and_the_result_loads_as_a_teacher(pairs, tmp_path):
    torch.manual_seed(0)
    network = RAFT.small()
    objective = TeacherObjective(network, pairs)
    stream = MotionPairs(8)
    batch = default_collate([stream[k] for k in range(2)])
    terms = objective(batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"]) and terms["endpoint_error"] > 0
    assert all(p.grad is not None for p in network.update_block.parameters())
    assert not any(p.grad is not None for p in pairs.model.parameters())  # E0 and G stay frozen
    loaded = load_raft(_save_result(tmp_path, "flow-teacher", network))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), network.state_dict().values()))
