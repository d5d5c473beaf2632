"""The ops the plugin flavour exports as single TensorRT plugin nodes (plugins/, ARCHITECTURE §2).

Inside `plugin_nodes()`, `modulated_conv2d` and `warp` call the torch custom ops
`warpres::modulated_conv` and `warpres::flow_warp` instead of their decomposed forms. The custom
ops compute exactly the reference (so a model runs the same either way) but reach the ONNX
exporter as one opaque call each, which `warpres.export.plugin_graph` translates into one
`ModulatedConv` / `FlowWarp` node for the C++ plugins. Outside the context nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_EMIT_PLUGIN_NODES: ContextVar[bool] = ContextVar("warpres_emit_plugin_nodes", default=False)


def plugin_nodes_requested() -> bool:
    return _EMIT_PLUGIN_NODES.get()


@contextmanager
def plugin_nodes(enabled: bool = True) -> Iterator[None]:
    """Route modulated convolutions and flow warps through the plugin custom ops (`enabled`)."""
    token = _EMIT_PLUGIN_NODES.set(enabled)
    try:
        yield
    finally:
        _EMIT_PLUGIN_NODES.reset(token)
