"""Claims about the editing pipeline on PyTorch (`Session(model, backend="torch")`): the dataflow of
ARCHITECTURE §1 with its per-image cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import tiny_editing_model
from warpres.errors import EditError, WarpresError
from warpres.models.editor import EditingModel
from warpres.runtime.session import Session


def shift_all_layers(amount: float):
    return lambda wplus: wplus + np.float32(amount)


def torch_session(model: EditingModel, **options) -> Session:
    return Session(model, backend="torch", **options)


@pytest.mark.parametrize("family", ["styleres", "warpres", "inversion"])
def test_pipeline_edits_keep_shapes_and_dtypes(family, images):
    editor = torch_session(tiny_editing_model(family))
    inversion = editor.invert(images)
    edited = editor.edit(inversion, [shift_all_layers(0.5)])
    assert inversion.wplus.shape == (2, 10, 32) and inversion.wplus.dtype == np.float32
    assert edited.shape == (2, 3, 64, 64) and edited.dtype == torch.float32
    assert torch.isfinite(edited).all()


def _silence_residual_path(model: EditingModel) -> None:
    """Zero E2's weights: StyleRes' deltaF and WarpRes' refiner output become exactly zero."""
    fuse_parts = ([model.branch.gates.down1, model.branch.gates.down2, model.branch.gates.convs]
                  if model.family == "styleres" else [model.branch.refiner])
    with torch.no_grad():
        for part in fuse_parts:
            for param in part.parameters():
                param.zero_()


@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_with_the_residual_path_zeroed_the_output_is_plain_stylegan2_inversion(family, images):
    model = tiny_editing_model(family)
    _silence_residual_path(model)
    editor = torch_session(model)
    inversion = editor.invert(images)
    edit = shift_all_layers(0.3)
    wplus_edit = editor.edited_latents(inversion, [edit])
    with torch.no_grad():
        plain = model.generator.synthesis(torch.from_numpy(wplus_edit))
    torch.testing.assert_close(editor.edit(inversion, [edit]), plain, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_residuals_change_the_output(family, images):
    model = tiny_editing_model(family)
    editor = torch_session(model)
    inversion = editor.invert(images)
    with torch.no_grad():
        plain = model.generator.synthesis(torch.from_numpy(inversion.wplus))
    assert (editor.edit(inversion) - plain).abs().max() > 1e-3


def test_styleres_matches_the_official_injection_formula(images):
    """Official b64: x = x*(1-gate) + (x+deltaF)*gate with E1 fed by the unedited conv0 output."""
    model = tiny_editing_model("styleres")
    editor = torch_session(model)
    inversion = editor.invert(images)
    synthesis, branch = model.generator.synthesis, model.branch
    with torch.no_grad():
        wplus, enc_feat = model.encoder(images)
        f_feats = synthesis.head(wplus).feat
        wplus_edit = wplus - 0.4
        edit_head = synthesis.head(wplus_edit)
        x = edit_head.feat
        delta, gate = branch.gates(x, branch.extraction(branch.alignment(enc_feat, f_feats)))
        reference = synthesis.tail(x * (1 - gate) + (x + delta) * gate, edit_head.rgb, wplus_edit)
    torch.testing.assert_close(editor.edit(inversion, [shift_all_layers(-0.4)]), reference, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_an_edit_reruns_neither_the_encoder_nor_e1(family, images):
    model = tiny_editing_model(family)
    editor = torch_session(model)
    inversion = editor.invert(images)
    e1 = model.branch.alignment if family == "styleres" else model.branch.residual_encoder
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append("encoder"))
    e1.register_forward_hook(lambda *_: calls.append("e1"))
    editor.edit(inversion, [shift_all_layers(0.2)])
    editor.edit(inversion, [shift_all_layers(-0.2)])
    assert calls == []


@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_edit_many_equals_one_edit_at_a_time(family, images):
    editor = torch_session(tiny_editing_model(family), max_batch=3)
    inversion = editor.invert(images)
    edit_sets = [[shift_all_layers(0.2)], [], [shift_all_layers(-0.3), shift_all_layers(0.1)]]
    together = editor.edit_many(inversion, edit_sets)
    for edits, image in zip(edit_sets, together, strict=True):
        torch.testing.assert_close(image, editor.edit(inversion, edits), atol=1e-5, rtol=1e-5)


def test_batched_inversion_equals_per_image_inversion(images):
    editor = torch_session(tiny_editing_model("warpres"))
    batched = editor.edit(editor.invert(images), [shift_all_layers(0.2)])
    single = torch.cat([editor.edit(editor.invert(images[i:i + 1]), [shift_all_layers(0.2)]) for i in range(2)])
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-5)


def test_edits_are_numpy_functions_applied_in_order(images):
    editor = torch_session(tiny_editing_model("inversion"))
    inversion = editor.invert(images)
    latents = editor.edited_latents(inversion, [lambda w: w * 2, lambda w: w + np.float32(1)])
    np.testing.assert_array_equal(latents, inversion.wplus * 2 + 1)


def test_wrong_image_size_names_the_expected_shape():
    editor = torch_session(tiny_editing_model("inversion"))
    with pytest.raises(WarpresError, match=r"3, 64, 64\)"):
        editor.invert(torch.zeros(1, 3, 32, 32))


def test_nan_images_are_refused():
    editor = torch_session(tiny_editing_model("inversion"))
    with pytest.raises(WarpresError, match="NaN"):
        editor.invert(torch.full((1, 3, 64, 64), float("nan")))


def test_a_generator_only_model_cannot_invert():
    model = tiny_editing_model("inversion")
    with pytest.raises(WarpresError, match="no encoder"):
        torch_session(EditingModel(model.generator))


def test_named_edits_resolve_in_the_direction_library(images):
    from warpres.edits import DirectionLibrary, LinearDirection

    direction = LinearDirection("brighter", np.linspace(-1, 1, 32, dtype=np.float32))
    editor = torch_session(tiny_editing_model("inversion"), directions=DirectionLibrary([direction]))
    inversion = editor.invert(images)
    expected = inversion.wplus + 2 * direction.vector
    np.testing.assert_allclose(editor.edited_latents(inversion, "brighter=2"), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(editor.edit(inversion, ["brighter=2"]), editor.edit(inversion, lambda _: expected))


def test_named_edits_without_a_library_are_a_clear_error(images):
    editor = torch_session(tiny_editing_model("inversion"))
    with pytest.raises(EditError, match="no edit directions"):
        editor.edit(editor.invert(images), "smile=2")


def test_inversion_in_chunks_equals_one_batch(images):
    model = tiny_editing_model("warpres")
    whole, chunked = torch_session(model, max_batch=8), torch_session(model, max_batch=1)
    for whole_handle, chunked_handle in zip(whole.invert(images), chunked.invert(images), strict=True):
        expected, entry = whole.cache.get(whole_handle.key), chunked.cache.get(chunked_handle.key)
        assert entry.keys() == expected.keys() == {"feat", "tap_quarter", "tap_half", "residual"}
        for name, tensor in entry.items():
            np.testing.assert_allclose(tensor, expected[name], atol=1e-5, rtol=1e-5, err_msg=name)
