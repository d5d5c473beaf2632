"""The app without the page (warpres.app.web.Editor) on the demo models, ONNX Runtime."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from warpres.app.web import Editor, open_editor, write_downloads
from warpres.demo import SAMPLES
from warpres.errors import WarpresError
from warpres.media.imageio import read_image


@pytest.fixture(scope="module")
def editor() -> Editor:
    return open_editor(["demo"], "onnxruntime")


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    canvas = np.full((180, 300, 3), (90, 110, 130), np.uint8)   # a wide photo, the face off centre
    canvas[30:158, 140:268] = read_image(SAMPLES / "sample-3.png")
    return canvas


def test_the_demo_app_has_the_papers_columns_and_the_shipped_sliders(editor):
    assert [model.name for model in editor.models] == ["E0 only", "StyleRes", "WarpRes"]
    assert dict(editor.directions)["smile"] == (-1.0, 1.0) and dict(editor.directions)["hair_blue"] == (-1.5, 1.5)


def test_an_edit_comes_back_at_the_photos_size_and_only_inside_the_face(editor, photo):
    editing = editor.edit(editor.load(photo), {"smile": 1.0, "pose": 0.0})
    for model in editor.models:
        result = editing.last[model.name]
        assert result.shape == photo.shape
        changed = np.abs(result.astype(int) - photo).max(axis=2) > 0
        assert changed[30:158, 140:268].mean() > 0.1 and not changed[:, :100].any()


def test_the_flow_view_shows_the_pose_edits_motion(editor, photo):
    editing = editor.edit(editor.load(photo), {"pose": 1.0})
    view = editor.flow_view(editing, "WarpRes")
    crop = editing.crops["WarpRes"][0]
    plain = cv2.resize(crop, view.shape[:2][::-1], interpolation=cv2.INTER_CUBIC)
    assert view.shape == (384, 384, 3)
    assert (np.abs(view.astype(int) - plain).max(axis=2) > 60).mean() > 0.01   # arrows are drawn
    assert editor.flow_view(editing, "StyleRes") is None                                           # no flow head
    assert editor.residual_view(editing, "StyleRes").shape == (128, 128, 3)
    assert editor.residual_view(editing, "E0 only") is None


def test_bad_uploads_get_a_message(editor):
    with pytest.raises(WarpresError, match="no face found.*turn alignment off"):
        editor.load(np.full((100, 120, 3), 200, np.uint8))
    with pytest.raises(WarpresError, match="upload a photo first"):
        editor.load(None)
    small = Editor(editor.models, editor.aligner.framing, max_pixels=10_000)
    with pytest.raises(WarpresError, match="the limit is"):
        small.load(np.zeros((200, 200, 3), np.uint8))


def test_alignment_off_edits_the_centred_square(editor, photo):
    editing = editor.edit(editor.load(photo, align=False), {})
    assert editing.last["WarpRes"].shape == photo.shape and len(editing.pieces) == 1


def test_downloads_hold_the_result_and_the_codes(editor, photo, tmp_path):
    editing = editor.edit(editor.load(photo), {"smile": 0.5})
    image, codes = write_downloads(editing, "WarpRes", tmp_path / "session")
    np.testing.assert_array_equal(read_image(image), editing.last["WarpRes"])
    np.testing.assert_array_equal(np.load(codes), editing.inversions["WarpRes"].wplus)


def test_edit_tensors_names_what_an_edit_computes(editor, photo):
    styleres = editor.models[1].session
    inversion = styleres.invert([read_image(SAMPLES / "sample-0.png")])
    fused = styleres.edit_tensors(inversion, "smile=1", ["feat_fused"])["feat_fused"]
    assert fused.shape[0] == 1 and fused.dtype == np.float32
    with pytest.raises(WarpresError, match="a styleres edit computes no flow"):
        styleres.edit_tensors(inversion, None, ["flow"])


def test_a_saved_code_reloads_the_same_edit(editor, photo, tmp_path):
    editing = editor.edit(editor.load(photo), {"smile": 0.5})
    _, codes = write_downloads(editing, "WarpRes", tmp_path / "saved")
    expected = editing.last["WarpRes"].copy()
    again = editor.load(photo)
    shifted = np.load(codes) + 0.5
    np.save(tmp_path / "other.npy", shifted)
    editor.use_codes(again, tmp_path / "other.npy")
    assert not np.array_equal(editor.edit(again, {"smile": 0.5}).last["WarpRes"], expected)
    editor.use_codes(again, codes)
    np.testing.assert_array_equal(editor.edit(again, {"smile": 0.5}).last["WarpRes"], expected)
    np.save(tmp_path / "wrong.npy", np.zeros((3, 4)))
    with pytest.raises(WarpresError, match=r"the code has shape \(3, 4\)"):
        editor.use_codes(again, tmp_path / "wrong.npy")
