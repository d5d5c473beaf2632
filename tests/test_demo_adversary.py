"""The demo autoencoder's critic: it learns to tell renders from reconstructions, only the fitted
module learns from its verdict, and a fit with a critic resumes exactly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import warpres.demo.adversary as adversary_module
from warpres.demo.adversary import R1_INTERVAL, Adversary, r1_gamma_for
from warpres.demo.data import RenderedFaces
from warpres.demo.encoder import ADVERSARIAL_WEIGHT, AutoencoderObjective, AutoencoderPair, new_adversary, new_encoder
from warpres.demo.fitting import FitConfig, fit
from warpres.demo.generator import new_generator
from warpres.errors import TrainingError
from warpres.models.discriminator import DiscriminatorConfig
from warpres.training.runlog import read_log

SMALL_CRITIC = DiscriminatorConfig(resolution=32, channel_base=256, channel_max=32)


def _renders(count, size=128):
    faces = RenderedFaces(seed=4, size=size, autoencoder=True)
    return tuple(torch.stack(t) for t in zip(*(faces[k] for k in range(count)), strict=True))


def test_the_critic_learns_to_tell_renders_from_blurred_copies():
    images = _renders(8, size=32)[0]
    blurred = nn.functional.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
    critic = Adversary(SMALL_CRITIC, r1_gamma=r1_gamma_for(32, 8))  # 0.026
    losses = [float(critic.update(images, blurred)) for _ in range(100)]
    assert losses[0] == pytest.approx(2 * torch.log(torch.tensor(2.0)).item(), abs=0.3)  # logits start near 0
    assert losses[-1] < 0.3 * losses[0]
    with torch.no_grad():
        assert critic.discriminator(images).mean() > critic.discriminator(blurred).mean()
    assert int(critic.updates) == 100


def test_r1_is_applied_every_r1_interval_updates(monkeypatch):
    calls = []
    real_penalty = adversary_module.r1_penalty
    monkeypatch.setattr(adversary_module, "r1_penalty",
                        lambda images, logits: calls.append(images.dtype) or real_penalty(images, logits))
    images = _renders(2, size=32)[0]
    critic = Adversary(SMALL_CRITIC)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for _ in range(R1_INTERVAL + 1):
            critic.update(images, images.flip(-1))
    assert calls == [torch.float32, torch.float32]  # updates 0 and R1_INTERVAL, outside autocast


def test_the_adversarial_term_trains_the_autoencoder_and_not_the_critic():
    pair = AutoencoderPair(new_encoder(), new_generator())
    critic = new_adversary(batch_size=4)
    before = {k: v.clone() for k, v in critic.discriminator.state_dict().items()}
    batch = _renders(4)
    terms = AutoencoderObjective(pair, None, critic)(batch)
    without = AutoencoderObjective(pair, None)(batch)
    # the pair's BatchNorm statistics moved between the two calls, so compare term by term
    torch.testing.assert_close(terms["loss"] - ADVERSARIAL_WEIGHT * terms["adversarial"],
                               without["loss"], rtol=1e-4, atol=1e-4)
    assert any(not torch.equal(before[k], v) for k, v in critic.discriminator.state_dict().items())  # it was updated
    critic.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.grad is not None for p in pair.generator.synthesis.parameters())


def _fit_with_critic(work, until, critic=True):
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 3, 3, padding=1))
    adversary = Adversary(SMALL_CRITIC, seed=1) if critic else None

    def objective(batch):
        images = batch[0]
        output = module(images)
        terms = {"l1": (output - images).abs().mean()}
        if adversary is not None:
            terms["critic"] = adversary.update(images, output)
            terms["adversarial"] = adversary.generator_loss(output)
        terms["loss"] = terms["l1"] + 0.1 * terms.get("adversarial", 0.0)
        return terms

    config = FitConfig(steps=4, batch_size=2, workers=0, log_every=1, checkpoint_every=3)
    fit("critic", module, objective, RenderedFaces(seed=3, size=32), work, config, progress=False, until=until,
        adversary=adversary)
    return module, adversary


def test_a_fit_with_a_critic_continues_exactly(tmp_path):
    straight, straight_critic = _fit_with_critic(tmp_path / "a", until=None)
    _fit_with_critic(tmp_path / "b", until=2)
    resumed, resumed_critic = _fit_with_critic(tmp_path / "b", until=None)
    for a, b in ((straight, resumed), (straight_critic, resumed_critic)):
        for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)
    rows = [read_log(tmp_path / run / "critic.log.csv") for run in ("a", "b")]
    assert [row["critic"] for row in rows[0]] == [row["critic"] for row in rows[1]]
    assert int(resumed_critic.updates) == 4


def test_a_fit_is_continued_only_with_the_critic_it_began_with(tmp_path):
    _fit_with_critic(tmp_path / "with", until=2)
    with pytest.raises(TrainingError, match="fitted with an adversary"):
        _fit_with_critic(tmp_path / "with", until=None, critic=False)
    _fit_with_critic(tmp_path / "without", until=2, critic=False)
    with pytest.raises(TrainingError, match="fitted without an adversary"):
        _fit_with_critic(tmp_path / "without", until=None)
