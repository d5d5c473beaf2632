"""Session: the stage graph and the per-image cache, checked on the torch backend against the
model's networks composed directly (ARCHITECTURE §1) on tiny models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_editing_model

from warpres.edits import DirectionLibrary, LinearDirection, parse_edit_spec
from warpres.errors import BackendError, EditError, ImageError, WarpresError
from warpres.runtime.session import FeatureCache, Session

# Same float32 graph on both sides; only the stage boundaries (numpy round trips) differ.
ATOL = 1e-5


def _directions(dim: int = 32) -> DirectionLibrary:
    rng = np.random.default_rng(0)
    return DirectionLibrary([LinearDirection("smile", rng.standard_normal((1, dim)).astype(np.float32)),
                             LinearDirection("age", rng.standard_normal((1, dim)).astype(np.float32))])


@pytest.fixture(params=["inversion", "styleres", "warpres"])
def model(request):
    return tiny_editing_model(request.param)


@torch.no_grad()
def composed(model, images: torch.Tensor, edit=lambda wplus: wplus) -> np.ndarray:
    """The model's networks called one after another, as ARCHITECTURE §1 draws the dataflow."""
    synthesis, branch = model.generator.synthesis, model.branch
    wplus, enc_feat = model.encoder(images)
    wplus_edit = torch.from_numpy(edit(wplus.numpy()))
    head, head_edit = synthesis.head(wplus), synthesis.head(wplus_edit)
    feat = head_edit.feat
    if branch is not None:
        residual = branch.encode_residual(enc_feat, head.feat)
        if branch.uses_flow:
            flow = branch.estimate_flow(head.tap_quarter, head.tap_half, head.feat,
                                        head_edit.tap_quarter, head_edit.tap_half, head_edit.feat)
            feat = branch.fuse(residual, head_edit.feat, flow)
        else:
            feat = branch.fuse(residual, head_edit.feat)
    return synthesis.tail(feat, head_edit.rgb, wplus_edit).numpy()


def test_edit_matches_the_networks_composed_by_hand(model, images):
    session = Session(model, backend="torch", directions=_directions())
    requests = parse_edit_spec("smile=1.5,age=-1")
    got = session.edit(session.invert(images.numpy()), requests)
    expected = composed(model, images, lambda wplus: session.directions.apply(wplus, requests))
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_reconstruction_without_edits_matches_the_networks_composed_by_hand(model, images):
    session = Session(model, backend="torch")
    got = session.edit(session.invert(images.numpy()))
    np.testing.assert_allclose(got, composed(model, images), atol=ATOL, rtol=0)


def test_uint8_pixels_in_give_uint8_pixels_out_at_the_output_resolution():
    session = Session(tiny_editing_model("warpres"), backend="torch")
    pixels = np.random.default_rng(0).integers(0, 256, (2, 40, 50, 3), dtype=np.uint8)
    out = session.edit(session.invert(pixels))
    assert out.dtype == np.uint8 and out.shape == (2, 64, 64, 3)


def test_tensors_in_give_the_same_images_as_tensors_out(images):
    session = Session(tiny_editing_model("styleres"), backend="torch")
    out = session.edit(session.invert(images))
    assert isinstance(out, torch.Tensor)
    np.testing.assert_array_equal(out.numpy(), session.edit(session.invert(images.numpy())))


def test_editing_through_a_single_handle_keeps_the_output_kind(images):
    session = Session(tiny_editing_model("styleres"), backend="torch")
    inversion = session.invert(images)
    assert isinstance(session.edit(inversion[1]), torch.Tensor)


def test_bgr_session_takes_and_returns_opencv_channel_order():
    model = tiny_editing_model("warpres")
    pixels = np.random.default_rng(1).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    rgb = Session(model, backend="torch").edit_batch(pixels)
    bgr = Session(model, backend="torch", channels="bgr").edit_batch(pixels[..., ::-1].copy())
    np.testing.assert_array_equal(bgr[..., ::-1], rgb)


def test_edit_many_equals_separate_edits(images):
    session = Session(tiny_editing_model("warpres"), backend="torch", directions=_directions(), max_batch=2)
    inversion = session.invert(images.numpy())
    sets = ["smile=2", None, "age=1,smile=-1"]
    for edits, batched in zip(sets, session.edit_many(inversion, sets), strict=True):
        np.testing.assert_allclose(batched, session.edit(inversion, edits), atol=ATOL, rtol=0)


def test_a_re_edit_runs_only_the_per_edit_stages(images):
    session = Session(tiny_editing_model("warpres"), backend="torch", directions=_directions())
    ran = []
    run = session.backend.run_tensors
    session.backend.run_tensors = lambda stage, feeds: ran.append(stage.name) or run(stage, feeds)
    inversion = session.invert(images.numpy())
    assert ran == ["encoder", "synthesis_head", "residual_encoder"]
    ran.clear()
    session.edit(inversion, "smile=1")
    assert ran == ["synthesis_head", "flow", "fuse", "synthesis_tail"]


def test_an_evicted_image_is_recomputed_to_the_same_result(images):
    model = tiny_editing_model("warpres")
    roomy = Session(model, backend="torch", directions=_directions())
    tight = Session(model, backend="torch", directions=_directions(), cache_bytes=1)  # keeps one image
    expected = roomy.edit(roomy.invert(images.numpy()), "smile=1")
    inversion = tight.invert(images.numpy())
    assert len(tight.cache) == 1 and tight.cache.evictions == 1
    np.testing.assert_allclose(tight.edit(inversion, "smile=1"), expected, atol=ATOL, rtol=0)


def test_cache_stays_within_its_byte_budget():
    cache = FeatureCache(max_bytes=3000)
    for key in range(10):
        cache.put(key, {"x": np.zeros(250, np.float32)})  # 1000 bytes each
    assert cache.bytes == 3000 and len(cache) == 3 and 9 in cache and 6 not in cache


def test_cache_evicts_the_least_recently_used_entry():
    cache = FeatureCache(max_bytes=2000)
    cache.put(0, {"x": np.zeros(250, np.float32)})
    cache.put(1, {"x": np.zeros(250, np.float32)})
    cache.get(0)
    cache.put(2, {"x": np.zeros(250, np.float32)})
    assert 0 in cache and 1 not in cache


def test_latent_filter_sets_the_latents_edits_start_from(images):
    session = Session(tiny_editing_model("styleres"), backend="torch")
    plain = session.invert(images.numpy())
    shifted = session.invert(images.numpy(), latent_filter=lambda w: w + 0.5)
    np.testing.assert_allclose(shifted.wplus, plain.wplus + 0.5, atol=1e-6)


def test_edit_functions_on_latents_are_applied(images):
    session = Session(tiny_editing_model("warpres"), backend="torch", directions=_directions())
    inversion = session.invert(images.numpy())
    direction = _directions().resolve("smile").vector
    by_name = session.edit(inversion, "smile=2")
    by_function = session.edit(inversion, lambda w: w + 2 * direction)
    np.testing.assert_allclose(by_function, by_name, atol=ATOL, rtol=0)


def test_unknown_edit_names_are_refused_with_the_known_names(images):
    session = Session(tiny_editing_model("warpres"), backend="torch", directions=_directions())
    with pytest.raises(EditError, match="unknown edit 'smiel'.*age, smile"):
        session.edit(session.invert(images.numpy()), "smiel=1")


def test_handles_from_another_session_are_refused(images):
    model = tiny_editing_model("inversion")
    inversion = Session(model, backend="torch").invert(images.numpy())
    with pytest.raises(WarpresError, match="another Session"):
        Session(model, backend="torch").edit(inversion)


def test_nan_input_is_refused(images):
    bad = images.numpy().copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        Session(tiny_editing_model("inversion"), backend="torch").invert(bad)


def test_float_input_at_the_wrong_size_is_refused():
    session = Session(tiny_editing_model("inversion"), backend="torch")
    with pytest.raises(ImageError, match=r"3, 64, 64\)"):
        session.invert(np.zeros((1, 3, 32, 32), np.float32))


def test_an_evicted_image_is_recomputed_when_batches_are_chunked(images):
    model = tiny_editing_model("warpres")
    batch = torch.cat([images, images.flip(-1), -images])  # 6 images, chunks of 4 and 2
    roomy = Session(model, backend="torch", directions=_directions())
    tight = Session(model, backend="torch", directions=_directions(), cache_bytes=1, max_batch=4)
    np.testing.assert_allclose(tight.edit(tight.invert(batch.numpy()), "age=1"),
                               roomy.edit(roomy.invert(batch.numpy()), "age=1"), atol=ATOL, rtol=0)


def test_cached_images_do_not_keep_their_whole_batch_alive(images):
    session = Session(tiny_editing_model("warpres"), backend="torch")
    inversion = session.invert(images.numpy())
    entry = session.cache.get(inversion[0].key)  # torch tensors: the torch device keeps them where it computes
    assert all(tensor.untyped_storage().nbytes() == tensor.nbytes for tensor in entry.values())
    assert inversion[0].image.base is None and inversion[0].wplus.base is None


def test_an_empty_batch_is_refused():
    with pytest.raises(ImageError, match="B >= 1"):
        Session(tiny_editing_model("inversion"), backend="torch").invert(np.zeros((0, 3, 64, 64), np.float32))


def test_float_input_outside_minus_one_to_one_is_refused(images):
    with pytest.raises(ImageError, match=r"\[-1, 1\]"):
        Session(tiny_editing_model("inversion"), backend="torch").invert((images.numpy() + 1) * 127.5)


def test_f32_is_read_as_fp32():
    session = Session(tiny_editing_model("warpres"), backend="torch", precision="f32")
    assert session.backend.precision == "fp32" and session.backend.name == "torch (fp32, CPU)"


@pytest.mark.parametrize("precision, message", [
    ("fp16", "^torch runs fp32 or bf16, not fp16$"),
    ("int4", "^unknown precision 'int4'; choose one of fp32, bf16, fp16, int8, mixed$"),
])
def test_a_precision_the_backend_cannot_run_is_refused_naming_what_it_runs(precision, message):
    with pytest.raises(BackendError, match=message):
        Session(tiny_editing_model("warpres"), backend="torch", precision=precision)


def test_a_checkpoint_on_an_onnx_backend_needs_the_exporter_handed_in(tmp_path):
    from warpres.checkpoints import save_model

    checkpoint = tmp_path / "tiny.safetensors"
    save_model(tiny_editing_model("warpres"), checkpoint)
    with pytest.raises(BackendError, match="exports it first: pass exporter=warpres.export.export_checkpoint"):
        Session(checkpoint, backend="onnxruntime", export_cache=tmp_path / "cache")
    exported = []

    def exporter(path, folder):
        exported.append(path)
        raise BackendError("stop here")

    with pytest.raises(BackendError, match="stop here"):
        Session(checkpoint, backend="onnxruntime", export_cache=tmp_path / "cache", exporter=exporter)
    assert exported == [checkpoint]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_a_torch_session_on_cuda_renders_what_the_cpu_renders_and_keeps_its_cache_there(images, family):
    """TF32 off: the claim is the device layer (tensors staying on the GPU), not TF32 rounding."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = tiny_editing_model(family)
    cpu = Session(model, backend="torch", directions=_directions(), max_batch=2)
    gpu = Session(model, backend="torch", directions=_directions(), max_batch=2, backend_options={"device": "cuda"})
    inversion = gpu.invert(images.numpy())
    assert all(tensor.is_cuda for tensor in gpu.cache.get(inversion[0].key).values())
    for edits in (None, "smile=2", "age=1,smile=-1"):
        np.testing.assert_allclose(gpu.edit(inversion, edits), cpu.edit(cpu.invert(images.numpy()), edits),
                                   atol=1e-4, rtol=0)
