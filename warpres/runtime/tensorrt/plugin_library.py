"""The warpres TensorRT plugin library (plugins/, libwarpres_plugins.so): its plugins and loading it.

The plugin-flavour graphs (warpres.export.plugin_graph) hold one node per modulated convolution
and flow warp; TensorRT's ONNX parser finds their creators by name, version and namespace once
the library is loaded into the plugin registry. Engines built from them embed the library.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

from warpres.errors import BackendError

PLUGIN_NAMESPACE = "warpres"
PLUGIN_VERSION = "1"
PLUGIN_NAMES = ("ModulatedConv", "FlowWarp")
PLUGIN_LIBRARY_ENV = "WARPRES_PLUGIN_LIBRARY"
PLUGIN_BUILD_HINT = ("build it from the repository with `cmake -S . -B build -DTENSORRT_INCLUDE_DIR=<TensorRT>/include "
                     "&& cmake --build build` (plugins/README.md)")

_loaded: dict[Path, Any] = {}


def load_plugin_library(trt: ModuleType, path: str | os.PathLike[str]) -> Path:
    """Register the creators of the plugin library at `path` with TensorRT's plugin registry (once
    per process: the registry refuses a second copy of a creator). Returns the resolved path."""
    path = Path(path).resolve()
    if not path.is_file():
        raise BackendError(f"{path}: no plugin library there; {PLUGIN_BUILD_HINT}")
    if path not in _loaded:
        handle = trt.get_plugin_registry().load_library(str(path))
        if handle is None:
            raise BackendError(f"{path}: TensorRT could not load the plugin library (it must export getCreators; "
                               f"was it built against this TensorRT's headers?)")
        _loaded[path] = handle
    return path


def registered_plugins(trt: ModuleType) -> list[str]:
    """Which of the warpres plugins TensorRT's registry has a creator for."""
    registry = trt.get_plugin_registry()
    return [name for name in PLUGIN_NAMES if registry.get_creator(name, PLUGIN_VERSION, PLUGIN_NAMESPACE)]
