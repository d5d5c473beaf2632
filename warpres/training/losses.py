"""Training losses for WarpRes (E1, flow head, E2; generator and E0 frozen).

Every loss returns a scalar tensor (mean over all elements unless said otherwise). Images are
(B, 3, H, W) in [-1, 1]; flows are (B, 2, H, W) in pixels (convention of `warpres.models.flow`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from warpres.training.teacher import resize_flow


def _check_same_shape(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


def reconstruction_l2(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L2 = mean over all elements of (output - target)^2 (mean squared error)."""
    _check_same_shape("output", output, "target", target)
    return F.mse_loss(output, target)


class PerceptualLoss(nn.Module):
    """VGG-16 perceptual loss (plain feature MSE, not LPIPS: no learned weights, no normalisation).

        L = (1/4) * sum_{l in relu1_2, relu2_2, relu3_3, relu4_3} mean((phi_l(output) - phi_l(target))^2)

    where phi_l are the activations of `vgg` (a `warpres.training.vgg.VGG16Features`, or any
    module mapping images to a list of feature maps). Identical images give exactly 0. The VGG
    stays frozen; gradients reach `output` only (target features are computed without a graph).
    """

    def __init__(self, vgg: nn.Module) -> None:
        super().__init__()
        self.vgg = vgg
        self.vgg.requires_grad_(False)
        self.vgg.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.vgg.eval()  # the feature extractor is always in inference mode
        return self

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_same_shape("output", output, "target", target)
        output_features = self.vgg(output)
        with torch.no_grad():
            target_features = self.vgg(target)
        if len(output_features) == 0:
            raise ValueError("the feature extractor returned no feature maps")
        total = output.new_zeros(())
        for out_f, tgt_f in zip(output_features, target_features, strict=True):
            total = total + F.mse_loss(out_f, tgt_f)
        return total / len(output_features)


def feature_regularizer(additions: torch.Tensor) -> torch.Tensor:
    """R = mean |additions|: the mean L1 of what E2 adds to the generator features (the official
    f_regularizer on deltaF), so the branch changes the generator only where that pays."""
    return additions.abs().mean()


def flow_loss(predicted_flow: torch.Tensor, teacher_flow_256: torch.Tensor) -> torch.Tensor:
    """L_flow = mean |predicted_flow - resize_flow(teacher_flow_256, E)|.

    predicted_flow (B, 2, E, E) in pixels at E; teacher_flow_256 (B, 2, 256, 256) in pixels at
    256 (any teacher resolution works). The teacher is resized to E x E by
    `warpres.training.teacher.resize_flow`, which also rescales its values by E / 256, so both
    flows are in pixels of the E x E grid before the mean absolute difference.
    """
    for name, flow in (("predicted_flow", predicted_flow), ("teacher_flow_256", teacher_flow_256)):
        if flow.ndim != 4 or flow.shape[1] != 2:
            raise ValueError(f"{name} must be (B, 2, H, W), got {tuple(flow.shape)}")
    if predicted_flow.shape[0] != teacher_flow_256.shape[0]:
        raise ValueError(
            f"batch sizes differ: predicted_flow {tuple(predicted_flow.shape)}, "
            f"teacher_flow_256 {tuple(teacher_flow_256.shape)}"
        )
    teacher = resize_flow(teacher_flow_256.detach().float(), tuple(predicted_flow.shape[2:]))
    return (predicted_flow.float() - teacher).abs().mean()


def generator_adversarial_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss: L_G = mean softplus(-D(fake)) = mean -log sigmoid(D(fake))."""
    return F.softplus(-fake_logits).mean()


def discriminator_adversarial_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """L_D = mean softplus(D(fake)) + mean softplus(-D(real)) (logistic loss; 2 log 2 at logits 0)."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_images: torch.Tensor, real_logits: torch.Tensor) -> torch.Tensor:
    """R1 = mean over the batch of ||d sum(D(real)) / d real_i||^2 (per-sample squared gradient norm).

    `real_images` must have requires_grad=True and `real_logits` must be computed from them. The
    gradient is taken with create_graph=True so the penalty can itself be backpropagated into D.
    The caller multiplies by gamma / 2 (StyleGAN2 convention).
    """
    if not real_images.requires_grad:
        raise ValueError("real_images must have requires_grad=True before the discriminator is called")
    (gradient,) = torch.autograd.grad(outputs=real_logits.sum(), inputs=real_images, create_graph=True)
    return gradient.pow(2).reshape(gradient.shape[0], -1).sum(dim=1).mean()
