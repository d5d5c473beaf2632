"""Claims about the StyleGAN2 reference: exact forms agree, the split is lossless."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import tiny_generator_config
from warpres.models.modulated_conv import modulated_conv2d
from warpres.models.resample import setup_filter, upfirdn2d, upsample2d
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan, first_w_index


@pytest.mark.parametrize("up", [1, 2])
@pytest.mark.parametrize("demodulate", [True, False])
def test_fused_and_decomposed_modulated_conv_agree(up, demodulate):
    torch.manual_seed(0)
    x, weight, styles = torch.randn(3, 8, 6, 6), torch.randn(5, 8, 3, 3), torch.randn(3, 8)
    kwargs = dict(demodulate=demodulate, up=up, padding=1, resample_filter=setup_filter())
    fused = modulated_conv2d(x, weight, styles, fused=True, **kwargs)
    decomposed = modulated_conv2d(x, weight, styles, fused=False, **kwargs)
    assert fused.shape == (3, 5, 6 * up, 6 * up)
    torch.testing.assert_close(decomposed, fused, atol=1e-5, rtol=1e-5)


def test_upsampling_conv_equals_zero_insert_filter_then_convolve():
    """The transposed-conv form is the NVlabs definition: upsample (FIR), then true convolution."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.ones(2, 4)
    f = setup_filter()
    reference = F.conv2d(upfirdn2d(x, f, up=2, padding=(3, 2, 3, 2), gain=4), weight.flip([2, 3]))
    out = modulated_conv2d(x, weight, styles, demodulate=False, up=2, padding=1, resample_filter=f)
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-5)


def test_fir_upsampling_preserves_a_constant_image():
    out = upsample2d(torch.full((1, 3, 6, 6), 0.7), setup_filter())
    assert out.shape == (1, 3, 12, 12)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.full((1, 3, 8, 8), 0.7))


def test_fir_upsampling_matches_the_binomial_interpolation_weights():
    """One impulse upsampled 2x spreads as outer([1,3,3,1])/16 * 4 / ... : the taps sum to up^2."""
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 1.0
    out = upsample2d(x, setup_filter())
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4
    torch.testing.assert_close(out[0, 0, 1:5, 1:5], torch.outer(taps, taps))
    assert out.sum().item() == pytest.approx(4.0)


def test_head_then_tail_equals_full_synthesis(tiny_generator, wplus):
    head = tiny_generator.synthesis.head(wplus)
    image = tiny_generator.synthesis.tail(head.feat, head.rgb, wplus)
    torch.testing.assert_close(image, tiny_generator.synthesis(wplus), atol=1e-6, rtol=0)


def test_head_outputs_have_the_contract_shapes(tiny_generator, wplus):
    cfg = tiny_generator.config
    e = cfg.embed_res
    head = tiny_generator.synthesis.head(wplus)
    assert head.feat.shape == (3, cfg.channels_at(e), e, e)
    assert head.tap_quarter.shape == (3, cfg.channels_at(e // 4), e // 4, e // 4)
    assert head.tap_half.shape == (3, cfg.channels_at(e // 2), e // 2, e // 2)
    assert head.rgb.shape == (3, 3, e // 2, e // 2)


def test_fused_synthesis_equals_decomposed_synthesis(tiny_generator, wplus):
    torch.testing.assert_close(tiny_generator.synthesis(wplus, fused_modconv=True),
                               tiny_generator.synthesis(wplus), atol=1e-5, rtol=1e-5)


def test_each_w_plus_layer_feeds_exactly_the_documented_convolution(tiny_generator, wplus):
    """Perturbing W+ layer 2k-5 changes block 2^k from conv0 on and nothing before it."""
    e = tiny_generator.config.embed_res
    index = first_w_index(e)
    changed = wplus.clone()
    changed[:, index] += 1.0
    before, after = tiny_generator.synthesis.head(wplus), tiny_generator.synthesis.head(changed)
    torch.testing.assert_close(after.tap_half, before.tap_half, atol=0, rtol=0)
    assert not torch.allclose(after.feat, before.feat)


def test_noise_is_constant_so_synthesis_is_deterministic(tiny_generator, wplus):
    assert torch.equal(tiny_generator.synthesis(wplus), tiny_generator.synthesis(wplus))


def test_conv_clamp_bounds_every_convolution_output(wplus):
    torch.manual_seed(0)
    generator = Generator(tiny_generator_config(conv_clamp=0.05)).eval()
    outputs = []
    for layer in generator.synthesis.modules():
        if hasattr(layer, "conv_clamp"):
            layer.register_forward_hook(lambda _m, _i, out: outputs.append(out))
    generator.synthesis(wplus)
    assert outputs and all(out.abs().max() <= 0.05 + 1e-7 for out in outputs)


def test_truncation_moves_w_towards_w_avg(tiny_generator):
    torch.manual_seed(0)
    z = torch.randn(2, tiny_generator.config.z_dim)
    tiny_generator.mapping.w_avg.normal_()
    full = tiny_generator.mapping(z)
    half = tiny_generator.mapping(z, truncation_psi=0.5, truncation_cutoff=4)
    torch.testing.assert_close(half[:, :4], 0.5 * (full[:, :4] + tiny_generator.mapping.w_avg))
    torch.testing.assert_close(half[:, 4:], full[:, 4:])


def test_mapping_broadcasts_one_w_to_all_layers(tiny_generator):
    ws = tiny_generator.mapping(torch.randn(2, tiny_generator.config.z_dim))
    assert ws.shape == (2, tiny_generator.num_ws, tiny_generator.config.w_dim)
    assert torch.equal(ws[:, 0], ws[:, -1])


@pytest.mark.parametrize(("resolution", "num_ws", "top_channels"), [(1024, 18, 32), (512, 16, 64), (256, 14, 128)])
def test_config_f_plans_match_the_official_models(resolution, num_ws, top_channels):
    cfg = GeneratorConfig(resolution=resolution, channels=channel_plan(resolution))
    assert cfg.num_ws == num_ws
    assert cfg.channels_at(64) == 512 and cfg.channels[-1] == top_channels


def test_ffhq_parameter_count_matches_config_f():
    """30.37 M parameters: the published size of the StyleGAN2 FFHQ config-f generator (G_ema)."""
    generator = Generator(GeneratorConfig())
    assert sum(p.numel() for p in generator.parameters()) == 30_370_060


def test_wrong_wplus_shape_is_rejected_with_the_expected_shape(tiny_generator):
    with pytest.raises(ValueError, match=r"wplus must be \(B, 10, 32\)"):
        tiny_generator.synthesis(torch.zeros(1, 9, 32))


def test_config_round_trips_through_a_dict():
    cfg = tiny_generator_config(conv_clamp=None)
    assert GeneratorConfig.from_dict(cfg.to_dict()) == cfg
