"""`warpres demo`'s grid and its ground truth, on a tiny bundle (the shipped one is checked by CI's demo run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import tiny_editing_model
from warpres.benchmark import psnr
from warpres.demo.bundle import demo_models, exported, materialize, read_regressor, write_bundle
from warpres.demo.directions import ATTRIBUTES
from warpres.demo.evaluation import evaluate, held_out_faces, json_report, markdown_table, masked_psnr
from warpres.demo.regressor import AttributeRegressor, hue_from_targets, regression_targets
from warpres.demo.renderer import FaceParams, render
from warpres.demo.showcase import COLUMNS, EDITS, edited_truth, run_demo
from warpres.edits import DirectionLibrary, LinearDirection
from warpres.errors import EditError
from warpres.media.imageio import read_image, write_image
from warpres.runtime.session import Session
from warpres.stages import is_model_folder


def test_the_ground_truth_moves_the_hue_readings_the_directions_are_fitted_on():
    """hair_red / hair_blue are cos / -sin of the hue angle in `directions.ATTRIBUTES`, in the ground
    truth and in the evaluation's reading: one unit system."""
    face = FaceParams(hair_hue=0.07)
    for edit in ("hair_red", "hair_blue"):
        before = ATTRIBUTES[edit](face)
        after = ATTRIBUTES[edit](edited_truth(face, edit, 0.5))
        assert after > before
        targets = torch.from_numpy(regression_targets(edited_truth(face, edit, 0.5)))[None]
        angle = 2 * math.pi * hue_from_targets(targets, "hair_hue").item()
        assert (math.cos(angle) if edit == "hair_red" else -math.sin(angle)) == pytest.approx(after, abs=1e-6)


def test_an_edit_without_a_ground_truth_is_refused():
    with pytest.raises(EditError, match="no ground truth"):
        edited_truth(FaceParams(), "eyebrows", 1.0)


def test_ground_truth_changes_the_named_attribute_in_direction_units():
    face = FaceParams(smile=0.2, yaw=0.5, hair_hue=0.05)
    assert edited_truth(face, "smile", 1.0).smile == 1.0  # clipped to the range
    assert edited_truth(face, "pose", -0.8).yaw == pytest.approx(-0.3)
    blue = edited_truth(face, "hair_blue", 1.2)
    assert -math.sin(2 * math.pi * blue.hair_hue) > -math.sin(2 * math.pi * face.hair_hue)
    assert blue.smile == face.smile and blue.yaw == face.yaw


def test_the_demo_grid_has_a_row_per_sample_and_edit_and_a_column_per_model(tmp_path):
    styleres, warpres = tiny_editing_model("styleres"), tiny_editing_model("warpres")
    write_bundle(tmp_path / "models.safetensors", warpres.generator, warpres.encoder,
                 {"styleres": styleres.branch, "warpres": warpres.branch}, AttributeRegressor())
    samples = tmp_path / "samples"
    faces = {"a.png": FaceParams(), "b.png": FaceParams(smile=-0.5, yaw=0.3)}
    for name, face in faces.items():
        write_image(samples / name, render(face, 64))
    (samples / "samples.json").write_text(json.dumps({n: f.to_vector().tolist() for n, f in faces.items()}))
    rng = np.random.default_rng(0)
    DirectionLibrary(LinearDirection(name, rng.standard_normal(32)) for name, _ in EDITS).save(tmp_path / "dirs")
    result = run_demo(tmp_path / "grid.png", backend="torch", bundle=tmp_path / "models.safetensors",
                      samples=samples, directions=tmp_path / "dirs", cache=tmp_path / "cache")
    grid = read_image(result.path)
    assert grid.shape == (2 * len(EDITS) * (64 + 18), len(COLUMNS) * 64, 3)
    assert set(result.backends) == {"inversion", "styleres", "warpres"}
    row_height = 64 + 18
    for row, (face, (edit, strength)) in enumerate((f, e) for f in faces.values() for e in EDITS):
        tiles = grid[row * row_height + 18:(row + 1) * row_height].reshape(64, len(COLUMNS), 64, 3).swapaxes(0, 1)
        np.testing.assert_array_equal(tiles[0], render(face, 64))  # the input, under its edit's label
        np.testing.assert_array_equal(tiles[1], render(edited_truth(face, edit, strength), 64))


def test_evaluation_scores_every_model_on_every_column(tmp_path):
    styleres, warpres = tiny_editing_model("styleres"), tiny_editing_model("warpres")
    write_bundle(tmp_path / "models.safetensors", warpres.generator, warpres.encoder,
                 {"styleres": styleres.branch, "warpres": warpres.branch}, AttributeRegressor())
    rng = np.random.default_rng(0)
    DirectionLibrary(LinearDirection(name, rng.standard_normal(32)) for name, _ in EDITS).save(tmp_path / "dirs")
    checkpoints = materialize(tmp_path / "models.safetensors", cache=tmp_path / "cache")
    scores = evaluate(checkpoints, read_regressor(tmp_path / "models.safetensors"), tmp_path / "dirs", count=3,
                      backend="torch", batch=2, progress=False)
    assert [row.family for row in scores] == ["inversion", "styleres", "warpres"]
    for row in scores:
        assert all(math.isfinite(v) for v in (row.psnr, row.ssim, row.perceptual, row.cycle_psnr, row.seconds))
        assert set(row.achieved) == set(row.truth_psnr) == set(row.detail_psnr) == {name for name, _ in EDITS}
    table = markdown_table(scores)
    assert table.count("\n") == 4 and "| WarpRes |" in table
    report = json.loads(json_report(scores, 3))
    assert report["images"] == 3 and report["edits"] == dict(EDITS)
    assert [model["title"] for model in report["models"]] == ["E0 only", "StyleRes", "WarpRes"]
    assert report["models"][2]["detail_psnr"]["pose"] == scores[2].detail_psnr["pose"]


def test_masked_psnr_counts_only_the_masked_pixels():
    image, reference = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    reference[0, 0] = 255
    mask = np.zeros((4, 4), bool)
    mask[1:, 1:] = True
    assert masked_psnr(image, reference, mask) == float("inf")
    mask[0, 0] = True
    assert masked_psnr(image, reference, mask) == pytest.approx(10 * math.log10(10))


def test_evaluation_scores_are_the_metrics_of_the_images_the_session_makes(tmp_path):
    """One face, scored by hand through the same Session: reconstruction PSNR, truth PSNR of the pose
    edit and the pose cycle must equal the evaluation's."""
    styleres, warpres = tiny_editing_model("styleres"), tiny_editing_model("warpres")
    write_bundle(tmp_path / "models.safetensors", warpres.generator, warpres.encoder,
                 {"styleres": styleres.branch, "warpres": warpres.branch}, AttributeRegressor())
    rng = np.random.default_rng(1)
    DirectionLibrary(LinearDirection(name, rng.standard_normal(32)) for name, _ in EDITS).save(tmp_path / "dirs")
    checkpoint = materialize(tmp_path / "models.safetensors", cache=tmp_path / "cache")["warpres"]
    (scores,) = evaluate({"warpres": checkpoint}, read_regressor(tmp_path / "models.safetensors"), tmp_path / "dirs",
                         count=1, seed=7, backend="torch", progress=False)
    (face,) = held_out_faces(1, seed=7)
    session = Session(checkpoint, "torch", directions=tmp_path / "dirs")
    image = render(face, 64)
    inversion = session.invert(image[None])
    pose = dict(EDITS)["pose"]
    edited = session.edit(inversion, f"pose={pose}")
    undone = session.edit(session.invert(edited), f"pose={-pose}")
    assert scores.psnr == pytest.approx(psnr(session.edit(inversion)[0], image), rel=1e-6)
    assert scores.truth_psnr["pose"] == pytest.approx(psnr(edited[0], render(edited_truth(face, "pose", pose), 64)),
                                                      rel=1e-6)
    assert scores.cycle_psnr == pytest.approx(psnr(undone[0], image), rel=1e-6)


def test_the_bundle_exports_once_for_the_onnx_backends_and_agrees_with_its_checkpoints(tmp_path):
    styleres, warpres = tiny_editing_model("styleres"), tiny_editing_model("warpres")
    write_bundle(tmp_path / "models.safetensors", warpres.generator, warpres.encoder,
                 {"styleres": styleres.branch, "warpres": warpres.branch}, AttributeRegressor())
    folders = demo_models("onnxruntime", tmp_path / "models.safetensors", tmp_path / "cache")
    checkpoints = demo_models("torch", tmp_path / "models.safetensors", tmp_path / "cache")
    assert set(folders) == set(checkpoints) == {"inversion", "styleres", "warpres"}
    assert all(is_model_folder(path) for path in folders.values())
    assert exported(tmp_path / "models.safetensors", tmp_path / "cache") == folders  # cached: no second export
    image = render(FaceParams(yaw=0.4), 64)[None]
    for family in folders:
        outputs = [session.edit(session.invert(image)) for session in
                   (Session(folders[family], "onnxruntime"), Session(checkpoints[family], "torch"))]
        assert np.abs(outputs[0].astype(int) - outputs[1].astype(int)).max() <= 2, family
