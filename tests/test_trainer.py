"""The training run end to end on a tiny model: it learns, resumes exactly, runs under DDP, exports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from tests.conftest import tiny_editing_model
from warpres.checkpoints import load_checkpoint, save_model
from warpres.cli import main
from warpres.demo.regressor import AttributeRegressor
from warpres.training.domain import DomainFeatures
from warpres.errors import CheckpointError, TrainingError
from warpres.images import to_uint8
from warpres.models.discriminator import Discriminator, DiscriminatorConfig
from warpres.media.imageio import read_image, write_image
from warpres.stages import open_model_folder
from warpres.training.checkpoint import is_training_checkpoint, load_training_checkpoint
from warpres.training.config import config_from_mapping
from warpres.training.identity import ArcFaceBackbone
from warpres.training.raft import RAFT, RaftFlowTeacher
from warpres.training.runlog import read_log
from warpres.training.trainer import Trainer, learning_rate
from warpres.training.vgg import VGG16Features

TINY_ARCFACE = {"stage_widths": [8, 8, 16, 16], "input_size": 32, "embedding_dim": 16, "se_reduction": 4}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A base checkpoint (E0 + generator, no branch), generated train / eval images, and VGG /
    ArcFace weight files in the formats users bring (random values)."""
    root = tmp_path_factory.mktemp("training")
    model = tiny_editing_model("inversion")
    save_model(model, root / "base.safetensors")
    torch.manual_seed(5)
    with torch.no_grad():
        images = to_uint8(model.generator(torch.randn(12, model.generator.config.z_dim)).numpy())
    for split, part in (("train", images[:8]), ("eval", images[8:])):
        (root / split).mkdir()
        for index, image in enumerate(part):
            write_image(root / split / f"{index:02d}.png", image)
    torch.save(VGG16Features().state_dict(), root / "vgg16.pth")
    torch.save(ArcFaceBackbone(**{**TINY_ARCFACE, "stage_widths": tuple(TINY_ARCFACE["stage_widths"])}).state_dict(),
               root / "arcface.pth")
    return root


def tiny_config(workspace: Path, output: str, **overrides):
    settings = {
        "model": "base.safetensors", "output": output, "family": "warpres",
        "branch": {"width": 16, "adapter_channels": 8},
        "data": {"train": "train", "eval": "eval"},
        "steps": 30, "batch_size": 2, "workers": 0, "perceptual": {"weights": "vgg16.pth"},
        "identity": {"weights": "arcface.pth", "backbone": TINY_ARCFACE, "crop": False},
        "optim": {"lr": 1e-3},
        "discriminator": {"channel_base": 256, "channel_max": 32, "r1_interval": 2},
        "teacher": {"size": 64},
        "schedule": {"log_every": 1, "sample_every": 15, "eval_every": 15, "checkpoint_every": 10},
    }
    for key, value in overrides.items():
        section, _, leaf = key.rpartition("__")
        (settings.setdefault(section, {}) if section else settings)[leaf] = value
    return config_from_mapping(settings, base=workspace)


@pytest.fixture(scope="module")
def warpres_run(workspace):
    config = tiny_config(workspace, "run-warpres")
    result = Trainer(config, progress=False).run()
    return config, result


def _mean(rows, column):
    values = [row[column] for row in rows if column in row]
    return sum(values) / len(values)


def test_losses_are_finite_and_fall(warpres_run):
    config, result = warpres_run
    rows = read_log(config.output / "log.csv")
    assert [row["step"] for row in rows] == list(range(1, 31))
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in rows)
    first, last = rows[:10], rows[-10:]
    assert _mean(last, "l2") < 0.8 * _mean(first, "l2")
    # E2's last layer starts at zero: it adds nothing at first, then learns what to add
    assert rows[0]["feature_regularizer"] == 0 < _mean(last, "feature_regularizer")
    assert result.evaluations[-1]["psnr"] > result.evaluations[0]["psnr"]


def test_every_loss_term_of_both_paths_is_trained(warpres_run):
    config, _ = warpres_run
    rows = read_log(config.output / "log.csv")
    logged = set().union(*rows)
    assert {"l2", "perceptual", "identity", "adversarial", "feature_regularizer", "flow", "cycle_l2",
            "cycle_perceptual", "cycle_identity", "discriminator", "r1"} <= logged
    assert 0 < _mean(rows, "cycle_share") < 1  # both paths were taken


def test_run_folder_holds_checkpoint_samples_and_evaluation(warpres_run):
    config, _ = warpres_run
    out = config.output
    assert is_training_checkpoint(out / "ckpt.safetensors")
    assert [row["step"] for row in read_log(out / "eval.csv")] == [15, 30]
    grid = read_image(out / "samples" / "step-000015.png")
    assert grid.shape == (4 * 64, 4 * 64, 3)  # input | reconstruction | two edits, 4 eval images
    assert json.loads((out / "config.json").read_text())["family"] == "warpres"


def test_training_checkpoint_loads_as_a_model_with_the_trained_branch(warpres_run):
    config, _ = warpres_run
    model, state = load_training_checkpoint(config.output / "ckpt.safetensors")
    assert state.step == 30 and model.family == "warpres"
    assert state.branch_optimizer["state"], "Adam moments are saved"
    plain = load_checkpoint(config.output / "ckpt.safetensors")
    for (name, a), b in zip(model.branch.state_dict().items(), plain.branch.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_export_works_directly_from_a_training_checkpoint(warpres_run, tmp_path):
    config, _ = warpres_run
    result = CliRunner().invoke(main, ["export", str(config.output / "ckpt.safetensors"), "-o", str(tmp_path / "m"),
                                   "--no-validate"])
    assert result.exit_code == 0, result.output
    assert open_model_folder(tmp_path / "m").manifest.family == "warpres"


def test_resume_reproduces_the_following_steps_exactly(workspace):
    """Resumed at step 2, steps 3..5 (a cycle step with the teacher, a no-edit step, an R1 step)
    repeat the uninterrupted run bit for bit: losses, branch and discriminator."""
    straight = Trainer(tiny_config(workspace, "straight", steps=5, schedule__checkpoint_every=0), progress=False)
    straight.run()
    Trainer(tiny_config(workspace, "resumed", steps=2, schedule__checkpoint_every=0), progress=False).run()
    resumed = Trainer(tiny_config(workspace, "resumed", steps=5), resume="auto", progress=False)
    assert resumed.step == 2
    resumed.run()
    rows_a = read_log(workspace / "straight" / "log.csv")
    rows_b = read_log(workspace / "resumed" / "log.csv")
    assert [r["step"] for r in rows_b] == [1, 2, 3, 4, 5]
    assert {r["cycle_share"] for r in rows_b[2:]} == {0.0, 1.0} and any("r1" in r for r in rows_b[2:])
    for row_a, row_b in zip(rows_a[2:], rows_b[2:], strict=True):
        assert {k: v for k, v in row_a.items() if k != "seconds"} == {k: v for k, v in row_b.items() if k != "seconds"}
    for module in ("model", "discriminator"):
        state_a, state_b = getattr(straight, module).state_dict(), getattr(resumed, module).state_dict()
        for name, value in state_a.items():
            torch.testing.assert_close(value, state_b[name], rtol=0, atol=0, msg=name)


def test_a_fresh_run_does_not_overwrite_an_earlier_runs_folder(workspace, warpres_run):
    config, _ = warpres_run
    with pytest.raises(TrainingError, match="holds the checkpoint of an earlier run; continue it with --resume auto"):
        Trainer(config, progress=False)


def test_styleres_family_trains_with_the_same_trainer_and_no_flow_term(workspace):
    config = tiny_config(workspace, "run-styleres", family="styleres", steps=6,
                         branch={"align_channels": 16, "extract_channels": 16, "gate_channels": 8})
    Trainer(config, progress=False).run()
    rows = read_log(config.output / "log.csv")
    assert len(rows) == 6 and not any("flow" in row for row in rows)
    assert load_checkpoint(config.output / "ckpt.safetensors").family == "styleres"


def test_an_nvlabs_discriminator_checkpoint_is_fine_tuned(workspace, tmp_path):
    torch.manual_seed(3)
    discriminator = Discriminator(DiscriminatorConfig(resolution=32, channel_base=128, channel_max=16))
    torch.save({"D": discriminator.state_dict()}, tmp_path / "d.pt")
    config = tiny_config(workspace, str(tmp_path / "run"), steps=2, discriminator__checkpoint=str(tmp_path / "d.pt"))
    trainer = Trainer(config, progress=False)
    assert trainer.discriminator.config.resolution == 32
    torch.testing.assert_close(trainer.discriminator.state_dict()["b32.fromrgb.weight"],
                               discriminator.state_dict()["b32.fromrgb.weight"])
    trainer.run()
    assert not torch.equal(trainer.discriminator.state_dict()["b32.fromrgb.weight"],
                           discriminator.state_dict()["b32.fromrgb.weight"])


def test_flow_head_is_initialised_from_a_teacher_checkpoint_where_shapes_match(workspace, warpres_run, tmp_path):
    trained, _ = warpres_run
    source = load_checkpoint(trained.output / "ckpt.safetensors").branch.flow_head
    config = tiny_config(workspace, str(tmp_path / "run"),
                         teacher__flow_head_init=str(trained.output / "ckpt.safetensors"))
    trainer = Trainer(config, progress=False)
    for (name, a), b in zip(trainer.model.branch.flow_head.state_dict().items(), source.state_dict().values(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_raft_network_teacher_supervises_the_flow(workspace, tmp_path):
    torch.manual_seed(4)
    torch.save(RAFT.small().state_dict(), tmp_path / "raft_small.pth")
    config = tiny_config(workspace, str(tmp_path / "run"), steps=2, edits={"probability": 1.0},
                         teacher={"kind": "raft", "checkpoint": str(tmp_path / "raft_small.pth"), "iterations": 2,
                                  "size": 64})
    trainer = Trainer(config, progress=False)
    assert isinstance(trainer.paths.teacher, RaftFlowTeacher)
    result = trainer.run()
    assert result.last["cycle_share"] == 1.0 and torch.isfinite(torch.tensor(result.last["flow"]))


def test_the_demo_domain_network_can_be_the_perceptual_network(workspace, tmp_path):
    save_file(AttributeRegressor().state_dict(), str(tmp_path / "regressor.safetensors"))
    config = tiny_config(workspace, str(tmp_path / "run"), steps=2, edits={"probability": 0.0},
                         perceptual={"network": "domain", "weights": str(tmp_path / "regressor.safetensors")})
    trainer = Trainer(config, progress=False)
    assert isinstance(trainer.objective.perceptual.vgg, DomainFeatures)
    assert trainer.run().last["perceptual"] > 0


def test_a_flow_head_init_file_without_matching_tensors_is_refused(workspace, tmp_path):
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "teacher.pt")
    config = tiny_config(workspace, str(tmp_path / "run"), teacher__flow_head_init=str(tmp_path / "teacher.pt"))
    with pytest.raises(CheckpointError, match="teacher.pt: no tensor named"):
        Trainer(config, progress=False)


def test_resuming_a_styleres_checkpoint_as_warpres_is_refused(workspace):
    Trainer(tiny_config(workspace, "run-mixed", family="styleres", steps=1,
                        branch={"align_channels": 16, "extract_channels": 16, "gate_channels": 8}),
            progress=False).run()
    with pytest.raises(TrainingError, match="styleres run cannot be resumed as warpres"):
        Trainer(tiny_config(workspace, "run-mixed", steps=2), resume="auto", progress=False)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_stay_finite_and_fp16_keeps_its_loss_scale(workspace, tmp_path, amp):
    """The autocast paths GPUs take (amp: auto), run here on the CPU; fp16 skips a step (and halves
    its loss scale) whenever a gradient overflows, which must stay the exception."""
    trainer = Trainer(tiny_config(workspace, str(tmp_path / "run"), steps=8, amp=amp, channels_last=amp == "bf16"),
                      progress=False)
    result = trainer.run()
    assert all(math.isfinite(value) for value in result.last.values())
    if amp == "fp16":
        assert result.last["loss_scale"] >= 2.0**16 / 2**3


def test_learning_rate_halves_at_5k_10k_15k(workspace):
    config = tiny_config(workspace, "unused", optim={"lr": 1e-4})
    assert [learning_rate(config, s) for s in (1, 5000, 5001, 10001, 15001)] == [1e-4, 1e-4, 5e-5, 2.5e-5, 1.25e-5]


def test_ddp_under_torchrun_with_world_size_one_matches_a_plain_run(workspace, tmp_path):
    """The DDP code path (gloo on CPU) runs and, with one rank, trains like the plain process."""
    (workspace / "ddp.yaml").write_text(json.dumps({
        "model": "base.safetensors", "output": str(tmp_path / "ddp"), "family": "warpres",
        "branch": {"width": 16, "adapter_channels": 8}, "data": {"train": "train"}, "steps": 3,
        "batch_size": 2, "workers": 0, "optim": {"lr": 1e-3}, "teacher": {"size": 64},
        "discriminator": {"channel_base": 256, "channel_max": 32, "r1_interval": 2},
        "schedule": {"log_every": 1, "sample_every": 0, "eval_every": 0, "checkpoint_every": 0}}))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    done = subprocess.run([*torchrun, "-m", "warpres.cli", "train", str(workspace / "ddp.yaml"), "--no-progress"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    plain = tiny_config(workspace, str(tmp_path / "plain"), steps=3, perceptual={}, identity={},
                        data={"train": "train"}, schedule={"log_every": 1, "sample_every": 0, "eval_every": 0,
                                                           "checkpoint_every": 0})
    Trainer(plain, progress=False).run()
    ddp_rows, plain_rows = read_log(tmp_path / "ddp" / "log.csv"), read_log(tmp_path / "plain" / "log.csv")
    assert len(ddp_rows) == 3
    for a, b in zip(ddp_rows, plain_rows, strict=True):
        for column in ("total", "l2", "cycle_l2", "flow", "discriminator"):
            if column in b:
                assert a[column] == pytest.approx(b[column], rel=1e-3), column


def test_a_config_mistake_is_one_error_line(tmp_path):
    (tmp_path / "run.yaml").write_text("model: m.safetensors\noutput: o\ndata: {train: t}\nlosses: {flw: 1}\n")
    result = CliRunner().invoke(main, ["train", str(tmp_path / "run.yaml")])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {tmp_path / 'run.yaml'}: unknown key losses.flw;")
