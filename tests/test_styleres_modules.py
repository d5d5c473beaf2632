"""StyleRes branch: official key layout, gate range, identity fuse, Editor-facing shapes."""

from __future__ import annotations

import pytest
import torch

from warpres.models.styleres import (
    GateNetwork,
    StyleResBranch,
    StyleResConfig,
    branch_state_from_official,
)

B, E = 2, 16
TINY = StyleResConfig(enc_channels=8, feat_channels=16, align_channels=16, extract_channels=16, gate_channels=8)


def _res_keys(prefix: str, shortcut: bool = False) -> list[str]:
    """Keys of one official ResLayers: two biased 3x3 convs, plus a 1x1 shortcut when shape changes."""
    keys = [f"{prefix}.res_layer.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")]
    return keys + [f"{prefix}.shortcut_layer.0.weight"] if shortcut else keys


# Written from models/stylegan2.py of hamzapehlivan/StyleRes (HEAD 9c62ab7): FeatureAlignment,
# FeatureExtraction and GateNetwork as instantiated in SynthesisBlock at embed_res 64.
OFFICIAL_ALIGNMENT = [
    "first_layer.weight", "first_layer.bias",
    *_res_keys("conv1.0"),
    *_res_keys("conv2.0", shortcut=True), *_res_keys("conv2.1"),
    *_res_keys("conv3.0", shortcut=True), *_res_keys("conv3.1"),
    *_res_keys("dconv1.0"), *_res_keys("dconv1.1"),
    *_res_keys("dconv2.0"), *_res_keys("dconv2.1"),
    *_res_keys("dconv3.0"), *_res_keys("dconv3.1"),
    "out_layer.weight", "out_layer.bias",
]  # fmt: skip
OFFICIAL_EXTRACTION = ["first_layer.weight", "first_layer.bias", *_res_keys("convs.0"), *_res_keys("convs.1"),
                       *_res_keys("convs.2")]  # fmt: skip
OFFICIAL_GATES = [
    "down1.weight", "down1.bias", "down2.weight", "down2.bias",
    *_res_keys("convs.0"), *_res_keys("convs.1"), *_res_keys("convs.2"),
    *_res_keys("convs2.0"), *_res_keys("convs2.1"), *_res_keys("convs2.2", shortcut=True),
]  # fmt: skip
OFFICIAL_KEYS = {
    *(f"synthesis.b64.modify_feature_alignment.{k}" for k in OFFICIAL_ALIGNMENT),
    *(f"synthesis.b64.modify_feature_extraction.{k}" for k in OFFICIAL_EXTRACTION),
    *(f"synthesis.b64.modify_feature_gates.{k}" for k in OFFICIAL_GATES),
}


def _to_official(state: dict[str, torch.Tensor], embed_res: int = 64) -> dict[str, torch.Tensor]:
    prefixes = StyleResBranch.official_prefix_map(embed_res)
    out = {}
    for key, value in state.items():
        ours = next(p for p in prefixes if key.startswith(p))
        out[prefixes[ours] + key[len(ours):]] = value
    return out


@pytest.fixture
def full_width_state() -> dict[str, torch.Tensor]:
    # meta tensors: the official-width branch (~93 M parameters) without allocating or initialising
    with torch.device("meta"):
        return _to_official(StyleResBranch().state_dict())


@pytest.fixture
def tiny_branch() -> StyleResBranch:
    torch.manual_seed(0)
    return StyleResBranch(TINY).eval()


def test_official_width_state_dict_has_exactly_the_official_keys(full_width_state):
    assert len(OFFICIAL_KEYS) == 93
    assert set(full_width_state) == OFFICIAL_KEYS


def test_official_width_shapes_match_the_official_layers(full_width_state):
    shapes = {k: tuple(v.shape) for k, v in full_width_state.items()}
    prefix = "synthesis.b64.modify_feature_"
    assert shapes[prefix + "alignment.first_layer.weight"] == (512, 640, 1, 1)
    assert shapes[prefix + "alignment.conv2.0.res_layer.2.weight"] == (512, 512, 3, 3)
    assert shapes[prefix + "alignment.conv2.0.shortcut_layer.0.weight"] == (512, 512, 1, 1)
    assert shapes[prefix + "alignment.out_layer.weight"] == (512, 512, 1, 1)
    assert shapes[prefix + "gates.down1.weight"] == (256, 512, 3, 3)
    assert shapes[prefix + "gates.convs.0.res_layer.0.weight"] == (512, 512, 3, 3)
    assert shapes[prefix + "gates.convs2.2.res_layer.2.weight"] == (1, 1, 3, 3)
    assert shapes[prefix + "gates.convs2.2.shortcut_layer.0.weight"] == (1, 512, 1, 1)


def test_official_generator_state_loads_strictly_through_the_prefix_mapping(tiny_branch):
    generator_state = {
        "synthesis.b16.conv1.weight": torch.zeros(1),  # a non-branch key the mapping must skip
        **_to_official({k: v.clone() for k, v in tiny_branch.state_dict().items()}, embed_res=16),
    }
    fresh = StyleResBranch(TINY)
    fresh.load_state_dict(branch_state_from_official(generator_state, embed_res=16), strict=True)
    for key, value in fresh.state_dict().items():
        torch.testing.assert_close(value, tiny_branch.state_dict()[key], atol=0, rtol=0)


def test_gate_is_strictly_between_zero_and_one_with_one_channel():
    torch.manual_seed(0)
    gates = GateNetwork(in_channels=16, out_channels=16, t_channel=8)
    _, gate = gates(torch.randn(B, 16, E, E), torch.randn(B, 16, E, E))
    assert gate.shape == (B, 1, E, E)
    assert bool(((gate > 0) & (gate < 1)).all())


def test_fuse_returns_feat_edit_exactly_when_the_delta_path_is_zero(tiny_branch):
    # zero every conv that produces deltaF; identity shortcuts then carry an exact zero through
    for module in (tiny_branch.gates.down1, tiny_branch.gates.down2, tiny_branch.gates.convs):
        for param in module.parameters():
            torch.nn.init.zeros_(param)
    feat_edit = torch.randn(B, TINY.feat_channels, E, E)
    with torch.no_grad():
        fused = tiny_branch.fuse(torch.randn(B, TINY.feat_channels, E, E), feat_edit)
    torch.testing.assert_close(fused, feat_edit, atol=0, rtol=0)


def test_additions_are_the_gate_networks_delta_before_gating(tiny_branch):
    residual, feat_edit = torch.randn(B, TINY.feat_channels, E, E), torch.randn(B, TINY.feat_channels, E, E)
    with torch.no_grad():
        fused, additions = tiny_branch.fuse_with_additions(residual, feat_edit)
        delta, gate = tiny_branch.gates(feat_edit, residual)
        torch.testing.assert_close(tiny_branch.fuse(residual, feat_edit), fused, atol=0, rtol=0)
    torch.testing.assert_close(additions, delta, atol=0, rtol=0)
    torch.testing.assert_close(fused, feat_edit + gate * delta, atol=0, rtol=0)


def test_encode_residual_maps_encoder_and_generator_features_to_a_generator_shaped_residual(tiny_branch):
    with torch.no_grad():
        residual = tiny_branch.encode_residual(
            torch.randn(B, TINY.enc_channels, E, E), torch.randn(B, TINY.feat_channels, E, E)
        )
    assert residual.shape == (B, TINY.feat_channels, E, E)


def test_fuse_keeps_the_generator_feature_shape(tiny_branch):
    with torch.no_grad():
        fused = tiny_branch.fuse(torch.randn(B, TINY.feat_channels, E, E), torch.randn(B, TINY.feat_channels, E, E))
    assert fused.shape == (B, TINY.feat_channels, E, E)


def test_encode_residual_names_the_tensor_with_the_wrong_shape(tiny_branch):
    with pytest.raises(ValueError, match=r"enc_feat must be \(2, 8, 16, 16\)"):
        tiny_branch.encode_residual(torch.randn(B, 3, E, E), torch.randn(B, TINY.feat_channels, E, E))


def test_config_round_trips_through_a_dict():
    assert StyleResConfig.from_dict(TINY.to_dict()) == TINY


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"StyleResConfig: unknown fields"):
        StyleResConfig.from_dict({**TINY.to_dict(), "t_channel": 4})
