"""The training loop: the branch (E1, flow head, E2) against the objective, the discriminator
against the branch, checkpoints, logs, sample grids and evaluation.

One process per device. Under `torchrun` the branch paths and the discriminator are wrapped in
PyTorch DDP (NCCL on GPUs, gloo on CPUs) and every rank reads its own samples; rank 0 writes
the run folder:

    OUTPUT/ckpt.safetensors          latest checkpoint (model + training state; exportable)
    OUTPUT/ckpt-STEP.safetensors     kept copies (schedule.keep_every)
    OUTPUT/log.csv                   mean of every loss term per logging interval
    OUTPUT/eval.csv                  reconstruction PSNR / SSIM on the held-out images
    OUTPUT/samples/step-STEP.png     input | reconstruction | edits, one row per sample image
    OUTPUT/config.json               the resolved config of the run

Every random choice of step s on rank r comes from seeds derived from (seed, s, r), and the
data order from (seed, sample number), so a run resumed from step s continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as torch_dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from warpres.checkpoints import load_checkpoint
from warpres.checkpoints.nvlabs import load_nvlabs_discriminator
from warpres.checkpoints.safe_load import load_torch_checkpoint
from warpres.errors import TrainingError
from warpres.files import atomic_path
from warpres.models.discriminator import Discriminator, DiscriminatorConfig
from warpres.models.editor import EditingModel
from warpres.models.styleres import StyleResBranch, StyleResConfig
from warpres.models.warpres import WarpResBranch, WarpResConfig
from warpres.media.imageio import write_image
from warpres.training.checkpoint import (
    TrainingState,
    load_matching_weights,
    load_training_checkpoint,
    save_training_checkpoint,
)
from warpres.training.config import TrainConfig
from warpres.training.data import ImageFolder, SampleStream, step_seed, training_batches
from warpres.training.evaluation import evaluate_reconstruction, sample_grid
from warpres.training.identity import FACE_CROP_256, IdentityLoss, load_identity_backbone
from warpres.training.losses import PerceptualLoss, discriminator_adversarial_loss, r1_penalty
from warpres.training.objective import TERMS, Objective
from warpres.training.paths import EditPlan, TrainingPaths, direction_vectors, resize_images
from warpres.training.runlog import append_row, truncate_after
from warpres.training.teacher import OpenCVFlowTeacher
from warpres.training.vgg import VGG16Features

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "ckpt.safetensors"
SAMPLE_IMAGES = 4
LOG_COLUMNS = ("step", "lr", "cycle_share", "total", *TERMS, "discriminator", "r1", "loss_scale", "seconds")
# seed streams: 0/1 are the data order and flips (warpres.training.data); 2 the edit plans; 3 the samples
_PLAN_STREAM, _SAMPLE_STREAM = 2, 3


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (world_size 1 and not enabled when run directly)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    enabled: bool = False

    @staticmethod
    def from_environment() -> Distributed:
        if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
            return Distributed()
        return Distributed(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)),
                           int(os.environ["WORLD_SIZE"]), enabled=True)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


@dataclass
class TrainResult:
    step: int
    last: dict[str, float]
    evaluations: list[dict[str, float]] = field(default_factory=list)


def new_branch(family: str, model: EditingModel, widths: dict) -> StyleResBranch | WarpResBranch:
    """A fresh branch of `family` whose interface widths come from E0 and the generator."""
    gen, enc = model.generator.config, model.encoder.config
    e = gen.embed_res
    interface = {"enc_channels": enc.feature_channels, "feat_channels": gen.channels_at(e)}
    if family == "warpres":
        interface |= {"tap_quarter_channels": gen.channels_at(e // 4), "tap_half_channels": gen.channels_at(e // 2)}
        config_type, branch_type = WarpResConfig, WarpResBranch
    else:
        config_type, branch_type = StyleResConfig, StyleResBranch
    clash = sorted(set(widths) & set(interface))
    if clash:
        raise TrainingError(f"branch widths {clash} are fixed by the encoder and generator; leave them out")
    try:
        return branch_type(config_type.from_dict({**interface, **widths}))
    except ValueError as exc:
        raise TrainingError(f"branch: {exc}") from None


def resolve_amp(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the branch step, or None for full precision."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[mode]


def learning_rate(config: TrainConfig, step: int) -> float:
    """lr at 1-based `step`: multiplied by gamma once for every milestone already passed."""
    passed = sum(step > milestone for milestone in config.optim.milestones)
    return config.optim.lr * config.optim.gamma**passed


class Trainer:
    """`Trainer(config).run()` trains from scratch, or from `resume` (a checkpoint path or 'auto':
    OUTPUT/ckpt.safetensors if it exists)."""

    def __init__(self, config: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.dist = Distributed.from_environment()
        if torch.cuda.is_available():
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if self.dist.enabled and not torch_dist.is_initialized():
            # rank 0 evaluates and writes samples while the others wait in the next collective
            torch_dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo",
                                          timeout=timedelta(minutes=60))
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.output = config.output
        resume_path = self._resume_path(resume)

        if resume_path is None and (self.output / CHECKPOINT_NAME).exists():
            raise TrainingError(f"{self.output} holds the checkpoint of an earlier run; continue it with "
                                "--resume auto, or write this run to another output folder")
        if resume_path is not None:
            model, state = load_training_checkpoint(resume_path)
            self._check_same_run(state, resume_path)
            discriminator, self.step = state.discriminator, state.step
        else:
            model, state = self._initial_model(), None
            discriminator, self.step = self._initial_discriminator(model), 0
        self.model = model
        self.discriminator = discriminator.to(self.device).train()
        self.paths = TrainingPaths(model, self._teacher(), config.teacher.size).to(self.device).train()
        self.edit_directions = direction_vectors(config.edits, model.generator.config.num_ws)
        self.objective = Objective(config.losses, self._perceptual(), self._identity(), model.branch.uses_flow)
        if self.objective.perceptual is not None:
            self.objective.perceptual.to(self.device)
        if self.objective.identity is not None:
            self.objective.identity.to(self.device)
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        for network in (self.paths, self.discriminator, self.objective.perceptual, self.objective.identity):
            if network is not None:
                network.to(memory_format=self.memory_format)

        self.optimizer = torch.optim.Adam(self.paths.trainable_parameters(), lr=config.optim.lr,
                                          betas=config.optim.betas)
        d = config.discriminator
        self.d_optimizer = torch.optim.Adam(self.discriminator.parameters(), lr=d.lr, betas=d.betas)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        if state is not None:
            self.optimizer.load_state_dict(state.branch_optimizer)
            self.d_optimizer.load_state_dict(state.discriminator_optimizer)
            if state.scaler:
                self.scaler.load_state_dict(state.scaler)

        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.paths_step = DistributedDataParallel(self.paths, device_ids=ids, forward_sync_buffers=False)
            self.d_step = DistributedDataParallel(self.discriminator, device_ids=ids, forward_sync_buffers=False)
        else:
            self.paths_step, self.d_step = self.paths, self.discriminator

        size = model.encoder.config.input_size
        self.train_images = ImageFolder(config.data.train, size)
        self.eval_images = ImageFolder(config.data.eval, size) if config.data.eval is not None else None
        self.stream = SampleStream(self.train_images, config.seed, config.data.hflip)

    # -- setup ------------------------------------------------------------------------------

    def _resume_path(self, resume: str | Path | None) -> Path | None:
        if resume is None:
            return None
        if str(resume) == "auto":
            latest = self.output / CHECKPOINT_NAME
            return latest if latest.is_file() else None
        path = Path(resume)
        if not path.is_file():
            raise TrainingError(f"{path}: no such training checkpoint to resume from")
        return path

    def _check_same_run(self, state: TrainingState, path: Path) -> None:
        saved = json.loads(state.config_json)
        if saved.get("family") != self.config.family:
            raise TrainingError(f"{path}: a {saved.get('family')} run cannot be resumed as {self.config.family}")
        if state.step >= self.config.steps:
            log.warning("%s is at step %d, which already reaches steps=%d", path, state.step, self.config.steps)

    def _initial_model(self) -> EditingModel:
        config = self.config
        base = load_checkpoint(config.model)
        if base.encoder is None:
            raise TrainingError(f"{config.model}: a {base.family} checkpoint has no encoder (E0); training needs one")
        if base.family == config.family:
            branch = base.branch
            if config.branch:
                log.warning("branch widths in the config are ignored: %s already holds a %s branch",
                            config.model, config.family)
        else:
            torch.manual_seed(config.seed)
            branch = new_branch(config.family, base, config.branch)
        model = EditingModel(base.generator, base.encoder, branch)
        init = config.teacher.flow_head_init
        if init is not None:
            if not branch.uses_flow:
                raise TrainingError("teacher.flow_head_init is set but a StyleRes branch has no flow head")
            copied, total = load_matching_weights(branch.flow_head, init, "flow_head.")
            log.warning("flow head: %d of %d tensors initialised from %s", copied, total, init)
        return model

    def _initial_discriminator(self, model: EditingModel) -> Discriminator:
        d = self.config.discriminator
        group = math.gcd(4, self.config.batch_size)
        if d.checkpoint is not None:
            data = load_torch_checkpoint(d.checkpoint)
            state = data["D"] if isinstance(data.get("D"), dict) else data
            return load_nvlabs_discriminator(state, str(d.checkpoint), mbstd_group_size=group)
        torch.manual_seed(self.config.seed + 1)
        resolution = d.resolution or model.encoder.config.input_size
        try:
            config = DiscriminatorConfig(resolution=resolution, channel_base=d.channel_base,
                                         channel_max=d.channel_max, mbstd_group_size=group)
        except ValueError as exc:
            raise TrainingError(f"discriminator: {exc}") from None
        return Discriminator(config)

    def _teacher(self):
        teacher = self.config.teacher
        if not self.model.branch.uses_flow:
            return None
        if teacher.kind == "raft":
            from warpres.training.raft import RaftFlowTeacher

            return RaftFlowTeacher(teacher.checkpoint, iterations=teacher.iterations)
        try:
            return OpenCVFlowTeacher(teacher.method, teacher.preset, teacher.still_threshold, teacher.still_margin)
        except ValueError as exc:
            raise TrainingError(f"teacher: {exc}") from None

    def _perceptual(self) -> PerceptualLoss | None:
        perceptual = self.config.perceptual
        if perceptual.weights is None:
            return None
        if perceptual.network == "domain":
            from warpres.training.domain import load_domain_features

            return PerceptualLoss(load_domain_features(perceptual.weights))
        return PerceptualLoss(VGG16Features.from_file(perceptual.weights))

    def _identity(self) -> IdentityLoss | None:
        identity = self.config.identity
        if identity.weights is None:
            if self.config.losses.identity or self.config.losses.cycle_identity:
                log.warning("identity loss disabled: no ArcFace weights given (identity.weights)")
            return None
        try:
            backbone = load_identity_backbone(identity.weights, **identity.backbone)
        except TypeError as exc:
            raise TrainingError(f"identity.backbone: {exc}") from None
        return IdentityLoss(backbone, crop=FACE_CROP_256 if identity.crop else None)

    # -- one step ---------------------------------------------------------------------------

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _discriminate(self, module, images: torch.Tensor) -> torch.Tensor:
        # fp32 always: minibatch-stddev's sqrt of tiny variances underflows in fp16 (NaN gradients)
        with torch.autocast(self.device.type, enabled=False):
            return module(resize_images(images.float(), self.discriminator.config.resolution))

    def train_step(self, step: int, images: torch.Tensor) -> dict[str, float]:
        """One branch update and one discriminator update (plus R1 every r1_interval steps)."""
        config = self.config
        rng = torch.Generator().manual_seed(step_seed(config.seed, _PLAN_STREAM, step, self.dist.rank))
        plan = EditPlan.sample(config.edits, images.shape[0], self.model.generator.config.z_dim, rng,
                               self.edit_directions).to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(config, step)

        self.discriminator.requires_grad_(False)
        with self._autocast():
            outputs = self.paths_step(images, plan)
            terms = self.objective.terms(outputs, images,
                                         lambda fake: self._discriminate(self.discriminator, fake))
            total = self.objective.total(terms)
        if not torch.isfinite(total):
            values = ", ".join(f"{name}={value.item():.4g}" for name, value in terms.items())
            raise TrainingError(f"step {step}: the loss is not finite ({values}); lower optim.lr or enable amp=off")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

        self.discriminator.requires_grad_(True)
        d = config.discriminator
        real_logits = self._discriminate(self.d_step, images)
        fake_logits = self._discriminate(self.d_step, outputs.output.detach())
        d_loss = discriminator_adversarial_loss(real_logits, fake_logits)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        metrics = {"total": total.item(), "discriminator": d_loss.item(), "cycle_share": float(plan.cycle),
                   "lr": learning_rate(config, step), **{name: value.item() for name, value in terms.items()}}
        if self.scaler.is_enabled():
            metrics["loss_scale"] = self.scaler.get_scale()
        if step % d.r1_interval == 0:
            real = resize_images(images, self.discriminator.config.resolution).detach().requires_grad_(True)
            logits = self.d_step(real)
            r1 = r1_penalty(real, logits)
            self.d_optimizer.zero_grad(set_to_none=True)
            # the zero term reaches the last bias, which R1 does not: DDP expects a gradient for every parameter
            (d.r1_gamma / 2 * d.r1_interval * r1 + 0.0 * logits.sum()).backward()
            self.d_optimizer.step()
            metrics["r1"] = r1.item()
        return metrics

    # -- the loop ---------------------------------------------------------------------------

    def run(self) -> TrainResult:
        config = self.config
        if self.dist.is_main:
            self.output.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.output / "config.json") as tmp:
                tmp.write_text(json.dumps(json.loads(config.to_json()), indent=2) + "\n")
            truncate_after(self.output / "log.csv", self.step)
            truncate_after(self.output / "eval.csv", self.step)
        result = TrainResult(step=self.step, last={})
        if self.step >= config.steps:
            return result
        batches = training_batches(self.stream, self.step + 1, config.batch_size, self.dist.rank,
                                   self.dist.world_size, config.workers)
        interval: dict[str, list[float]] = defaultdict(list)
        started = time.perf_counter()
        bar = tqdm(total=config.steps, initial=self.step, desc=f"training {config.family}", unit="step",
                   disable=not (self.progress and self.dist.is_main), dynamic_ncols=True)
        schedule = config.schedule
        with bar:
            for step in range(self.step + 1, config.steps + 1):
                images = next(batches).to(self.device).contiguous(memory_format=self.memory_format)
                metrics = self.train_step(step, images)
                self.step = result.step = step
                result.last = metrics
                for name, value in metrics.items():
                    interval[name].append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{metrics['total']:.4f}", d=f"{metrics['discriminator']:.3f}")
                last = step == config.steps
                if self.dist.is_main and (last or _due(step, schedule.log_every)):
                    self._write_log(step, interval, time.perf_counter() - started)
                    interval.clear()
                if self.dist.is_main and _due(step, schedule.sample_every):
                    self._write_samples(step)
                if self.dist.is_main and self.eval_images is not None and (last or _due(step, schedule.eval_every)):
                    scores = self._evaluate(step)
                    result.evaluations.append(scores)
                    bar.write(f"step {step}: PSNR {scores['psnr']:.2f} dB, SSIM {scores['ssim']:.4f} "
                              f"({int(scores['images'])} held-out images)")
                if last or _due(step, schedule.checkpoint_every):
                    self.save()
        return result

    def save(self) -> Path:
        """Write OUTPUT/ckpt.safetensors (rank 0; every rank waits for it)."""
        path = self.output / CHECKPOINT_NAME
        if self.dist.is_main:
            state = TrainingState(self.step, self.config.to_json(), self.optimizer.state_dict(), self.discriminator,
                                  self.d_optimizer.state_dict(), self.scaler.state_dict())
            save_training_checkpoint(path, self.model, state)
            keep = self.config.schedule.keep_every
            if _due(self.step, keep):
                shutil.copyfile(path, self.output / f"ckpt-{self.step:06d}.safetensors")
        self.dist.barrier()
        return path

    def _write_log(self, step: int, interval: dict[str, list[float]], seconds: float) -> None:
        row = {name: sum(values) / len(values) for name, values in interval.items()}
        row |= {"step": step, "seconds": round(seconds, 3)}
        append_row(self.output / "log.csv", LOG_COLUMNS, row)

    def _sample_inputs(self) -> torch.Tensor:
        source = self.eval_images or self.train_images
        return torch.stack([source[i] for i in range(min(SAMPLE_IMAGES, len(source)))])

    def _write_samples(self, step: int) -> None:
        images = self._sample_inputs()
        rng = torch.Generator().manual_seed(step_seed(self.config.seed, _SAMPLE_STREAM))
        z = torch.randn(images.shape[0], self.model.generator.config.z_dim, generator=rng)
        with torch.no_grad():
            targets = self.model.generator.mapping(z.to(self.device))
        low, high = self.config.edits.alpha
        grid = sample_grid(self.model, images, targets, alphas=((low + high) / 2, 1.0))
        self.paths.train()
        write_image(self.output / "samples" / f"step-{step:06d}.png", grid)

    def _evaluate(self, step: int) -> dict[str, float]:
        scores = evaluate_reconstruction(self.model, self.eval_images.batches(self.config.batch_size * 2),
                                         limit=self.config.data.eval_images)
        self.paths.train()
        row = {"step": step, "psnr": scores.psnr, "ssim": scores.ssim, "images": scores.images}
        append_row(self.output / "eval.csv", ("step", "psnr", "ssim", "images"), row)
        return row


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def train(config: TrainConfig, resume: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a branch as `config` says; see `Trainer`."""
    try:
        return Trainer(config, resume=resume, progress=progress).run()
    finally:
        if Distributed.from_environment().enabled and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
