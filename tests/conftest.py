"""Shared fixtures: tiny models that build in milliseconds."""

from __future__ import annotations

import pytest
import torch

from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan


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
