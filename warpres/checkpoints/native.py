"""Our own checkpoint format: one safetensors file, its architecture as JSON in the header.

Tensors are namespaced by component (`generator.*`, `encoder.*`, `branch.*`); the header
metadata holds `format`, `format_version`, `family` and `config` (the JSON of each component's
config dataclass). Loading rebuilds the modules from the configs and loads strictly, so a file
round-trips exactly; nothing in it is executable. A training checkpoint is the same file with
its optimiser and discriminator state added under `training.*`: the model loaders skip that
namespace, so a training checkpoint exports and edits like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from warpres.checkpoints.safe_load import load_state_strict, strip_prefix
from warpres.errors import CheckpointError
from warpres.files import atomic_path
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig
from warpres.models.styleres import StyleResBranch, StyleResConfig
from warpres.models.warpres import WarpResBranch, WarpResConfig

FORMAT = "warpres"
FORMAT_VERSION = 1
BRANCHES = {"styleres": (StyleResBranch, StyleResConfig), "warpres": (WarpResBranch, WarpResConfig)}
LATENT_AVG_KEY = "encoder.latent_avg"
TRAINING_PREFIX = "training."


def save_model(model: EditingModel, path: str | Path, extra_metadata: dict[str, str] | None = None,
               training_tensors: dict[str, torch.Tensor] | None = None) -> None:
    """Write `model` atomically (temp file + rename) as a warpres safetensors checkpoint.

    `training_tensors` (names without the prefix) are stored under `training.*`.
    """
    path = Path(path)
    tensors = {f"generator.{k}": v for k, v in model.generator.state_dict().items()}
    config: dict = {"generator": model.generator.config.to_dict(), "encoder": None, "branch": None}
    if model.encoder is not None:
        tensors |= {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
        tensors[LATENT_AVG_KEY] = model.encoder.latent_avg
        config["encoder"] = model.encoder.config.to_dict()
    if model.branch is not None:
        tensors |= {f"branch.{k}": v for k, v in model.branch.state_dict().items()}
        config["branch"] = model.branch.config.to_dict()
    metadata = {**(extra_metadata or {}), "format": FORMAT, "format_version": str(FORMAT_VERSION),
                "family": model.family, "config": json.dumps(config)}
    tensors |= {TRAINING_PREFIX + k: v for k, v in (training_tensors or {}).items()}
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The header metadata of a warpres checkpoint, checked for format and version."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path}: safetensors file without warpres metadata (format={metadata.get('format')!r})")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(f"{path}: warpres format version {metadata.get('format_version')!r}; "
                              f"this version reads {FORMAT_VERSION}")
    return metadata


def load_model(path: str | Path) -> EditingModel:
    """Rebuild the EditingModel saved by `save_model`."""
    metadata = read_metadata(path)
    source = str(path)
    try:
        config = json.loads(metadata["config"])
        generator = Generator(GeneratorConfig.from_dict(config["generator"]))
        encoder = StyleEncoder(EncoderConfig.from_dict(config["encoder"])) if config.get("encoder") else None
        family = metadata.get("family")
        branch = None
        if config.get("branch") is not None:
            if family not in BRANCHES:
                raise CheckpointError(f"{source}: unknown model family {family!r}; known: {sorted(BRANCHES)}")
            branch_type, branch_config = BRANCHES[family]
            branch = branch_type(branch_config.from_dict(config["branch"]))
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{source}: invalid config in the header ({type(exc).__name__}: {exc})") from None
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{source}: tensors unreadable ({exc})") from None
    load_state_strict(generator, strip_prefix(tensors, "generator."), f"{source}[generator]")
    if encoder is not None:
        latent_avg = tensors.pop(LATENT_AVG_KEY, None)
        if latent_avg is None:
            raise CheckpointError(f"{source}: missing {LATENT_AVG_KEY}")
        load_state_strict(encoder, strip_prefix(tensors, "encoder."), f"{source}[encoder]")
        encoder.set_latent_avg(latent_avg)
    if branch is not None:
        load_state_strict(branch, strip_prefix(tensors, "branch."), f"{source}[branch]")
    stray = sorted(k for k in tensors if not k.startswith(("generator.", "encoder.", "branch.", TRAINING_PREFIX)))
    if stray:
        raise CheckpointError(f"{source}: unexpected tensors {stray[:8]}")
    return EditingModel(generator, encoder, branch).eval()
