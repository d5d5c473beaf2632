"""The full FFHQ-1024 StyleRes configuration, end to end on the CPU (slow: run with -m slow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_model_checkpoints import official_styleres_checkpoint
from warpres.checkpoints import load_checkpoint
from warpres.images import to_model_input, to_uint8
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig
from warpres.models.styleres import StyleResBranch
from warpres.runtime.session import Session

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ffhq_checkpoint(tmp_path_factory):
    """A random StyleRes model in the official FFHQ layout, written as styleres_ffhq.pth."""
    torch.manual_seed(0)
    model = EditingModel(Generator(GeneratorConfig()), StyleEncoder(EncoderConfig()), StyleResBranch())
    model.encoder.set_latent_avg(torch.randn(18, 512) * 0.1)
    path = tmp_path_factory.mktemp("ffhq") / "styleres_ffhq.pth"
    torch.save(official_styleres_checkpoint(model), path)
    return path


def test_ffhq_styleres_edits_a_256_image_end_to_end(ffhq_checkpoint):
    model = load_checkpoint(ffhq_checkpoint)
    assert model.family == "styleres" and model.generator.config.resolution == 1024
    assert model.generator.num_ws == 18 and model.generator.config.embed_res == 64
    image = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    session = Session(model, backend="torch")
    inversion = session.invert(torch.from_numpy(to_model_input(image, 256)))
    assert inversion.wplus.shape == (1, 18, 512)
    assert session.cache.get(inversion[0].key)["residual"].shape == (512, 64, 64)
    edited = session.edit(inversion, [lambda w: w + np.float32(0.5)])
    assert edited.shape == (1, 3, 1024, 1024) and torch.isfinite(edited).all()
    assert to_uint8(edited.numpy()).shape == (1, 1024, 1024, 3)
