"""The renderer's motion of the face, and the scores that compare flows with it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.test_demo_renderer import detailed_identity
from warpres.demo.flow_teacher import true_flow
from warpres.demo.motion import agreement, sample_flow
from warpres.demo.renderer import render, surface_motion, with_attribute


def test_an_unchanged_face_does_not_move():
    face = detailed_identity()
    points, displacement = surface_motion(face, face)
    assert len(points) > 200 and not displacement.any()


def _colours_at(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    x, y = (points - 0.5).astype(np.float32).T
    return cv2.remap(image.astype(np.float32), x[None], y[None], cv2.INTER_LINEAR)[0]


def test_the_skin_moves_with_a_turn_and_the_motion_finds_each_point_in_the_first_render():
    before = detailed_identity(freckle_density=1.0)
    after = with_attribute(before, yaw=0.6)
    points, displacement = surface_motion(before, after)
    assert displacement[:, 0].mean() < -5  # turned towards the image's right: content came from the left
    seen_after = _colours_at(render(after), points)
    found = np.abs(_colours_at(render(before), points + displacement) - seen_after).mean()
    not_moved = np.abs(_colours_at(render(before), points) - seen_after).mean()
    assert found < 0.2 * not_moved


def test_agreement_is_one_for_the_true_flow_on_any_grid_and_zero_for_no_flow():
    points = np.array([[10.3, 20.7], [64.0, 64.0], [100.5, 33.2]])
    motions = [(points, np.tile([[-4.0, 2.0]], (3, 1)))]
    true_flow = np.ones((1, 2, 128, 128)) * np.array([-4.0, 2.0]).reshape(1, 2, 1, 1)
    for grid in (128, 32):
        exact = agreement(true_flow[:, :, :grid, :grid] * grid / 128, motions, 128)
        assert exact.gain == pytest.approx(1.0) and exact.error == pytest.approx(0.0, abs=1e-6)
    half = agreement(true_flow / 2, motions, 128)
    assert half.gain == pytest.approx(0.5) and half.error == pytest.approx(np.hypot(2, 1))
    none = agreement(np.zeros_like(true_flow), motions, 128)
    assert none.gain == 0 and none.motion == pytest.approx(np.hypot(4, 2))


def test_sampling_a_flow_reads_its_value_at_the_pixel_centre_in_image_pixels():
    flow = np.zeros((2, 32, 32), np.float32)
    flow[0, 5, 7] = 1.0  # one cell of a 32 grid: pixels [28, 32) x [20, 24) of a 128 image
    sampled = sample_flow(flow, np.array([[30.0, 22.0], [34.0, 22.0]]), 128)
    assert sampled[0, 0] == pytest.approx(4.0) and sampled[1, 0] == pytest.approx(0.0)


def test_the_true_flow_is_the_surface_motion_on_the_face_and_zero_elsewhere():
    before = detailed_identity()
    after = with_attribute(before, yaw=0.6)
    flow = true_flow(before, after, 128, 32)
    points, displacement = surface_motion(before, after)
    # a 32 lattice blurs the rim of the face into the still surroundings; inside it is exact
    errors = np.linalg.norm(sample_flow(flow, points, 128) - displacement, axis=1)
    assert np.median(errors) < 0.1 and agreement(flow[None], [(points, displacement)], 128).gain > 0.9
    assert not flow[:, :4].any() and not flow[:, -4:].any()  # above the hair, on the clothing


def test_the_diagnosis_scores_the_pipelines_own_edit_and_the_true_motion_keeps_details_best():
    from warpres.benchmark import psnr
    from warpres.demo.bundle import BUNDLE, read_bundle, read_regressor
    from warpres.demo.evaluation import DETAIL_REGIONS, HELD_OUT_SEED, held_out_faces, masked_psnr
    from warpres.demo.motion import diagnose
    from warpres.demo.renderer import render_with_masks
    from warpres.demo.showcase import DIRECTIONS, edited_truth
    from warpres.edits import DirectionLibrary
    from warpres.images import to_model_input, to_uint8
    from warpres.runtime.session import Session

    models, directions = read_bundle(BUNDLE), DirectionLibrary.load(DIRECTIONS)
    faces = held_out_faces(3, HELD_OUT_SEED)
    diagnosis = diagnose(models, read_regressor(BUNDLE), directions, faces, strength=0.8)

    size = models["warpres"].generator.config.resolution
    photos = to_model_input(np.stack([render_with_masks(face, size)[0] for face in faces]), size)
    session = Session(models["warpres"], backend="torch", directions=directions)
    ours = to_uint8(np.asarray(session.edit_batch(photos, "pose=0.8")))
    truths, masks = zip(*(render_with_masks(edited_truth(face, "pose", 0.8), size) for face in faces), strict=True)
    detail = [np.logical_or.reduce([m[region] for region in DETAIL_REGIONS]) for m in masks]
    expected_detail = np.mean([masked_psnr(*triple) for triple in zip(ours, truths, detail, strict=True)])
    expected_whole = np.mean([psnr(a, b) for a, b in zip(ours, truths, strict=True)])
    assert diagnosis.edits["WarpRes"].detail == pytest.approx(expected_detail, abs=0.05)
    assert diagnosis.edits["WarpRes"].whole == pytest.approx(expected_whole, abs=0.05)
    oracle = diagnosis.edits["WarpRes with the true motion as its flow"]
    assert oracle.detail > diagnosis.edits["WarpRes without its flow"].detail + 1.0
