"""The demo bundle stores E0, the generator and both branches once, and gives back three models."""

from __future__ import annotations

import torch

from tests.conftest import tiny_editing_model
from warpres.checkpoints import load_checkpoint
from warpres.demo.bundle import materialize, read_bundle, write_bundle
from warpres.demo.regressor import AttributeRegressor


def _rounded_to_half(model):
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    return model


def _bundle(tmp_path):
    styleres, warpres = tiny_editing_model("styleres"), tiny_editing_model("warpres")
    path = tmp_path / "models.safetensors"
    write_bundle(path, warpres.generator, warpres.encoder, {"styleres": styleres.branch, "warpres": warpres.branch},
                 AttributeRegressor())
    return path, _rounded_to_half(warpres), _rounded_to_half(styleres)


def test_the_bundle_gives_back_each_family_as_stored_in_float16(tmp_path, images):
    path, warpres, styleres = _bundle(tmp_path)
    models = read_bundle(path)
    assert set(models) == {"inversion", "styleres", "warpres"}
    with torch.no_grad():
        for family, reference in (("warpres", warpres), ("styleres", styleres)):
            expected = reference.branch.state_dict()
            for name, value in models[family].branch.state_dict().items():
                torch.testing.assert_close(value, expected[name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(models["inversion"].encoder(images)[0], warpres.encoder(images)[0], rtol=0, atol=0)


def test_materialized_checkpoints_load_as_their_families_and_are_reused(tmp_path):
    path, _, _ = _bundle(tmp_path)
    paths = materialize(path, cache=tmp_path / "cache")
    assert {family: load_checkpoint(p).family for family, p in paths.items()} == {
        "inversion": "inversion", "styleres": "styleres", "warpres": "warpres"}
    stamp = paths["warpres"].stat().st_mtime_ns
    assert materialize(path, cache=tmp_path / "cache") == paths and paths["warpres"].stat().st_mtime_ns == stamp


def test_what_float16_cannot_hold_is_stored_in_float32(tmp_path, images):
    model = tiny_editing_model("warpres")
    norm = next(m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    norm.running_var.fill_(5e5)  # E0's trained running variances reach this; float16 tops out at 65,504
    path = tmp_path / "models.safetensors"
    write_bundle(path, model.generator, model.encoder, {"warpres": model.branch}, AttributeRegressor())
    stored = read_bundle(path)["inversion"].encoder
    stored_norm = next(m for m in stored.modules() if isinstance(m, torch.nn.BatchNorm2d))
    torch.testing.assert_close(stored_norm.running_var, norm.running_var, rtol=0, atol=0)
    with torch.no_grad():
        assert torch.isfinite(stored(images)[0]).all()
