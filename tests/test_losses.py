"""Known-answer tests of the WarpRes training losses and the VGG-16 feature extractor."""

from __future__ import annotations

import math

import pytest
import torch

from warpres.errors import CheckpointError
from warpres.training.losses import (
    PerceptualLoss,
    discriminator_adversarial_loss,
    feature_regularizer,
    flow_loss,
    generator_adversarial_loss,
    r1_penalty,
    reconstruction_l2,
)
from warpres.training.vgg import VGG16Features

_CONV_SHAPES = {
    0: (64, 3),
    2: (64, 64),
    5: (128, 64),
    7: (128, 128),
    10: (256, 128),
    12: (256, 256),
    14: (256, 256),
    17: (512, 256),
    19: (512, 512),
    21: (512, 512),
    24: (512, 512),
    26: (512, 512),
    28: (512, 512),
}


def _torchvision_layout_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with torchvision vgg16's key names and shapes, classifier included."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for index, (out_c, in_c) in _CONV_SHAPES.items():
        state[f"features.{index}.weight"] = torch.randn(out_c, in_c, 3, 3, generator=gen) * (2.0 / (9 * in_c)) ** 0.5
        state[f"features.{index}.bias"] = torch.randn(out_c, generator=gen) * 0.01
    state["classifier.0.weight"] = torch.randn(8, 4, generator=gen)  # small stand-ins: ignored anyway
    state["classifier.0.bias"] = torch.randn(8, generator=gen)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    state = _torchvision_layout_state_dict()
    torch.save(state, path)
    return path, state


@pytest.fixture(scope="module")
def vgg(vgg_file) -> VGG16Features:
    return VGG16Features.from_file(vgg_file[0])


def test_reconstruction_l2_known_answers():
    torch.manual_seed(0)
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    assert reconstruction_l2(image, image.clone()).item() == 0.0
    assert reconstruction_l2(image + 0.25, image).item() == pytest.approx(0.0625, rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        reconstruction_l2(image, image[:1])


def test_feature_regularizer_of_constant_is_abs_value():
    assert feature_regularizer(torch.full((2, 8, 4, 4), -0.3)).item() == pytest.approx(0.3)
    assert feature_regularizer(torch.full((1, 3, 2, 2), 1.5)).item() == pytest.approx(1.5)


def test_flow_loss_rescales_the_256_teacher():
    teacher = torch.empty(2, 2, 256, 256)
    teacher[:, 0], teacher[:, 1] = 8.0, -4.0
    predicted = torch.empty(2, 2, 64, 64)
    predicted[:, 0], predicted[:, 1] = 2.0, -1.0
    assert flow_loss(predicted, teacher).item() == pytest.approx(0.0, abs=1e-6)
    # |0 - 2| and |0 - (-1)| averaged over the two channels.
    assert flow_loss(torch.zeros_like(predicted), teacher).item() == pytest.approx(1.5, rel=1e-6)


def test_flow_loss_gradient_reaches_the_prediction_only():
    teacher = torch.ones(1, 2, 256, 256, requires_grad=True)
    predicted = torch.zeros(1, 2, 64, 64, requires_grad=True)
    flow_loss(predicted, teacher).backward()
    assert predicted.grad is not None and teacher.grad is None


def test_adversarial_losses_at_zero_logits():
    zeros = torch.zeros(4, 1)
    assert generator_adversarial_loss(zeros).item() == pytest.approx(math.log(2))
    assert discriminator_adversarial_loss(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    # Non-saturating: a confident fake (large D(fake)) costs G almost nothing, D a lot.
    assert generator_adversarial_loss(torch.full((2,), 20.0)).item() < 1e-8
    assert discriminator_adversarial_loss(torch.zeros(2), torch.full((2,), 20.0)).item() > 20.0


def test_r1_of_linear_discriminator_is_squared_weight_norm():
    torch.manual_seed(0)
    weight = torch.randn(3, 8, 8, requires_grad=True)
    images = torch.randn(5, 3, 8, 8, requires_grad=True)
    logits = (images * weight).flatten(1).sum(dim=1)
    penalty = r1_penalty(images, logits)
    expected = weight.detach().pow(2).sum()
    assert penalty.item() == pytest.approx(expected.item(), rel=1e-5)
    # create_graph=True: the penalty backpropagates into D's parameters (d||w||^2/dw = 2w).
    penalty.backward()
    torch.testing.assert_close(weight.grad, 2 * weight.detach())
    with pytest.raises(ValueError, match="requires_grad"):
        r1_penalty(images.detach(), logits)


def test_vgg_round_trip_is_exact_and_ignores_classifier(vgg_file, vgg):
    _, state = vgg_file
    loaded = vgg.state_dict()
    assert sorted(loaded) == sorted(k for k in state if k.startswith("features."))
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key
    assert not any(p.requires_grad for p in vgg.parameters())


def test_vgg_loads_without_classifier_keys(tmp_path, vgg_file):
    _, state = vgg_file
    path = tmp_path / "features_only.pth"
    torch.save({k: v for k, v in state.items() if k.startswith("features.")}, path)
    model = VGG16Features.from_file(path)
    assert torch.equal(model.features[28].bias, state["features.28.bias"])


@pytest.mark.parametrize(("name", "alter", "expected"), [
    ("missing", lambda state: state.pop("features.14.weight"), r"missing\.pth.*features\.14\.weight"),
    ("misshaped", lambda state: state.__setitem__("features.7.bias", torch.zeros(64)),
     r"misshaped\.pth.*features\.7\.bias.*\(64,\)"),
    ("extra", lambda state: state.__setitem__("features.29.weight", torch.zeros(1)),
     r"extra\.pth.*features\.29\.weight"),
])
def test_vgg_refuses_missing_misshaped_and_extra_keys(tmp_path, vgg_file, name, alter, expected):
    _, state = vgg_file
    changed = dict(state)
    alter(changed)
    path = tmp_path / f"{name}.pth"
    torch.save(changed, path)
    with pytest.raises(CheckpointError, match=expected):
        VGG16Features.from_file(path)


def test_vgg_feature_shapes_at_64(vgg):
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features = vgg(images)
    shapes = [tuple(f.shape[1:]) for f in features]
    assert shapes == [(64, 64, 64), (128, 32, 32), (256, 16, 16), (512, 8, 8)]
    assert all(bool((f >= 0).all()) for f in features)  # post-ReLU


def test_vgg_maps_minus_one_one_to_imagenet_normalisation(vgg):
    # An image equal to the ImageNet mean in [0, 1] normalises to zero, so relu1_2 sees only biases.
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    image = (mean * 2 - 1).expand(1, 3, 16, 16)
    blank = VGG16Features()
    blank.load_state_dict({k: torch.zeros_like(v) for k, v in vgg.state_dict().items()})
    blank.features[0].bias.data.fill_(0.0)
    blank.features[0].weight.data.fill_(1.0)  # relu1_1 = relu(sum of normalised channels)
    blank.features[2].weight.data[:, :, 1, 1] = torch.eye(64)  # conv1_2 = identity
    first = blank(image)[0]
    assert first.abs().max().item() < 1e-5
    brighter = blank(image + 0.1)[0]  # every normalised channel becomes 0.05 / std > 0
    expected = sum(0.05 / s for s in (0.229, 0.224, 0.225)) * 9  # 3x3 kernel of ones, interior pixel
    assert brighter[0, 0, 8, 8].item() == pytest.approx(expected, rel=1e-4)


def test_perceptual_loss_zero_on_identical_and_positive_otherwise(vgg):
    loss = PerceptualLoss(vgg)
    torch.manual_seed(1)
    image = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss(image, image.clone()).item() == 0.0
    output = (image + 0.2).requires_grad_(True)
    value = loss(output, image)
    assert value.item() > 0.0
    value.backward()
    assert output.grad is not None and output.grad.abs().sum().item() > 0.0


def test_perceptual_loss_is_mean_of_per_layer_mse():
    class TwoLayers(torch.nn.Module):
        def forward(self, x):
            return [x, 2 * x]

    loss = PerceptualLoss(TwoLayers())
    a = torch.zeros(1, 3, 4, 4)
    # layer MSEs: c^2 = 0.25 and (2c)^2 = 1.0 -> mean 0.625
    assert loss(a + 0.5, a).item() == pytest.approx(0.625)
