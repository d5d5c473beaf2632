"""Training checkpoints: our model file plus everything needed to continue the run exactly.

`run/ckpt.safetensors` is a regular warpres checkpoint (generator, E0, branch; it exports and
edits as is) with, under `training.*`, the discriminator and the Adam moments of the branch and
the discriminator; the header's `training_state` JSON holds the step, the optimiser
hyper-parameters, the AMP loss scale, the discriminator config and the run's config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from warpres.checkpoints.native import TRAINING_PREFIX, load_model, read_metadata, save_model
from warpres.checkpoints.safe_load import load_state_file, strip_prefix
from warpres.errors import CheckpointError
from warpres.models.discriminator import Discriminator, DiscriminatorConfig
from warpres.models.editor import EditingModel

STATE_KEY = "training_state"
STATE_VERSION = 1


@dataclass
class TrainingState:
    """Everything besides the model that a resumed run needs (plain data and state dicts)."""

    step: int
    config_json: str
    branch_optimizer: dict[str, Any]
    discriminator: Discriminator
    discriminator_optimizer: dict[str, Any]
    scaler: dict[str, Any]


def optimizer_tensors(state: Mapping[str, Any], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state_dict into tensors (`prefix.<param>.<slot>`) and JSON-able data."""
    tensors, plain = {}, {}
    for index, slots in state["state"].items():
        for slot, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{index}.{slot}"] = value
            else:
                plain.setdefault(str(index), {})[slot] = value
    return tensors, {"param_groups": state["param_groups"], "plain": plain}


def optimizer_state(tensors: Mapping[str, torch.Tensor], data: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            index, slot = key[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(index), {})[slot] = value
    for index, slots in data["plain"].items():
        state.setdefault(int(index), {}).update(slots)
    return {"state": state, "param_groups": data["param_groups"]}


def save_training_checkpoint(path: str | Path, model: EditingModel, state: TrainingState) -> None:
    """Write model + training state atomically (one safetensors file)."""
    branch_tensors, branch_data = optimizer_tensors(state.branch_optimizer, "optimizer")
    d_tensors, d_data = optimizer_tensors(state.discriminator_optimizer, "discriminator_optimizer")
    tensors = {**branch_tensors, **d_tensors,
               **{f"discriminator.{k}": v for k, v in state.discriminator.state_dict().items()}}
    header = {"version": STATE_VERSION, "step": state.step, "config": json.loads(state.config_json),
              "optimizer": branch_data, "discriminator_optimizer": d_data, "scaler": state.scaler,
              "discriminator_config": state.discriminator.config.to_dict()}
    save_model(model, path, extra_metadata={STATE_KEY: json.dumps(header)}, training_tensors=tensors)


def is_training_checkpoint(path: str | Path) -> bool:
    return STATE_KEY in read_metadata(path)


def load_training_checkpoint(path: str | Path) -> tuple[EditingModel, TrainingState]:
    """The model and the training state saved by `save_training_checkpoint`."""
    source = str(path)
    metadata = read_metadata(path)
    if STATE_KEY not in metadata:
        raise CheckpointError(f"{source}: a model checkpoint without training state; it cannot be resumed "
                              "(use it as the run's `model` instead)")
    try:
        header = json.loads(metadata[STATE_KEY])
        if header.get("version") != STATE_VERSION:
            raise CheckpointError(f"{source}: training state version {header.get('version')!r}; "
                                  f"this version reads {STATE_VERSION}")
        model = load_model(path)
        tensors = strip_prefix(load_file(source), TRAINING_PREFIX)
        discriminator = Discriminator(DiscriminatorConfig.from_dict(header["discriminator_config"]))
        discriminator.load_state_dict(strip_prefix(tensors, "discriminator."), strict=True)
        state = TrainingState(
            step=int(header["step"]), config_json=json.dumps(header["config"], sort_keys=True),
            branch_optimizer=optimizer_state(tensors, header["optimizer"], "optimizer"),
            discriminator=discriminator,
            discriminator_optimizer=optimizer_state(tensors, header["discriminator_optimizer"],
                                                     "discriminator_optimizer"),
            scaler=header["scaler"])
    except (KeyError, TypeError, ValueError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"{source}: damaged training state ({type(exc).__name__}: {exc})") from None
    return model, state


def _read_any_state(path: Path) -> Mapping[str, torch.Tensor]:
    data = load_state_file(path)
    for key in ("state_dict", "model"):
        if isinstance(data.get(key), Mapping):
            return data[key]
    return data


def load_matching_weights(module: nn.Module, path: str | Path, namespace: str) -> tuple[int, int]:
    """Copy into `module` every tensor of `path` whose name ends with `namespace + name` of one of
    ours and whose shape matches ("where shapes allow"). Returns (copied, ours in total).

    Reads warpres / any safetensors file or a torch state dict (plain, or under 'state_dict' /
    'model'); raises CheckpointError when nothing matches, so a wrong file is not silently ignored.
    """
    path = Path(path)
    source = {k: v for k, v in _read_any_state(path).items() if isinstance(v, torch.Tensor)}
    ours = module.state_dict()
    copied = {}
    for name, tensor in ours.items():
        suffix = namespace + name
        matches = [k for k in source if k == suffix or k.endswith("." + suffix)]
        if len(matches) == 1 and source[matches[0]].shape == tensor.shape:
            copied[name] = source[matches[0]]
    if not copied:
        raise CheckpointError(f"{path}: no tensor named '*{namespace}<name>' with a matching shape; "
                              f"expected names like {namespace}{next(iter(ours))}")
    module.load_state_dict(copied, strict=False)
    return len(copied), len(ours)
