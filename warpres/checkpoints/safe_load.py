"""Reading checkpoint files as data, never as code, and checking them against a module.

Official `.pt`/`.pth` files are pickles. `torch.load(weights_only=True)` rebuilds only tensors
and plain containers; the one non-container object official files hold (argparse.Namespace in
rosinality's `args`) is allow-listed. Anything else, a pickled function above all, is refused.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from warpres.errors import CheckpointError

SAFE_GLOBALS = [argparse.Namespace]
_SHOWN_KEYS = 8
_FORBIDDEN_GLOBAL = re.compile(r"GLOBAL (\S+)")


def load_torch_checkpoint(path: str | Path) -> Mapping:
    """Load a PyTorch checkpoint on the CPU without executing any pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = _FORBIDDEN_GLOBAL.search(str(exc))
        culprit = f"it references {found.group(1)}" if found else "it holds objects other than tensors and plain data"
        raise CheckpointError(f"{path}: refused to load: {culprit}; checkpoints are data, never code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of tensors at the top level, found {type(data).__name__}")
    return data


def load_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file on the CPU, a CheckpointError naming it if it is unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_first_line(exc)})") from None


def load_state_file(path: str | Path) -> Mapping:
    """What a checkpoint file holds: a ``.safetensors`` file's tensors, else a PyTorch checkpoint's
    data (loaded without executing code)."""
    return load_safetensors(path) if Path(path).suffix == ".safetensors" else load_torch_checkpoint(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def require_state_dict(value: object, source: str) -> Mapping[str, torch.Tensor]:
    """`value` if it is a dict of name -> tensor, else a CheckpointError naming `source`."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                 for k, v in value.items()):
        raise CheckpointError(f"{source}: expected a state dict (names -> tensors), found {type(value).__name__}")
    return value


def require_keys(data: Mapping, keys: list[str], source: str) -> None:
    missing = [k for k in keys if k not in data]
    if missing:
        raise CheckpointError(f"{source}: missing {missing}; found keys {sorted(map(str, data))[:_SHOWN_KEYS]}")


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load `state` into `module`, or raise naming the first missing, unexpected and mis-shaped keys."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_type = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    mismatched = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and k not in wrong_type and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:_SHOWN_KEYS]}" + (f" (+{len(missing) - _SHOWN_KEYS} more)"
                                                                    if len(missing) > _SHOWN_KEYS else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:_SHOWN_KEYS]}" + (
            f" (+{len(unexpected) - _SHOWN_KEYS} more)" if len(unexpected) > _SHOWN_KEYS else ""))
    if wrong_type:
        problems.append(f"non-tensor values at {wrong_type[:_SHOWN_KEYS]}")
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:_SHOWN_KEYS]))
    if problems:
        raise CheckpointError(f"{source}: does not match the {type(module).__name__}: " + "; ".join(problems))
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if nonfinite:
        raise CheckpointError(f"{source}: non-finite values (NaN/inf) in {nonfinite[:_SHOWN_KEYS]}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
