"""The ArcFace IR-SE-50 identity loss: pSp checkpoint layout, strict loading, loss properties."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from warpres.errors import CheckpointError
from warpres.training.identity import (
    NO_WEIGHTS_WARNING,
    ArcFaceBackbone,
    IdentityLoss,
    identity_loss_or_none,
    load_identity_backbone,
)

_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
# IR-50 stages: 3, 4, 14, 3 units; the width changes (64→128, 128→256, 256→512) in the first unit
# of stages 2-4, which therefore have a conv + BN shortcut.
_NUM_UNITS = 24
_PROJECTION_UNITS = {3: (64, 128), 7: (128, 256), 21: (256, 512)}


def _unit_width(n: int) -> tuple[int, int]:
    """(in, out) channels of body unit n of IR-50."""
    ends = [(3, 64), (7, 128), (21, 256), (24, 512)]
    out = next(c for end, c in ends if n < end)
    return _PROJECTION_UNITS.get(n, (out, out))


def _expected_psp_shapes() -> dict[str, tuple[int, ...]]:
    """Keys and shapes of pSp's model_ir_se50.pth, written out from the reference layout."""
    shapes: dict[str, tuple[int, ...]] = {"input_layer.0.weight": (64, 3, 3, 3), "input_layer.2.weight": (64,)}
    shapes.update({f"input_layer.1.{t}": () if t == "num_batches_tracked" else (64,) for t in _BN})
    for n in range(_NUM_UNITS):
        cin, cout = _unit_width(n)
        p = f"body.{n}."
        shapes.update({f"{p}res_layer.0.{t}": () if t == "num_batches_tracked" else (cin,) for t in _BN})
        shapes[f"{p}res_layer.1.weight"] = (cout, cin, 3, 3)
        shapes[f"{p}res_layer.2.weight"] = (cout,)
        shapes[f"{p}res_layer.3.weight"] = (cout, cout, 3, 3)
        shapes.update({f"{p}res_layer.4.{t}": () if t == "num_batches_tracked" else (cout,) for t in _BN})
        shapes[f"{p}res_layer.5.fc1.weight"] = (cout // 16, cout, 1, 1)
        shapes[f"{p}res_layer.5.fc2.weight"] = (cout, cout // 16, 1, 1)
        if n in _PROJECTION_UNITS:
            shapes[f"{p}shortcut_layer.0.weight"] = (cout, cin, 1, 1)
            shapes.update({f"{p}shortcut_layer.1.{t}": () if t == "num_batches_tracked" else (cout,) for t in _BN})
    shapes.update({f"output_layer.0.{t}": () if t == "num_batches_tracked" else (512,) for t in _BN})
    shapes["output_layer.3.weight"] = (512, 512 * 7 * 7)
    shapes["output_layer.3.bias"] = (512,)
    shapes.update({f"output_layer.4.{t}": () if t == "num_batches_tracked" else (512,) for t in _BN})
    return shapes


def _randomize_batchnorms(module: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                    m.bias.copy_(0.1 * torch.randn(c, generator=gen))


@pytest.fixture(scope="module")
def backbone() -> ArcFaceBackbone:
    torch.manual_seed(0)
    model = ArcFaceBackbone()
    _randomize_batchnorms(model, seed=1)
    return model.eval()


@pytest.fixture(scope="module")
def saved_weights(backbone, tmp_path_factory):
    path = tmp_path_factory.mktemp("arcface") / "model_ir_se50.pth"
    torch.save(backbone.state_dict(), path)
    return path


def _faces(batch: int = 2, size: int = 256, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, size, size, generator=gen) * 2 - 1


def test_key_set_matches_psp_model_ir_se50(backbone):
    state = backbone.state_dict()
    expected = _expected_psp_shapes()
    assert set(state) == set(expected)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    # 7 input-layer tensors, 24 units x 15 + 3 shortcuts x 6, 12 output-layer tensors.
    assert len(state) == 7 + _NUM_UNITS * 15 + 3 * 6 + 12 == 397
    assert {int(k.split(".")[1]) for k in state if k.startswith("body.")} == set(range(_NUM_UNITS))
    assert sorted(k for k in state if k.startswith("output_layer.")) == sorted(
        [f"output_layer.0.{t}" for t in _BN] + ["output_layer.3.weight", "output_layer.3.bias"]
        + [f"output_layer.4.{t}" for t in _BN]
    )


def test_embeddings_are_unit_norm_and_non_trivial(backbone):
    x = _faces(3, 112, seed=2)
    with torch.no_grad():
        emb = backbone(x)
    assert emb.shape == (3, 512)
    assert torch.isfinite(emb).all()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
    assert (emb[0] - emb[1]).abs().max() > 1e-4  # different inputs, different embeddings
    with pytest.raises(ValueError, match="112"):
        backbone(torch.zeros(1, 3, 128, 128))


def test_saved_state_dict_round_trips_strictly(backbone, saved_weights):
    loaded = load_identity_backbone(saved_weights)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = _faces(2, 112, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), backbone(x), atol=0, rtol=0)


def test_missing_key_is_named(backbone, tmp_path):
    state = dict(backbone.state_dict())
    del state["output_layer.4.running_var"]
    path = tmp_path / "missing.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"output_layer\.4\.running_var"):
        load_identity_backbone(path)


def test_wrong_shape_is_named(backbone, tmp_path):
    state = dict(backbone.state_dict())
    state["body.7.shortcut_layer.0.weight"] = torch.zeros(256, 64, 1, 1)
    path = tmp_path / "wrong_shape.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"body\.7\.shortcut_layer\.0\.weight"):
        load_identity_backbone(path)


def test_identical_images_give_zero_loss(backbone):
    loss_fn = IdentityLoss(backbone)
    y = _faces(2, 256, seed=4)
    with torch.no_grad():
        assert loss_fn(y, y.clone()).abs().item() <= 1e-6


def test_loss_range_and_gradient_reaches_y_hat(backbone):
    loss_fn = IdentityLoss(backbone).train()
    assert not loss_fn.backbone.training
    y_hat = _faces(2, 256, seed=5).requires_grad_(True)
    y = _faces(2, 256, seed=6)
    loss = loss_fn(y_hat, y)
    assert loss.ndim == 0
    assert 0.0 <= loss.item() <= 2.0
    assert loss.item() > 1e-6
    loss.backward()
    assert y_hat.grad is not None and y_hat.grad.abs().sum() > 0
    # only the face region (rows 35:223, cols 32:220) is seen
    assert y_hat.grad[:, :, :35].abs().sum() == 0 and y_hat.grad[:, :, :, 220:].abs().sum() == 0
    assert not any(p.grad is not None for p in backbone.parameters())


def test_loss_is_pluggable_and_matches_formula():
    torch.manual_seed(0)
    embedder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8))  # un-normalised embeddings
    loss_fn = IdentityLoss(embedder)
    y_hat, y = _faces(3, 256, seed=7), _faces(3, 256, seed=8)
    crop = (slice(None), slice(None), slice(35, 223), slice(32, 220))
    with torch.no_grad():
        e_hat = embedder(torch.nn.functional.adaptive_avg_pool2d(y_hat[crop], 112))
        e = embedder(torch.nn.functional.adaptive_avg_pool2d(y[crop], 112))
        expected = (1 - torch.nn.functional.cosine_similarity(e_hat, e, dim=1)).mean()
        torch.testing.assert_close(loss_fn(y_hat, y), expected, atol=1e-6, rtol=1e-5)

    # a bias-free linear embedder maps -y to -e(y): opposite embeddings reach the upper bound 2
    odd = nn.Sequential(nn.Flatten(), nn.Linear(3 * 112 * 112, 8, bias=False))
    with torch.no_grad():
        torch.testing.assert_close(IdentityLoss(odd)(-y, y), torch.tensor(2.0), atol=1e-5, rtol=0)


def test_no_weights_disables_loss_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="warpres.training.identity"):
        assert identity_loss_or_none(None) is None
    assert NO_WEIGHTS_WARNING in caplog.text
    assert NO_WEIGHTS_WARNING == "identity loss disabled: no IR-SE-50 weights given (--id-weights)"


def test_missing_file_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        identity_loss_or_none(tmp_path / "absent.pth")
