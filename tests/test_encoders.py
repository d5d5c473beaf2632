"""E0 encoders (e4e / pSp): shapes, W+ construction, and the official state-dict layout."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import randomize_batchnorm_
from warpres.models.encoders import EncoderConfig, StyleEncoder

TINY = dict(num_ws=10, w_dim=32, input_size=64, stage_widths=(8, 16, 32, 64), se_reduction=4)


def tiny_encoder(kind: str, **overrides) -> StyleEncoder:
    torch.manual_seed(0)
    return randomize_batchnorm_(StyleEncoder(EncoderConfig(kind=kind, **{**TINY, **overrides})).eval())


@pytest.fixture
def image() -> torch.Tensor:
    return torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1


def full_size_on_meta(kind: str, mode: str = "ir_se") -> StyleEncoder:
    """The FFHQ-size encoder without allocating its 267 M parameters: keys and shapes only."""
    with torch.device("meta"):
        return StyleEncoder(EncoderConfig(kind=kind, mode=mode))


@pytest.mark.parametrize("kind", ["e4e", "psp"])
def test_output_shapes_and_dtypes(kind: str, image: torch.Tensor) -> None:
    encoder = tiny_encoder(kind)
    with torch.no_grad():
        wplus, enc_feat = encoder(image)
    assert wplus.shape == (2, 10, 32)
    assert enc_feat.shape == (2, 16, 16, 16)  # (B, C1, S/4, S/4)
    assert wplus.dtype == enc_feat.dtype == torch.float32
    assert (encoder.config.feature_channels, encoder.config.feature_size) == (16, 16)


def test_ffhq_config_describes_a_128_channel_64x64_feature_from_body_unit_6() -> None:
    config = EncoderConfig()
    assert config.stage_end_indices == (2, 6, 20, 23)
    assert (config.feature_body_index, config.feature_channels, config.feature_size) == (6, 128, 64)


@pytest.mark.parametrize("kind", ["e4e", "psp"])
def test_enc_feat_is_the_body_output_at_the_documented_index(kind: str, image: torch.Tensor) -> None:
    encoder = tiny_encoder(kind)
    captured: list[torch.Tensor] = []
    tapped_unit = encoder.body[encoder.config.feature_body_index]
    tapped_unit.register_forward_hook(lambda module, inputs, out: captured.append(out))
    with torch.no_grad():
        _, enc_feat = encoder(image)
    assert encoder.config.feature_body_index == 6
    assert len(captured) == 1
    torch.testing.assert_close(enc_feat, captured[0], rtol=0, atol=0)


def test_feature_stage_selects_another_stage_end(image: torch.Tensor) -> None:
    encoder = tiny_encoder("e4e", feature_stage=0)
    captured: list[torch.Tensor] = []
    encoder.body[2].register_forward_hook(lambda m, i, out: captured.append(out))
    with torch.no_grad():
        _, enc_feat = encoder(image)
    assert enc_feat.shape == (2, 8, 32, 32)
    torch.testing.assert_close(enc_feat, captured[0], rtol=0, atol=0)


def test_e4e_with_only_the_base_head_gives_one_code_on_every_layer(image: torch.Tensor) -> None:
    encoder = tiny_encoder("e4e")
    with torch.no_grad():
        for head in encoder.styles[1:]:
            for p in head.parameters():
                p.zero_()
        wplus, _ = encoder(image)
        base = encoder.styles[0](encoder.body(encoder.input_layer(image)))
    torch.testing.assert_close(wplus, base[:, None].expand_as(wplus), rtol=0, atol=0)


def test_e4e_layers_are_the_base_code_plus_their_own_head(image: torch.Tensor) -> None:
    e4e = tiny_encoder("e4e")
    psp = tiny_encoder("psp")
    psp.load_state_dict(e4e.state_dict(), strict=True)
    with torch.no_grad():
        w_e4e, feat_e4e = e4e(image)
        w_psp, feat_psp = psp(image)  # same heads, each read directly
    torch.testing.assert_close(w_e4e[:, 0], w_psp[:, 0], rtol=0, atol=0)
    torch.testing.assert_close(w_e4e[:, 1:], w_psp[:, :1] + w_psp[:, 1:], rtol=0, atol=0)
    torch.testing.assert_close(feat_e4e, feat_psp, rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["e4e", "psp"])
@pytest.mark.parametrize("shape", [(10, 32), (1, 32), (32,)])
def test_latent_avg_is_added_to_every_layer(kind: str, shape: tuple[int, ...], image: torch.Tensor) -> None:
    encoder = tiny_encoder(kind)
    with torch.no_grad():
        raw, _ = encoder(image)
        latent_avg = torch.randn(shape)
        encoder.set_latent_avg(latent_avg)
        shifted, _ = encoder(image)
    torch.testing.assert_close(shifted, raw + latent_avg.reshape(-1, 32), rtol=0, atol=1e-6)
    encoder.set_latent_avg(None)
    with torch.no_grad():
        torch.testing.assert_close(encoder(image)[0], raw, rtol=0, atol=0)


def test_latent_avg_of_the_wrong_shape_is_rejected() -> None:
    encoder = tiny_encoder("e4e")
    with pytest.raises(ValueError, match=r"latent_avg has shape \(18, 512\); expected \(10, 32\)"):
        encoder.set_latent_avg(torch.zeros(18, 512))


def test_latent_avg_is_not_in_the_state_dict() -> None:
    # The official module state dicts have no such key; strict loading must not expect one.
    assert "latent_avg" not in tiny_encoder("e4e").state_dict()


@pytest.mark.parametrize("bad_shape", [(2, 3, 32, 32), (2, 1, 64, 64), (3, 64, 64), (2, 3, 64, 32)])
def test_input_of_the_wrong_shape_is_rejected(bad_shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"encoder input must be \(B, 3, 64, 64\)"):
        tiny_encoder("e4e")(torch.zeros(bad_shape))


@pytest.mark.parametrize("kind", ["e4e", "psp"])
def test_state_dict_round_trip_loads_strict_and_reproduces_outputs(kind: str, image: torch.Tensor) -> None:
    source = tiny_encoder(kind)
    torch.manual_seed(123)
    target = StyleEncoder(source.config).eval()
    target.load_state_dict(source.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(source(image), target(image), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_config_round_trips_through_json() -> None:
    config = EncoderConfig(kind="psp", mode="ir", num_layers=100, **TINY, feature_stage=2)
    assert EncoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    "bad",
    [
        dict(kind="restyle"),
        dict(num_layers=34),
        dict(mode="se"),
        dict(input_size=96),
        dict(stage_widths=(8, 16, 32)),
        dict(stage_widths=(8, 16, 32, 64), se_reduction=16),
        dict(feature_stage=4),
    ],
)
def test_invalid_config_is_rejected(bad: dict) -> None:
    with pytest.raises(ValueError, match="encoder"):
        EncoderConfig(**bad)


def test_unknown_config_field_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown fields \['n_styles'\]"):
        EncoderConfig.from_dict({"n_styles": 18})


# Names and shapes below are read from the official code: omertov/encoder4editing
# models/encoders/{psp_encoders,helpers}.py, eladrich/pixel2style2pixel the same files,
# hamzapehlivan/StyleRes models/e4e.py (StyleRes's ckpt['e4e'] is this layout without a prefix).
OFFICIAL_IR_SE_50_SHAPES = {
    "input_layer.0.weight": (64, 3, 3, 3),
    "input_layer.1.running_var": (64,),
    "input_layer.1.num_batches_tracked": (),
    "input_layer.2.weight": (64,),  # PReLU, one slope per channel
    "body.0.res_layer.0.weight": (64,),
    "body.0.res_layer.1.weight": (64, 64, 3, 3),
    "body.0.res_layer.2.weight": (64,),
    "body.0.res_layer.3.weight": (64, 64, 3, 3),
    "body.0.res_layer.4.running_mean": (64,),
    "body.0.res_layer.5.fc1.weight": (4, 64, 1, 1),
    "body.0.res_layer.5.fc2.weight": (64, 4, 1, 1),
    "body.3.shortcut_layer.0.weight": (128, 64, 1, 1),
    "body.3.shortcut_layer.1.running_var": (128,),
    "body.6.res_layer.3.weight": (128, 128, 3, 3),
    "body.7.shortcut_layer.0.weight": (256, 128, 1, 1),
    "body.21.shortcut_layer.0.weight": (512, 256, 1, 1),
    "body.23.res_layer.5.fc2.weight": (512, 32, 1, 1),
    "styles.0.convs.0.weight": (512, 512, 3, 3),
    "styles.0.convs.6.bias": (512,),  # 16x16 heads: 4 convs
    "styles.3.convs.8.weight": (512, 512, 3, 3),  # 32x32 heads: 5 convs
    "styles.17.convs.10.weight": (512, 512, 3, 3),  # 64x64 heads: 6 convs
    "styles.17.linear.weight": (512, 512),
    "styles.17.linear.bias": (512,),
    "latlayer1.weight": (512, 256, 1, 1),
    "latlayer1.bias": (512,),
    "latlayer2.weight": (512, 128, 1, 1),
    "latlayer2.bias": (512,),
}


@pytest.mark.parametrize("kind", ["e4e", "psp"])
def test_full_size_ir_se_50_has_the_official_keys_and_shapes(kind: str) -> None:
    state = full_size_on_meta(kind).state_dict()
    # 7 input layer + 24 units x 15 + 3 conv shortcuts x 6 + heads (3x10 + 4x12 + 11x14) + 4 lateral
    assert len(state) == 621
    for key, shape in OFFICIAL_IR_SE_50_SHAPES.items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    shortcut_units = sorted({int(k.split(".")[1]) for k in state if ".shortcut_layer." in k})
    assert shortcut_units == [3, 7, 21]  # the first unit of stages 1..3; stage 0 keeps its width
    assert not any(k.startswith("styles.18.") for k in state)
    assert not any(".res_layer.6" in k for k in state)


def test_full_size_ir_50_has_no_squeeze_excitation_keys() -> None:
    state = full_size_on_meta("e4e", mode="ir").state_dict()
    assert len(state) == 621 - 24 * 2
    assert not any(".res_layer.5." in k for k in state)


@pytest.mark.parametrize("num_ws", [18, 16, 14, 6, 2])  # 6 and 2: heads on coarser levels only
def test_num_ws_follows_the_generator(num_ws: int) -> None:
    encoder = StyleEncoder(EncoderConfig(**{**TINY, "num_ws": num_ws})).eval()
    with torch.no_grad():
        wplus, _ = encoder(torch.zeros(1, 3, 64, 64))
    assert wplus.shape == (1, num_ws, 32)
    assert len(encoder.styles) == num_ws
