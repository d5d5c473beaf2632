"""Checkpoint loading for every format our users have, without executing anything in them.

`load_checkpoint(path)` recognises the format from the file's contents:
  - warpres safetensors (ours)                 -> the saved family
  - StyleRes `styleres_ffhq.pth`               -> StyleRes (e4e + NVlabs generator + branch)
  - e4e / pSp `.pt`                            -> plain inversion (encoder + generator)
  - rosinality `.pt` with `g_ema`              -> generator only
  - NVlabs-layout generator state dict (`.pt`, or {'G_ema': state dict}) -> generator only
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from warpres.checkpoints.native import load_model, save_model
from warpres.checkpoints.nvlabs import load_nvlabs_generator
from warpres.checkpoints.official import is_e4e_or_psp, is_styleres, load_e4e_or_psp, load_styleres
from warpres.checkpoints.rosinality import load_rosinality_generator
from warpres.checkpoints.safe_load import load_torch_checkpoint
from warpres.errors import CheckpointError
from warpres.models.editor import EditingModel

__all__ = ["load_checkpoint", "save_model", "load_model"]

SAFETENSORS_SUFFIX = ".safetensors"


def load_checkpoint(path: str | Path) -> EditingModel:
    """Load any supported checkpoint as an EditingModel (on the CPU, in eval mode)."""
    path = Path(path)
    source = str(path)
    if path.suffix == SAFETENSORS_SUFFIX:
        return load_model(path)
    if path.suffix == ".pkl":
        raise CheckpointError(f"{source}: NVlabs network pickles contain code and are never loaded; save the "
                              "generator's state_dict() with torch.save and load that instead")
    data = load_torch_checkpoint(path)
    if is_styleres(data):
        return load_styleres(data, source)
    if is_e4e_or_psp(data):
        return load_e4e_or_psp(data, source)
    if isinstance(data.get("g_ema"), Mapping):
        return EditingModel(load_rosinality_generator(data["g_ema"], f"{source}[g_ema]"))
    if isinstance(data.get("G_ema"), Mapping):
        return EditingModel(load_nvlabs_generator(data["G_ema"], f"{source}[G_ema]"))
    if any(str(k).startswith(("mapping.", "synthesis.")) for k in data):
        return EditingModel(load_nvlabs_generator(data, source))
    raise CheckpointError(f"{source}: unrecognised checkpoint (top-level keys {sorted(map(str, data))[:8]}); "
                          "expected a warpres .safetensors, StyleRes .pth, e4e/pSp .pt, rosinality .pt "
                          "(g_ema) or an NVlabs generator state dict")
