"""`warpres demo`'s grid and its ground truth, on a tiny bundle (the shipped one is checked by CI's demo run)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tests.conftest import tiny_editing_model
from warpres.demo.bundle import materialize, read_regressor, write_bundle
from warpres.demo.evaluation import evaluate, markdown_table, masked_psnr
from warpres.demo.regressor import AttributeRegressor
from warpres.demo.renderer import FaceParams, render
from warpres.demo.showcase import COLUMNS, EDITS, edited_truth, run_demo
from warpres.edits import DirectionLibrary, LinearDirection
from warpres.runtime.imageio import read_image, write_image


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


def test_masked_psnr_counts_only_the_masked_pixels():
    image, reference = np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)
    reference[0, 0] = 255
    mask = np.zeros((4, 4), bool)
    mask[1:, 1:] = True
    assert masked_psnr(image, reference, mask) == float("inf")
    mask[0, 0] = True
    assert masked_psnr(image, reference, mask) == pytest.approx(10 * math.log10(10))
