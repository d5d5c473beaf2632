"""Shared fixtures: tiny models that build in milliseconds."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan
from warpres.models.styleres import StyleResBranch, StyleResConfig
from warpres.models.warpres import WarpResBranch, WarpResConfig


def tiny_generator_config(**overrides) -> GeneratorConfig:
    """64x64 output, E = 16, widths 32..8: every code path of the 1024 model, at toy size."""
    base = dict(resolution=64, channels=channel_plan(64, channel_base=512, channel_max=32),
                z_dim=32, w_dim=32, mapping_layers=2, conv_clamp=256.0, embed_res=16)
    return GeneratorConfig(**{**base, **overrides})


@pytest.fixture
def tiny_generator() -> Generator:
    torch.manual_seed(0)
    generator = Generator(tiny_generator_config()).eval()
    with torch.no_grad():  # non-zero noise and biases, so the tests see their effect
        for name, param in generator.named_parameters():
            if name.endswith(("noise_strength", "bias")):
                param.normal_(0, 0.1)
    return generator


@pytest.fixture
def wplus(tiny_generator) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return tiny_generator.mapping(torch.randn(3, tiny_generator.config.z_dim)) + 0.3 * torch.randn(
            3, tiny_generator.num_ws, tiny_generator.config.w_dim)


@pytest.fixture(scope="session")
def official_edits_dir():
    """The official edit files (e4e InterfaceGAN / GANSpace data): $WARPRES_OFFICIAL_EDITS,
    else <repo>/../shared/data/official_edits; tests needing them skip when absent."""
    configured = os.environ.get("WARPRES_OFFICIAL_EDITS")
    folder = (Path(configured) if configured
              else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "official_edits")
    if not folder.is_dir():
        pytest.skip(f"official edit files not found at {folder} (set WARPRES_OFFICIAL_EDITS)")
    return folder


def tiny_encoder_config(kind: str = "e4e") -> EncoderConfig:
    """IR-SE-50 layout at widths 8..16 on 64x64 inputs: enc_feat (B, 8, 16, 16) meets E = 16."""
    return EncoderConfig(kind=kind, num_ws=10, w_dim=32, input_size=64, stage_widths=(8, 8, 16, 16), se_reduction=4)


def tiny_branch(family: str) -> StyleResBranch | WarpResBranch:
    if family == "styleres":
        return StyleResBranch(StyleResConfig(enc_channels=8, feat_channels=32, align_channels=16,
                                             extract_channels=16, gate_channels=8))
    return WarpResBranch(WarpResConfig(enc_channels=8, feat_channels=32, tap_quarter_channels=32,
                                       tap_half_channels=32, width=16, adapter_channels=8))


def randomize_(module: torch.nn.Module, scale: float = 0.1) -> torch.nn.Module:
    """Give zero-initialised layers (flow / refiner outputs, biases) non-zero weights, as trained ones have."""
    with torch.no_grad():
        for param in module.parameters():
            if not param.abs().sum():
                param.normal_(0, scale)
    return module


def randomize_batchnorm_(module: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm running statistics, so eval-mode outputs depend on the loaded buffers."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.normal_(0.0, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    return module


def tiny_editing_model(family: str, encoder_kind: str = "e4e") -> EditingModel:
    torch.manual_seed(0)
    generator = Generator(tiny_generator_config())
    encoder = StyleEncoder(tiny_encoder_config(encoder_kind))
    encoder.set_latent_avg(0.1 * torch.randn(10, 32))
    branch = None if family == "inversion" else randomize_(tiny_branch(family))
    return EditingModel(randomize_(generator), randomize_batchnorm_(randomize_(encoder)), branch).eval()


def family_model(family: str) -> EditingModel:
    """The tiny warpres model; for the other families its generator and encoder with the tiny
    StyleRes branch, or none (so the families share E0 and G, and their traces)."""
    model = tiny_editing_model("warpres")
    if family == "warpres":
        return model
    torch.manual_seed(1)
    branch = None if family == "inversion" else randomize_(tiny_branch("styleres"))
    return EditingModel(model.generator, model.encoder, branch).eval()


def tiny_directions():
    from warpres.edits import DirectionLibrary, LinearDirection

    rng = np.random.default_rng(0)
    return DirectionLibrary([LinearDirection("smile", rng.standard_normal(32).astype(np.float32)),
                             LinearDirection("age", rng.standard_normal((10, 32)).astype(np.float32))])


@dataclass(frozen=True)
class Exported:
    model: EditingModel
    folder: object  # warpres.stages.ModelFolder
    directions: object | None  # warpres.edits.DirectionLibrary


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Callable[[str], Exported]:
    """family -> `family_model(family)` exported (portable, validated) once per test session;
    warpres with `tiny_directions()`. Shared: a test that writes into a folder (engines,
    tampering) works on `copy_of(...)`."""
    from warpres.export import export_model

    made: dict[str, Exported] = {}
    traced: dict = {}  # the families share E0 and G: their stages are traced once

    def export(family: str) -> Exported:
        if family not in made:
            model = family_model(family)
            directions = tiny_directions() if family == "warpres" else None
            folder = export_model(model, tmp_path_factory.mktemp(family) / "model", directions=directions,
                                  progress=False, traced=traced)
            made[family] = Exported(model, folder, directions)
        return made[family]

    return export


def copy_of(folder, destination: Path):
    """A writable copy of a shared exported folder at `destination`, opened."""
    from warpres.stages import open_model_folder

    shutil.copytree(folder.path, destination)
    return open_model_folder(destination)


def torch_edit(model: EditingModel, images: torch.Tensor, edits=None, **options) -> torch.Tensor:
    """The PyTorch pipeline: `images` (B, 3, S, S) inverted and edited by `Session(model, backend="torch")`."""
    from warpres.runtime.session import Session

    return Session(model, backend="torch", **options).edit_batch(images, edits)


@pytest.fixture
def images() -> torch.Tensor:
    torch.manual_seed(2)
    return torch.rand(2, 3, 64, 64) * 2 - 1


@pytest.fixture(scope="session")
def cmake_build(tmp_path_factory):
    """The plugins' CMake project configured once per session (plugins/); skips without cmake or a C++ compiler."""
    from tests.plugin_libraries import configure_plugins

    return configure_plugins(tmp_path_factory.mktemp("plugins_build"))


@pytest.fixture(scope="session")
def reference(cmake_build):
    """libwarpres_plugin_reference: the plugins' math on the CPU (tests.plugin_libraries.ReferenceLibrary)."""
    from tests.plugin_libraries import ReferenceLibrary

    return ReferenceLibrary(cmake_build.build("warpres_plugin_reference"))
