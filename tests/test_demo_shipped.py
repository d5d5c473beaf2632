"""The models the package ships: they load, export and agree with PyTorch, and the grid of
`warpres demo` shows what the paper claims: appearance edits act where the attribute lives, the
residual branches restore what E0 alone loses, and WarpRes carries it through a pose edit with
less damage than StyleRes (on the ground truth of held-out faces; the grid's background is the
expected failure below), as far as its flow follows the face."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from warpres.cli import main
from warpres.demo.bundle import BUNDLE, FAMILIES, demo_models, materialize, read_bundle, read_regressor
from warpres.demo.evaluation import HELD_OUT_SEED, held_out_faces
from warpres.demo.motion import diagnose
from warpres.demo.renderer import render_with_masks
from warpres.demo.showcase import COLUMNS, DIRECTIONS, EDITS, edited_truth, load_samples
from warpres.edits import DirectionLibrary
from warpres.export import export_checkpoint
from warpres.media.imageio import read_image
from warpres.runtime.session import Session

LABEL = 18
# where each demo edit must act: the union of these masks in the input and in the ground truth
ATTRIBUTE_REGIONS = {"smile": ("mouth",), "pose": ("face", "hair", "eyes", "mouth", "earrings", "glasses"),
                     "hair_blue": ("hair",)}
HEAD = ("face", "hair", "eyes", "mouth", "earrings", "glasses", "neck")
APPEARANCE_EDITS = ("smile", "hair_blue")
# 8-bit mean absolute differences over the background (far from the head, in the input and the
# ground truth). An edit is measured against the model's own reconstruction (against the input it
# would be dominated by reconstruction error). An appearance edit must change its region at least
# CHANGED_RATIO times as much as the background, and the background by less than EDIT_LEAK.
CHANGED_RATIO = 3.0
EDIT_LEAK = 4.0
RECONSTRUCTION_LIMIT = 20.0
RESIDUAL_FAMILIES = ("styleres", "warpres")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return materialize(BUNDLE, tmp_path_factory.mktemp("demo-cache"))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_shipped_model_runs_the_same_on_onnx_runtime_as_on_pytorch(checkpoints, family, tmp_path):
    images = np.stack([image for image, _ in load_samples()])
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        session = Session(checkpoints[family], backend, directions=DIRECTIONS, export_cache=tmp_path,
                          exporter=export_checkpoint)
        outputs[backend] = session.edit(session.invert(images), "pose=0.8").astype(np.float64)
    difference = np.abs(outputs["torch"] - outputs["onnxruntime"])
    assert difference.mean() < 0.5 and np.percentile(difference, 99.9) <= 4  # 8-bit levels


def _region(params, names, size):
    _, masks = render_with_masks(params, size)
    return np.any([masks[name] for name in names], axis=0)


@dataclass
class Cell:
    """One edited tile of the demo grid, measured against its model's reconstruction."""

    family: str
    edit: str
    sample: int
    region_change: float
    background_change: float
    background_error: float  # of the reconstruction, against the input

    def __str__(self) -> str:
        return f"{self.family}, {self.edit}, sample {self.sample}"


@pytest.fixture(scope="module")
def demo_cells(tmp_path_factory) -> list[Cell]:
    """`warpres demo` run once from an empty cache (export included); its grid checked for layout
    and measured cell by cell."""
    folder = tmp_path_factory.mktemp("demo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder / "cache"))
        result = CliRunner().invoke(main, ["demo", "-o", str(folder / "grid.png")])
        assert result.exit_code == 0, result.output
        models = demo_models("auto")  # what the demo exported, from its cache
    grid = read_image(folder / "grid.png").astype(np.float64)
    samples = load_samples()
    images = np.stack([image for image, _ in samples])
    size = images.shape[1]
    reconstructions = {}
    for family, model in models.items():
        session = Session(model, "auto")
        reconstructions[family] = session.edit(session.invert(images)).astype(np.float64)
    rows = [(k, params, edit, strength) for k, (_, params) in enumerate(samples) for edit, strength in EDITS]
    assert grid.shape == (len(rows) * (size + LABEL), len(COLUMNS) * size, 3)
    kernel = np.ones((7, 7), np.uint8)
    cells = []
    for row, (sample, params, edit, strength) in enumerate(rows):
        top = row * (size + LABEL) + LABEL
        tiles = grid[top:top + size].reshape(size, len(COLUMNS), size, 3).swapaxes(0, 1)
        np.testing.assert_array_equal(tiles[0], images[sample])
        truth = edited_truth(params, edit, strength)
        region = _region(params, ATTRIBUTE_REGIONS[edit], size) | _region(truth, ATTRIBUTE_REGIONS[edit], size)
        head = _region(params, HEAD, size) | _region(truth, HEAD, size)
        background = cv2.erode((~head).astype(np.uint8), kernel).astype(bool)
        for column, (_, family) in enumerate(COLUMNS[2:], start=2):
            reconstruction = reconstructions[family][sample]
            change = np.abs(tiles[column] - reconstruction).mean(axis=-1)
            error = np.abs(reconstruction - images[sample]).mean(axis=-1)
            cells.append(Cell(family, edit, sample, change[region].mean(), change[background].mean(),
                              error[background].mean()))
    return cells


def test_appearance_edits_change_their_region_and_leave_the_background_alone(demo_cells):
    for cell in demo_cells:
        if cell.edit in APPEARANCE_EDITS:
            assert cell.background_change < EDIT_LEAK, cell
            assert cell.region_change > CHANGED_RATIO * cell.background_change, cell


def test_the_residual_branches_reconstruct_the_background_that_e0_alone_loses(demo_cells):
    errors = defaultdict(dict)  # family -> {sample: background error of its reconstruction}
    for cell in demo_cells:
        errors[cell.family][cell.sample] = cell.background_error
    for family in RESIDUAL_FAMILIES:
        assert max(errors[family].values()) < RECONSTRUCTION_LIMIT, (family, errors[family])
        assert np.mean(list(errors[family].values())) < np.mean(list(errors["inversion"].values())), errors


@pytest.mark.xfail(strict=True, reason="under pose=0.8 the shipped WarpRes changes the background of samples 2 and "
                   "3 by 7.9 and 8.0 levels, StyleRes by 4.0 and 7.2: what E2 adds to the clothing doubles under "
                   "the edit (sample 2)")
def test_warpres_carries_the_background_through_a_pose_edit_better_than_styleres(demo_cells):
    leaks = {(c.family, c.sample): c.background_change for c in demo_cells if c.edit == "pose"}
    for (family, sample), leak in leaks.items():
        if family == "warpres":
            assert leak < leaks["styleres", sample], f"sample {sample}: {leak:.2f} vs {leaks['styleres', sample]:.2f}"


@pytest.fixture(scope="module")
def pose_diagnosis():
    """`python -m warpres.demo.motion` on 16 held-out faces: pose=0.8 by the shipped models."""
    return diagnose(read_bundle(), read_regressor(), DirectionLibrary.load(DIRECTIONS),
                    held_out_faces(16, HELD_OUT_SEED))


def test_warpres_lands_closest_to_the_pose_ground_truth(pose_diagnosis):
    edits = pose_diagnosis.edits
    assert edits["WarpRes"].whole > edits["StyleRes"].whole > edits["E0 only"].whole, edits
    assert edits["WarpRes"].detail > max(edits["StyleRes"].detail, edits["WarpRes without its flow"].detail), edits


def test_with_the_true_motion_as_its_flow_warpres_keeps_the_details_through_a_pose_edit_best(pose_diagnosis):
    """The architecture's claim, apart from how well the flow head learnt: the limit is the flow."""
    edits = pose_diagnosis.edits
    oracle = edits["WarpRes with the true motion as its flow"].detail
    assert oracle > max(edits["E0 only"].detail, edits["StyleRes"].detail) + 0.5, edits


def test_the_flow_head_follows_the_face_further_than_dis_and_keeps_the_background_stiller(pose_diagnosis):
    flows = pose_diagnosis.flows
    head, teacher = flows["WarpRes flow head"], flows["DIS on the generator's images at 128"]
    assert head.gain > teacher.gain + 0.05 and head.still < 0.5 * teacher.still, flows
