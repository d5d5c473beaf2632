"""Claims about loading generators from the official layouts, safely."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

from tests.conftest import tiny_generator_config
from tests.reference.rosinality_generator import RosinalityGenerator
from warpres.checkpoints.nvlabs import load_nvlabs_generator
from warpres.checkpoints.rosinality import load_rosinality_generator, rosinality_to_nvlabs
from warpres.checkpoints.safe_load import load_torch_checkpoint
from warpres.errors import CheckpointError
from warpres.models.stylegan2 import Generator


@pytest.fixture
def rosinality_generator() -> RosinalityGenerator:
    torch.manual_seed(0)
    generator = RosinalityGenerator(size=64, style_dim=32, n_mlp=2, narrow=1 / 16)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith(("noise.weight", "bias")) and "modulation" not in name:
                param.normal_(0, 0.1)
    return generator.eval()


def save_rosinality_checkpoint(generator: RosinalityGenerator, path) -> None:
    """As rosinality's train.py saves: g, d, g_ema, optimiser states, args (a Namespace), ada_aug_p."""
    torch.save({"g": generator.state_dict(), "d": {}, "g_ema": generator.state_dict(), "g_optim": {},
                "d_optim": {}, "args": argparse.Namespace(size=64, latent=32, n_mlp=2), "ada_aug_p": 0.0}, path)


def test_rosinality_checkpoint_reproduces_the_source_generator(rosinality_generator, tmp_path):
    save_rosinality_checkpoint(rosinality_generator, tmp_path / "550000.pt")
    data = load_torch_checkpoint(tmp_path / "550000.pt")
    generator = load_rosinality_generator(data["g_ema"], "550000.pt")
    torch.manual_seed(1)
    wplus = torch.randn(2, rosinality_generator.n_latent, 32)
    with torch.no_grad():
        torch.testing.assert_close(generator.synthesis(wplus), rosinality_generator.synthesis(wplus),
                                   atol=1e-4, rtol=1e-4)


def test_rosinality_w_avg_is_the_mean_mapping_output(rosinality_generator):
    generator = load_rosinality_generator(rosinality_generator.state_dict(), "g_ema")
    z = torch.randn(20_000, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        reference = rosinality_generator.style(z).mean(0)
    torch.testing.assert_close(generator.mapping.w_avg, reference, atol=0.05, rtol=0)


def test_rosinality_config_is_inferred_from_the_tensors(rosinality_generator):
    generator = load_rosinality_generator(rosinality_generator.state_dict(), "g_ema")
    cfg = generator.config
    assert (cfg.resolution, cfg.num_ws, cfg.w_dim, cfg.mapping_layers, cfg.conv_clamp) == (64, 10, 32, 2, None)
    assert cfg.channels == tuple(rosinality_generator.channels[r] for r in cfg.block_resolutions)


def test_rosinality_unexpected_key_is_named(rosinality_generator):
    state = dict(rosinality_generator.state_dict())
    state["convs.0.conv.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"convs\.0\.conv\.extra"):
        rosinality_to_nvlabs(state, "g_ema")


def test_rosinality_missing_key_is_named(rosinality_generator):
    state = dict(rosinality_generator.state_dict())
    del state["to_rgbs.1.bias"]
    with pytest.raises(CheckpointError, match=r"to_rgbs\.1\.bias"):
        rosinality_to_nvlabs(state, "g_ema")


def test_nvlabs_state_dict_round_trips_with_inferred_config(tiny_generator, wplus, tmp_path):
    torch.save(tiny_generator.state_dict(), tmp_path / "G_ema.pt")
    loaded = load_nvlabs_generator(load_torch_checkpoint(tmp_path / "G_ema.pt"), "G_ema.pt", embed_res=16)
    assert loaded.config == tiny_generator.config
    assert torch.equal(loaded.synthesis(wplus), tiny_generator.synthesis(wplus))


def test_nvlabs_shape_mismatch_names_key_and_both_shapes(tiny_generator):
    state = dict(tiny_generator.state_dict())
    state["synthesis.b8.conv1.affine.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError, match=r"synthesis\.b8\.conv1\.affine\.weight: checkpoint \(3, 3\) vs model"):
        load_nvlabs_generator(state, "G.pt", embed_res=16)


def test_nvlabs_nan_weights_are_refused(tiny_generator):
    state = dict(tiny_generator.state_dict())
    state["mapping.fc1.bias"] = torch.full_like(state["mapping.fc1.bias"], float("nan"))
    with pytest.raises(CheckpointError, match=r"non-finite.*mapping\.fc1\.bias"):
        load_nvlabs_generator(state, "G.pt", embed_res=16)


def test_a_foreign_resample_filter_is_refused(tiny_generator):
    state = dict(tiny_generator.state_dict())
    state["synthesis.b8.conv0.resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(CheckpointError, match="binomial"):
        load_nvlabs_generator(state, "G.pt", embed_res=16)


def _exit_code_payload():
    return os.system  # a pickled reference to a callable: what a malicious checkpoint carries


def test_a_checkpoint_with_a_pickled_function_is_refused(tmp_path):
    torch.save({"g_ema": {}, "hook": _exit_code_payload()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"refused to load: it references posix\.system; checkpoints are data"):
        load_torch_checkpoint(tmp_path / "evil.pt")


def test_a_truncated_checkpoint_gives_a_clear_error(tiny_generator, tmp_path):
    path = tmp_path / "cut.pt"
    torch.save(tiny_generator.state_dict(), path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable PyTorch checkpoint"):
        load_torch_checkpoint(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt: no such checkpoint file"):
        load_torch_checkpoint(tmp_path / "nope.pt")


def test_a_fresh_generator_built_from_a_loaded_config_has_identical_keys(tiny_generator):
    assert Generator(tiny_generator_config()).state_dict().keys() == tiny_generator.state_dict().keys()
