"""Claims about the StyleGAN2 discriminator: NVlabs key layout, strict loading, minibatch-stddev rules."""

from __future__ import annotations

import pytest
import torch

from warpres.checkpoints.nvlabs import load_nvlabs_discriminator
from warpres.errors import CheckpointError
from warpres.models.discriminator import Discriminator, DiscriminatorConfig, minibatch_std

# Widths for 32x32 with channel_base=256, channel_max=32: min(256 // res, 32) -> 4: 32, 8: 32, 16: 16, 32: 8.
# Expected names and shapes, read off NVlabs' DiscriminatorBlock / DiscriminatorEpilogue (c_dim=0,
# architecture='resnet'): every Conv2dLayer and every block registers a 4x4 `resample_filter`; only
# the top block has fromrgb; skip has no bias; the minibatch-stddev layer holds no tensors.
NVLABS_32_KEYS = {
    "b32.resample_filter": (4, 4),
    "b32.fromrgb.weight": (8, 3, 1, 1),
    "b32.fromrgb.bias": (8,),
    "b32.fromrgb.resample_filter": (4, 4),
    "b32.conv0.weight": (8, 8, 3, 3),
    "b32.conv0.bias": (8,),
    "b32.conv0.resample_filter": (4, 4),
    "b32.conv1.weight": (16, 8, 3, 3),
    "b32.conv1.bias": (16,),
    "b32.conv1.resample_filter": (4, 4),
    "b32.skip.weight": (16, 8, 1, 1),
    "b32.skip.resample_filter": (4, 4),
    "b16.resample_filter": (4, 4),
    "b16.conv0.weight": (16, 16, 3, 3),
    "b16.conv0.bias": (16,),
    "b16.conv0.resample_filter": (4, 4),
    "b16.conv1.weight": (32, 16, 3, 3),
    "b16.conv1.bias": (32,),
    "b16.conv1.resample_filter": (4, 4),
    "b16.skip.weight": (32, 16, 1, 1),
    "b16.skip.resample_filter": (4, 4),
    "b8.resample_filter": (4, 4),
    "b8.conv0.weight": (32, 32, 3, 3),
    "b8.conv0.bias": (32,),
    "b8.conv0.resample_filter": (4, 4),
    "b8.conv1.weight": (32, 32, 3, 3),
    "b8.conv1.bias": (32,),
    "b8.conv1.resample_filter": (4, 4),
    "b8.skip.weight": (32, 32, 1, 1),
    "b8.skip.resample_filter": (4, 4),
    "b4.conv.weight": (32, 33, 3, 3),
    "b4.conv.bias": (32,),
    "b4.conv.resample_filter": (4, 4),
    "b4.fc.weight": (32, 32 * 4 * 4),
    "b4.fc.bias": (32,),
    "b4.out.weight": (1, 32),
    "b4.out.bias": (1,),
}


def tiny_config(**overrides) -> DiscriminatorConfig:
    return DiscriminatorConfig(**{**dict(resolution=32, channel_base=256, channel_max=32), **overrides})


@pytest.fixture
def disc() -> Discriminator:
    torch.manual_seed(0)
    model = Discriminator(tiny_config()).eval()
    with torch.no_grad():  # non-zero biases so that a dropped bias would show
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0.0, 0.3)
    return model


def images(batch: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_config_widths_follow_nvlabs_channel_rule():
    assert tiny_config().channels == (32, 32, 16, 8)
    assert DiscriminatorConfig(resolution=1024).channels == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    assert DiscriminatorConfig.from_dict(tiny_config().to_dict()) == tiny_config()
    with pytest.raises(ValueError, match="c_dim"):
        tiny_config(c_dim=10)


def test_output_is_one_logit_per_image(disc):
    out = disc(images(4))
    assert out.shape == (4, 1)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match="expected images"):
        disc(torch.zeros(2, 3, 16, 16))


def test_state_dict_has_exactly_the_nvlabs_keys_and_shapes(disc):
    got = {k: tuple(v.shape) for k, v in disc.state_dict().items()}
    assert got == NVLABS_32_KEYS


def test_round_trip_loads_strictly_and_reproduces_outputs(disc):
    state = {k: v.clone() for k, v in disc.state_dict().items()}
    loaded = load_nvlabs_discriminator(state, "d.pt").eval()
    assert loaded.config.resolution == 32 and loaded.config.channels == (32, 32, 16, 8)
    assert loaded.config.mbstd_num_channels == 1 and loaded.config.img_channels == 3
    x = images(4)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), disc(x), rtol=0, atol=0)


@pytest.mark.parametrize("key", ["b16.conv1.bias", "b4.out.weight", "b8.skip.resample_filter", "b16.conv0.weight"])
def test_missing_key_is_named(disc, key):
    state = dict(disc.state_dict())
    del state[key]
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_nvlabs_discriminator(state, "d.pt")


@pytest.mark.parametrize("key", ["b4.fc.weight", "b8.conv1.weight", "b32.fromrgb.bias"])
def test_misshaped_tensor_is_named(disc, key):
    state = dict(disc.state_dict())
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_nvlabs_discriminator(state, "d.pt")


def test_unexpected_and_conditional_keys_are_refused(disc):
    state = dict(disc.state_dict())
    with pytest.raises(CheckpointError, match=r"b32\.skip\.bias"):
        load_nvlabs_discriminator({**state, "b32.skip.bias": torch.zeros(16)}, "d.pt")
    with pytest.raises(CheckpointError, match="conditional"):
        load_nvlabs_discriminator({**state, "mapping.embed.weight": torch.zeros(32, 10)}, "d.pt")


def test_minibatch_std_couples_samples_within_a_group():
    torch.manual_seed(0)
    model = Discriminator(tiny_config(mbstd_group_size=2)).eval()
    x = images(2)
    changed = x.clone()
    changed[1] = -changed[1]
    with torch.no_grad():
        assert not torch.allclose(model(x)[0], model(changed)[0])
        # Groups are strided as in NVlabs (sample i is in group i mod N/G): with N=4, G=2 sample 0
        # shares its group with sample 2, not sample 1.
        x4 = images(4)
        base = model(x4)
        other = x4.clone()
        other[1] = -other[1]
        torch.testing.assert_close(model(other)[0], base[0])
        other = x4.clone()
        other[2] = -other[2]
        assert not torch.allclose(model(other)[0], base[0])


def test_minibatch_std_group_is_min_of_group_size_and_batch(disc):
    with torch.no_grad():
        assert disc(images(3)).shape == (3, 1)  # G = min(4, 3) = 3
        assert disc(images(1)).shape == (1, 1)
        with pytest.raises(ValueError, match="not divisible"):
            disc(images(6))  # G = 4 does not divide 6, which NVlabs rejects too
    x = torch.randn(3, 4, 2, 2)
    expected = x.std(dim=0, unbiased=False).mean()
    torch.testing.assert_close(minibatch_std(x, 4)[:, 4], expected.expand(3, 2, 2), atol=1e-6, rtol=1e-5)


def test_gradients_flow_to_the_input(disc):
    x = images(2).requires_grad_(True)
    (grad,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
    assert grad.shape == x.shape and grad.abs().sum() > 0
    penalty = grad.square().sum()  # R1 needs a second backward through the graph
    penalty.backward()
    assert disc.b32.fromrgb.weight.grad is not None
