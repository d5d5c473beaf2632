"""A resumable supervised fitting loop for the demo models (regressor, generator, encoder).

Each demo model is fitted on an endless stream of renders; sample k of step s is fixed by
(seed, k), so a stage interrupted at any checkpoint continues exactly. The checkpoint
`WORK/<name>.fit.safetensors` holds the module's state, Adam's moments and the step; the log
`WORK/<name>.log.csv` the mean of every loss term per interval. On the CPU the loop runs in
bf16 autocast with channels-last tensors, where oneDNN has its fastest convolutions.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from warpres.checkpoints.safe_load import strip_prefix
from warpres.errors import TrainingError
from warpres.files import atomic_path
from warpres.training.checkpoint import optimizer_state, optimizer_tensors
from warpres.training.data import StepSampler
from warpres.training.runlog import append_row, truncate_after

log = logging.getLogger(__name__)
Batch = Sequence[torch.Tensor]
Objective = Callable[[Batch], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class FitConfig:
    """steps, batch and Adam settings of one stage; lr drops by 10x for the last `final_fraction`.
    group_lrs: (parameter-name prefix, lr) for the parameters that train at another rate than
    `lr` (the longest matching prefix wins); their rates drop with it.
    pose_curriculum: (frontal, ramp) steps of the stream's `data.PoseCurriculum`, or None; it
    shapes what the fit sees, so a resumed fit must keep it."""

    steps: int
    batch_size: int = 16
    lr: float = 2e-3
    group_lrs: tuple[tuple[str, float], ...] = ()
    betas: tuple[float, float] = (0.9, 0.99)
    final_fraction: float = 0.2
    pose_curriculum: tuple[int, int] | None = None
    amp: bool = True
    workers: int = 1
    log_every: int = 50
    checkpoint_every: int = 500


# the run's trajectory
_PLAN_FIELDS = ("steps", "batch_size", "lr", "group_lrs", "betas", "final_fraction", "pose_curriculum")


def _last_full_rate_step(config: FitConfig) -> int:
    return int(config.steps * (1 - config.final_fraction))


def _rate_factor(config: FitConfig, step: int) -> float:
    return 0.1 if step > _last_full_rate_step(config) else 1.0


def _parameter_groups(module: nn.Module, parameters: Sequence[nn.Parameter], config: FitConfig) -> list[dict]:
    """Adam parameter groups by learning rate, each with its full `base_lr` (config.group_lrs)."""
    names = {id(p): name for name, p in module.named_parameters()}
    by_rate: dict[float, list[nn.Parameter]] = defaultdict(list)
    for parameter in parameters:
        name = names.get(id(parameter), "")
        matches = [(len(prefix), lr) for prefix, lr in config.group_lrs if name.startswith(prefix)]
        by_rate[max(matches)[1] if matches else config.lr].append(parameter)
    return [{"params": group, "lr": lr, "base_lr": lr} for lr, group in by_rate.items()]


def fit(name: str, module: nn.Module, objective: Objective, data: Dataset, work: Path, config: FitConfig,
        parameters: Sequence[nn.Parameter] | None = None, progress: bool = True, until: int | None = None,
        helpers: Sequence[nn.Module] = ()) -> nn.Module:
    """Fit `module` (its `parameters`, default all) to minimise objective(batch)["loss"] for
    config.steps steps, resuming from WORK/<name>.fit.safetensors when present; `until` stops
    (with a checkpoint) at an earlier step of the same plan. A plan may change its `steps` while
    the learning rate has not dropped yet, and a finished fit may continue to more steps (a warm
    restart: the rate returns to `lr` and drops again for the new run's last `final_fraction`).
    `helpers` are the frozen networks the objective runs (generator, perceptual network): they go
    channels-last too, since a channels-first bf16 backward takes oneDNN's slow path (3x slower
    here). Returns the module."""
    work.mkdir(parents=True, exist_ok=True)
    checkpoint, log_path = work / f"{name}.fit.safetensors", work / f"{name}.log.csv"
    for network in (module, *helpers):
        network.to(memory_format=torch.channels_last)
    parameters = list(module.parameters() if parameters is None else parameters)
    optimizer = torch.optim.Adam(_parameter_groups(module, parameters, config), lr=config.lr, betas=config.betas)
    step = _resume(checkpoint, module, optimizer, config) if checkpoint.exists() else 0
    truncate_after(log_path, step)
    last = config.steps if until is None else min(until, config.steps)
    if step >= last:
        return module.eval()
    batches = iter(DataLoader(data, batch_size=config.batch_size, sampler=StepSampler(step + 1, config.batch_size),
                              num_workers=config.workers, persistent_workers=config.workers > 0))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.amp else nullcontext()
    interval: dict[str, list[float]] = defaultdict(list)
    started = time.perf_counter()
    module.train()
    with tqdm(total=config.steps, initial=step, desc=name, unit="step", disable=not progress) as bar:
        while step < last:
            step += 1
            batch = [t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t for t in next(batches)]
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * _rate_factor(config, step)
            with autocast:
                terms = objective(batch)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise TrainingError(f"{name} step {step}: the loss is not finite ({loss.item()})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in terms.items():
                interval[key].append(value.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if step % config.log_every == 0 or step == last:
                row = {k: sum(v) / len(v) for k, v in interval.items()}
                append_row(log_path, ["step", *row, "seconds"],
                           {"step": step, **row, "seconds": round(time.perf_counter() - started, 1)})
                interval.clear()
            if step % config.checkpoint_every == 0 or step == last:
                _save(checkpoint, module, optimizer, step, config)
    return module.eval()


def _save(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, step: int, config: FitConfig) -> None:
    tensors, plain = optimizer_tensors(optimizer.state_dict(), "optimizer")
    tensors |= {f"module.{k}": v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {"step": str(step), "optimizer": json.dumps(plain), "config": json.dumps(asdict(config))}
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def _resume(path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, config: FitConfig) -> int:
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    saved = json.loads(metadata["config"])
    step = int(metadata["step"])
    plan = {key: value for key, value in json.loads(json.dumps(asdict(config))).items() if key in _PLAN_FIELDS}
    defaults = json.loads(json.dumps(asdict(FitConfig(steps=1))))  # fields added since the checkpoint was saved
    changed = sorted(key for key, value in plan.items() if saved.get(key, defaults[key]) != value)
    before_drop = step <= min(_last_full_rate_step(config), _last_full_rate_step(replace(config, steps=saved["steps"])))
    if changed == ["steps"] and before_drop:
        changed = []  # a longer (or shorter) run whose learning rate has not dropped yet: the same run so far
    elif changed == ["steps"] and step == saved["steps"] < config.steps:
        log.warning("%s: the finished %d-step fit continues to %d steps; its learning rate returns to %g "
                    "(a warm restart)", path, step, config.steps, config.lr)
        changed = []
    if changed:
        raise TrainingError(f"{path}: fitted with other {', '.join(changed)} "
                            f"({', '.join(f'{k}={saved.get(k)}' for k in changed)}); resuming would not continue "
                            "the same run: keep the plan, or start in another folder")
    tensors = load_file(str(path))
    module.load_state_dict(strip_prefix(tensors, "module."))
    base_rates = [group["base_lr"] for group in optimizer.param_groups]  # this plan's; older files lack them
    optimizer.load_state_dict(optimizer_state(tensors, json.loads(metadata["optimizer"]), "optimizer"))
    for group, rate in zip(optimizer.param_groups, base_rates, strict=True):
        group["base_lr"] = rate
    return step


def load_fitted(path: Path, module: nn.Module) -> nn.Module:
    """The module state of a fitting checkpoint (its final or latest step), in eval mode."""
    tensors = load_file(str(path))
    module.load_state_dict(strip_prefix(tensors, "module."))
    return module.eval()
