"""Claims about whole-model checkpoints: official StyleRes / e4e / pSp layouts and our own format."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import randomize_, randomize_batchnorm_, tiny_editing_model, torch_edit
from tests.reference.rosinality_generator import RosinalityGenerator
from warpres.checkpoints import load_checkpoint, save_model
from warpres.errors import CheckpointError
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.styleres import StyleResBranch


def official_styleres_checkpoint(model) -> dict:
    """As StyleRes' loader expects: e4e weights unprefixed, latent_avg, branch inside b<E>."""
    embed = model.generator.config.embed_res
    generator_smooth = dict(model.generator.state_dict())
    official = {"alignment.": "modify_feature_alignment.", "extraction.": "modify_feature_extraction.",
                "gates.": "modify_feature_gates."}
    for key, value in model.branch.state_dict().items():
        ours = next(p for p in official if key.startswith(p))
        generator_smooth[f"synthesis.b{embed}.{official[ours]}{key[len(ours):]}"] = value
    return {"e4e": model.encoder.state_dict(), "latent_avg": model.encoder.latent_avg.clone(),
            "generator_smooth": generator_smooth}


def test_official_styleres_checkpoint_reproduces_the_source_model(images, tmp_path):
    source = tiny_editing_model("styleres")
    torch.save(official_styleres_checkpoint(source), tmp_path / "styleres_ffhq.pth")
    loaded = load_checkpoint(tmp_path / "styleres_ffhq.pth")
    assert loaded.family == "styleres" and loaded.branch.config == source.branch.config
    assert loaded.generator.config == source.generator.config and loaded.encoder.config == source.encoder.config
    edit = [lambda w: w + 0.3]
    expected = torch_edit(source, images, edit)
    torch.testing.assert_close(torch_edit(loaded, images, edit), expected, atol=0, rtol=0)


def test_official_styleres_shape_mismatch_names_the_key(tmp_path):
    checkpoint = official_styleres_checkpoint(tiny_editing_model("styleres"))
    checkpoint["e4e"]["styles.3.linear.bias"] = torch.zeros(7)
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth\[e4e\].*styles\.3\.linear\.bias: checkpoint \(7,\)"):
        load_checkpoint(tmp_path / "bad.pth")


def test_official_styleres_missing_branch_key_is_named(tmp_path):
    checkpoint = official_styleres_checkpoint(tiny_editing_model("styleres"))
    del checkpoint["generator_smooth"]["synthesis.b16.modify_feature_gates.convs2.2.res_layer.2.bias"]
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"gates\.convs2\.2\.res_layer\.2\.bias"):
        load_checkpoint(tmp_path / "bad.pth")


def _official_e4e_checkpoint(model, decoder: RosinalityGenerator, encoder_type: str) -> dict:
    """As e4e/pSp training saves: prefixed encoder + rosinality decoder, opts as a dict, latent_avg."""
    state = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    state |= {f"decoder.{k}": v for k, v in decoder.state_dict().items()}
    opts = {"encoder_type": encoder_type, "stylegan_size": 64, "start_from_latent_avg": True}
    return {"state_dict": state, "opts": opts, "latent_avg": model.encoder.latent_avg.clone()}


@pytest.mark.parametrize(("encoder_type", "kind"), [("Encoder4Editing", "e4e"), ("GradualStyleEncoder", "psp")])
def test_official_e4e_and_psp_checkpoints_reproduce_encoder_and_decoder(encoder_type, kind, images, tmp_path):
    source = tiny_editing_model("inversion", encoder_kind=kind)
    torch.manual_seed(3)
    decoder = RosinalityGenerator(size=64, style_dim=32, n_mlp=2, narrow=1 / 16).eval()
    torch.save(_official_e4e_checkpoint(source, decoder, encoder_type), tmp_path / "e4e_ffhq_encode.pt")
    loaded = load_checkpoint(tmp_path / "e4e_ffhq_encode.pt")
    assert loaded.family == "inversion" and loaded.encoder.config.kind == kind
    with torch.no_grad():
        wplus, _ = source.encoder(images)
        expected = decoder.synthesis(wplus)
    torch.testing.assert_close(torch_edit(loaded, images), expected, atol=1e-4, rtol=1e-4)


def test_e4e_checkpoint_without_encoder_type_is_refused(tmp_path):
    source = tiny_editing_model("inversion")
    checkpoint = _official_e4e_checkpoint(source, RosinalityGenerator(64, 32, 2, narrow=1 / 16), "Encoder4Editing")
    checkpoint["opts"] = {}
    torch.save(checkpoint, tmp_path / "e4e.pt")
    with pytest.raises(CheckpointError, match=r"encoder_type.*'Encoder4Editing', 'GradualStyleEncoder'"):
        load_checkpoint(tmp_path / "e4e.pt")


@pytest.mark.parametrize("family", ["styleres", "warpres", "inversion"])
def test_native_format_round_trips_exactly(family, images, tmp_path):
    source = tiny_editing_model(family)
    save_model(source, tmp_path / "model.safetensors")
    loaded = load_checkpoint(tmp_path / "model.safetensors")
    assert loaded.family == family
    for ours, theirs in zip(source.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert ours[0] == theirs[0] and torch.equal(ours[1], theirs[1])
    assert torch.equal(loaded.encoder.latent_avg, source.encoder.latent_avg)
    assert torch.equal(torch_edit(loaded, images), torch_edit(source, images))


def test_native_checkpoint_with_a_tampered_tensor_names_it(tmp_path):
    path = tmp_path / "model.safetensors"
    save_model(tiny_editing_model("warpres"), path)
    tensors = load_file(path)
    tensors["branch.refiner.extra"] = torch.zeros(1)
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        metadata = json.loads(handle.read(header_len))["__metadata__"]
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['refiner\.extra'\]"):
        load_checkpoint(path)


def test_safetensors_without_our_metadata_is_refused(tmp_path):
    save_file({"x": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(CheckpointError, match="without warpres metadata"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_nvlabs_pickles_are_refused_with_a_way_out(tmp_path):
    (tmp_path / "network-snapshot.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="contain code.*state_dict"):
        load_checkpoint(tmp_path / "network-snapshot.pkl")


def test_an_unrecognised_checkpoint_lists_the_supported_formats(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=r"unrecognised checkpoint.*StyleRes .pth, e4e/pSp .pt"):
        load_checkpoint(tmp_path / "x.pt")


def test_a_generator_state_dict_loads_as_a_generator_only_model(tmp_path):
    source = tiny_editing_model("inversion")
    torch.save({"G_ema": source.generator.state_dict()}, tmp_path / "G.pt")
    loaded = load_checkpoint(tmp_path / "G.pt")
    assert loaded.family == "generator" and loaded.generator.config.resolution == 64


def test_e4e_opts_saved_as_a_namespace_are_read_too(images, tmp_path):
    import argparse

    source = tiny_editing_model("inversion", encoder_kind="psp")
    checkpoint = _official_e4e_checkpoint(source, RosinalityGenerator(64, 32, 2, narrow=1 / 16), "GradualStyleEncoder")
    checkpoint["opts"] = argparse.Namespace(**checkpoint["opts"])
    torch.save(checkpoint, tmp_path / "psp.pt")
    assert load_checkpoint(tmp_path / "psp.pt").encoder.config.kind == "psp"


def test_styleres_without_latent_avg_is_refused(tmp_path):
    checkpoint = official_styleres_checkpoint(tiny_editing_model("styleres"))
    checkpoint["latent_avg"] = None
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth: missing latent_avg"):
        load_checkpoint(tmp_path / "bad.pth")


def test_a_non_state_dict_entry_is_named(tmp_path):
    checkpoint = official_styleres_checkpoint(tiny_editing_model("styleres"))
    checkpoint["e4e"] = [1, 2]
    torch.save(checkpoint, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=r"bad\.pth\[e4e\]: expected a state dict"):
        load_checkpoint(tmp_path / "bad.pth")


def test_styleres_injecting_at_a_coarser_resolution_reads_the_matching_encoder_stage(tmp_path):
    """As the official E = 32 variant: E = S/8, so enc_feat is the end of body stage 2, not 1."""
    source = tiny_editing_model("styleres")
    config = dict(source.encoder.config.to_dict(), input_size=128, feature_stage=2)
    encoder = randomize_batchnorm_(randomize_(StyleEncoder(EncoderConfig.from_dict(config))))
    branch = randomize_(StyleResBranch(dataclasses.replace(source.branch.config, enc_channels=16)))
    model = EditingModel(source.generator, encoder, branch).eval()
    torch.save(official_styleres_checkpoint(model), tmp_path / "styleres_e16_s128.pth")
    loaded = load_checkpoint(tmp_path / "styleres_e16_s128.pth")
    assert loaded.encoder.config.feature_stage == 2 and loaded.encoder.config.feature_channels == 16
    images = torch.rand(1, 3, 128, 128) * 2 - 1
    expected = torch_edit(model, images)
    torch.testing.assert_close(torch_edit(loaded, images), expected, atol=0, rtol=0)


def test_e4e_encoder_and_decoder_of_different_w_plus_sizes_are_refused(tmp_path):
    source = tiny_editing_model("inversion")
    decoder = RosinalityGenerator(size=128, style_dim=32, n_mlp=2, narrow=1 / 16)
    torch.save(_official_e4e_checkpoint(source, decoder, "Encoder4Editing"), tmp_path / "e4e.pt")
    with pytest.raises(CheckpointError, match=r"e4e\.pt: its parts do not fit together: encoder predicts \(10, 32\)"):
        load_checkpoint(tmp_path / "e4e.pt")
