"""The model_id: a SHA-256 naming one model's configuration and weights (and the fingerprint
of one stage's graph, for exports that share components).

Written into the manifest and into every graph's metadata, so a runtime can tell which model a
graph came from, and validation refuses to compare a folder against a model it was not
exported from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch

from warpres.models.editor import EditingModel
from warpres.models.encoders import StyleEncoder
from warpres.stages import Stage


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
    _update_tensors(digest, tensors)
    return digest.hexdigest()


def encoder_fingerprint(encoder: StyleEncoder) -> str:
    """Hex SHA-256 over an encoder's config, weights, buffers and `latent_avg`: what its codes of
    given images depend on."""
    digest = hashlib.sha256()
    _update(digest, json.dumps(encoder.config.to_dict(), sort_keys=True, separators=(",", ":")).encode())
    _update_tensors(digest, {**encoder.state_dict(), "latent_avg": encoder.latent_avg})
    return digest.hexdigest()


def _update_tensors(digest: Any, tensors: Mapping[str, torch.Tensor]) -> None:
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        dtype = str(tensor.dtype).removeprefix("torch.")
        _update(digest, json.dumps([name, dtype, list(tensor.shape)]).encode())
        _update(digest, memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))


_STAGE_COMPONENT = {"encoder": "encoder", "synthesis_head": "generator", "synthesis_tail": "generator"}


def stage_fingerprint(model: EditingModel, stage: Stage, inputs: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over what one stage's traced graph depends on: the stage, the config and
    weights of the component computing it (encoder, generator or branch) and the shapes it is
    traced at. Models sharing a component (the demo's three families share E0 and G) share the
    fingerprints of its stages, so one trace serves them all."""
    component = _STAGE_COMPONENT.get(stage.name, "branch")
    module = {"encoder": model.encoder, "generator": model.generator, "branch": model.branch}[component]
    digest = hashlib.sha256()
    header = {"stage": [stage.name, stage.inputs, stage.outputs], "component": model_config(model)[component],
              "shapes": {name: list(inputs[name].shape) for name in stage.inputs}}
    _update(digest, json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    tensors = dict(module.state_dict())
    if component == "encoder":
        tensors["latent_avg"] = model.encoder.latent_avg
    _update_tensors(digest, tensors)
    return digest.hexdigest()
