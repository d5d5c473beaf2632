"""The models the package ships: they load, export and agree with PyTorch, and `warpres demo`
edits the samples where each attribute lives and leaves the rest alone."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from warpres.cli import main
from warpres.demo.bundle import BUNDLE, FAMILIES, demo_models, materialize
from warpres.demo.renderer import render_with_masks
from warpres.demo.showcase import COLUMNS, DIRECTIONS, EDITS, edited_truth, load_samples
from warpres.runtime.imageio import read_image
from warpres.runtime.session import Session

pytestmark = pytest.mark.skipif(not BUNDLE.is_file(), reason=f"the demo models are not built into {BUNDLE.parent} yet")
LABEL = 18
# where each demo edit must act: the union of these masks in the input and in the ground truth
ATTRIBUTE_REGIONS = {"smile": ("mouth",), "pose": ("face", "hair", "eyes", "mouth", "earrings", "glasses"),
                     "hair_blue": ("hair",)}
HEAD = ("face", "hair", "eyes", "mouth", "earrings", "glasses", "neck")
# 8-bit mean absolute differences. An edit is measured against the model's own reconstruction
# (against the input it would be dominated by reconstruction error): inside the attribute's
# region it must change the image at least CHANGED_RATIO times as much as in the background
# (far from the head), where it must stay below EDIT_LEAK; and the background must match the
# input within RECONSTRUCTION_LIMIT.
CHANGED_RATIO = 3.0
EDIT_LEAK = 4.0
RECONSTRUCTION_LIMIT = 20.0


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return materialize(BUNDLE, tmp_path_factory.mktemp("demo-cache"))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_shipped_model_runs_the_same_on_onnx_runtime_as_on_pytorch(checkpoints, family, tmp_path):
    images = np.stack([image for image, _ in load_samples()])
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        session = Session(checkpoints[family], backend, directions=DIRECTIONS, export_cache=tmp_path)
        outputs[backend] = session.edit(session.invert(images), "pose=0.8").astype(np.float64)
    difference = np.abs(outputs["torch"] - outputs["onnxruntime"])
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 4  # 8-bit levels


def _region(params, names, size):
    _, masks = render_with_masks(params, size)
    return np.any([masks[name] for name in names], axis=0)


def test_warpres_demo_edits_where_the_attribute_lives_and_nowhere_else(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # a first run: export included
    result = CliRunner().invoke(main, ["demo", "-o", str(tmp_path / "grid.png")])
    assert result.exit_code == 0, result.output
    grid = read_image(tmp_path / "grid.png").astype(np.float64)
    samples = load_samples()
    images = np.stack([image for image, _ in samples])
    size = images.shape[1]
    reconstructions = {}
    for family, folder in demo_models("auto").items():  # what the demo exported, from its cache
        session = Session(folder, "auto")
        reconstructions[family] = session.edit(session.invert(images)).astype(np.float64)
    rows = [(k, params, edit, strength) for k, (_, params) in enumerate(samples) for edit, strength in EDITS]
    assert grid.shape == (len(rows) * (size + LABEL), len(COLUMNS) * size, 3)
    kernel = np.ones((7, 7), np.uint8)
    for row, (sample, params, edit, strength) in enumerate(rows):
        top = row * (size + LABEL) + LABEL
        tiles = grid[top:top + size].reshape(size, len(COLUMNS), size, 3).swapaxes(0, 1)
        np.testing.assert_array_equal(tiles[0], images[sample])
        truth = edited_truth(params, edit, strength)
        region = _region(params, ATTRIBUTE_REGIONS[edit], size) | _region(truth, ATTRIBUTE_REGIONS[edit], size)
        head = _region(params, HEAD, size) | _region(truth, HEAD, size)
        background = cv2.erode((~head).astype(np.uint8), kernel).astype(bool)
        for column, (title, family) in enumerate(COLUMNS[2:], start=2):
            where = f"{title}, {edit} {strength:+g}, sample {sample}"
            reconstruction = reconstructions[family][sample]
            error = np.abs(reconstruction - images[sample]).mean(axis=-1)
            assert error[background].mean() < RECONSTRUCTION_LIMIT, where
            change = np.abs(tiles[column] - reconstruction).mean(axis=-1)
            assert change[background].mean() < EDIT_LEAK, where
            assert change[region].mean() > CHANGED_RATIO * change[background].mean(), where
