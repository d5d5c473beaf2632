"""The model_id: a SHA-256 naming one model's configuration and weights.

Written into the manifest and into every graph's metadata, so a runtime can tell which model a
graph came from, and validation refuses to compare a folder against a model it was not
exported from.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch

from warpres.models.editor import EditingModel


def model_config(model: EditingModel) -> dict[str, Any]:
    """The component configs as JSON: {"generator": ..., "encoder": ... | None, "branch": ... | None}."""
    return {
        "generator": model.generator.config.to_dict(),
        "encoder": None if model.encoder is None else model.encoder.config.to_dict(),
        "branch": None if model.branch is None else model.branch.config.to_dict(),
    }


def _update(digest: Any, data: bytes | memoryview) -> None:
    """Length-prefixed, so no two different sequences of fields hash alike."""
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def model_id(model: EditingModel) -> str:
    """Hex SHA-256 over the family and config JSON, then every state-dict tensor plus the
    encoder's `latent_avg` (kept out of the state dict) by sorted name: name, dtype, shape, bytes.

    Deterministic across runs and processes; any changed weight, buffer or config field changes it.
    """
    digest = hashlib.sha256()
    header = {"family": model.family, **model_config(model)}
    _update(digest, json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    tensors = dict(model.state_dict())
    if model.encoder is not None:
        tensors["encoder.latent_avg"] = model.encoder.latent_avg
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        _update(digest, json.dumps([name, dtype, list(tensor.shape)]).encode())
        _update(digest, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()
