"""The plugin flavour's custom nodes: their ONNX contract, export translation, audit and a reference runner.

The plugin flavour is the portable graph with every modulated convolution and every flow warp
as one node that TensorRT's ONNX parser hands to our plugins (plugins/): the node's op_type is
the plugin's name, `plugin_namespace` / `plugin_version` select the creator, and the other
attributes become its PluginFields (ints -> INT32). The ops are registered as ONNX schemas in
the `warpres` domain, so onnx.checker verifies every node's inputs, types and attributes.

ONNX Runtime cannot run these nodes; `ReferenceRunner` runs a plugin-flavour graph with ONNX's
reference evaluator and the plugin ops supplied as kernels: PyTorch's references (export
validation) or the plugins' own C++ math (tests), so a plugin graph is checked end to end on CPU.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import torch
from onnx.defs import OpSchema

from warpres.errors import ExportError
from warpres.runtime.tensorrt.plugin_library import PLUGIN_NAMES, PLUGIN_NAMESPACE, PLUGIN_VERSION

PLUGIN_DOMAIN = "warpres"
PLUGIN_OPSET_VERSION = 1
PLUGIN_FIELDS = ("plugin_namespace", "plugin_version")  # read by the parser, not passed to the plugin


@dataclass(frozen=True)
class PluginOp:
    """One plugin node type: the op_type (= plugin name), its inputs and its integer attributes."""

    name: str
    inputs: tuple[str, ...]
    int_attributes: tuple[str, ...]
    doc: str


MODULATED_CONV = PluginOp("ModulatedConv", ("x", "weight", "styles"), ("demodulate", "up", "padding"),
                          "StyleGAN2 modulated (and demodulated) convolution, 2x anti-aliased up optional; "
                          "plugins/modulatedConvPlugin")
FLOW_WARP = PluginOp("FlowWarp", ("features", "flow"), (),
                     "backward bilinear warp by a pixel flow, zeros outside; plugins/flowWarpPlugin")
PLUGIN_OPS: Mapping[str, PluginOp] = {op.name: op for op in (MODULATED_CONV, FLOW_WARP)}
assert tuple(PLUGIN_OPS) == PLUGIN_NAMES, "the ONNX ops and the library's plugins must be the same set"


def register_schemas() -> None:
    """Register the plugin ops with ONNX (once per process)."""
    for op in PLUGIN_OPS.values():
        if onnx.defs.has(op.name, PLUGIN_DOMAIN):
            continue
        attributes = [OpSchema.Attribute(name, OpSchema.AttrType.INT, name) for name in op.int_attributes]
        attributes += [OpSchema.Attribute(name, OpSchema.AttrType.STRING, name) for name in PLUGIN_FIELDS]
        onnx.defs.register_schema(OpSchema(
            op.name, PLUGIN_DOMAIN, PLUGIN_OPSET_VERSION, op.doc,
            inputs=[OpSchema.FormalParameter(name, "T") for name in op.inputs],
            outputs=[OpSchema.FormalParameter("output", "T")],
            type_constraints=[("T", ["tensor(float)", "tensor(float16)"], "the plugins run FP32 and FP16")],
            attributes=attributes))


def translation_table() -> dict[Any, Callable[..., Any]]:
    """torch.onnx.export's custom_translation_table: the torch custom ops -> one plugin node each."""
    import onnxscript

    import warpres.models.flow  # noqa: F401  (registers warpres::flow_warp)
    import warpres.models.modulated_conv  # noqa: F401  (registers warpres::modulated_conv)

    register_schemas()
    plugins = onnxscript.values.Opset(PLUGIN_DOMAIN, PLUGIN_OPSET_VERSION)

    def modulated_conv(x: Any, weight: Any, styles: Any, demodulate: bool, up: int, padding: int) -> Any:
        return plugins.ModulatedConv(x, weight, styles, demodulate=int(demodulate), up=up, padding=padding,
                                     plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)

    def flow_warp(features: Any, flow: Any) -> Any:
        return plugins.FlowWarp(features, flow, plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)

    return {torch.ops.warpres.modulated_conv.default: modulated_conv, torch.ops.warpres.flow_warp.default: flow_warp}


def plugin_node_counts(proto: onnx.ModelProto) -> Counter[str]:
    """How many nodes of each plugin op the graph has."""
    return Counter(node.op_type for node in proto.graph.node if node.domain == PLUGIN_DOMAIN)


def audit_plugin_node(node: onnx.NodeProto, constants: set[str], where: str) -> None:
    """Raise ExportError unless `node` is a plugin node the C++ plugins accept."""
    label = f"{where}: node {node.name or '?'} ({node.domain}::{node.op_type})"
    op = PLUGIN_OPS.get(node.op_type) if node.domain == PLUGIN_DOMAIN else None
    if op is None:
        raise ExportError(f"{label} is neither a standard ONNX op nor one of the warpres plugins "
                          f"{sorted(PLUGIN_OPS)}")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    expected = {"plugin_namespace": PLUGIN_NAMESPACE.encode(), "plugin_version": PLUGIN_VERSION.encode()}
    if any(attributes.get(name) != value for name, value in expected.items()) or \
            set(attributes) != set(expected) | set(op.int_attributes):
        raise ExportError(f"{label} has attributes {sorted(attributes)}; the plugin takes "
                          f"{sorted(op.int_attributes)} plus {PLUGIN_FIELDS} = {PLUGIN_NAMESPACE}, {PLUGIN_VERSION}")
    if op is MODULATED_CONV and node.input[1] not in constants:
        raise ExportError(f"{label} has a runtime weight {node.input[1]!r}; modulated-conv weights are constants")


class PluginKernels(Protocol):
    """The plugin ops on float32 numpy arrays."""

    def modulated_conv(self, x: np.ndarray, weight: np.ndarray, styles: np.ndarray, *, demodulate: int, up: int,
                       padding: int) -> np.ndarray: ...

    def flow_warp(self, features: np.ndarray, flow: np.ndarray) -> np.ndarray: ...


class TorchKernels:
    """The plugin ops as the torch custom ops the plugin nodes were traced from (their eager
    implementations are the PyTorch references)."""

    def modulated_conv(self, x: np.ndarray, weight: np.ndarray, styles: np.ndarray, *, demodulate: int, up: int,
                       padding: int) -> np.ndarray:
        import warpres.models.modulated_conv  # noqa: F401  (registers warpres::modulated_conv)

        with torch.no_grad():
            return torch.ops.warpres.modulated_conv(torch.tensor(x), torch.tensor(weight), torch.tensor(styles),
                                                    bool(demodulate), up, padding).numpy()

    def flow_warp(self, features: np.ndarray, flow: np.ndarray) -> np.ndarray:
        import warpres.models.flow  # noqa: F401  (registers warpres::flow_warp)

        with torch.no_grad():
            return torch.ops.warpres.flow_warp(torch.tensor(features), torch.tensor(flow)).numpy()


def _torch_conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, *, group: int = 1,
                pads: Sequence[int] = (0, 0, 0, 0), strides: Sequence[int] = (1, 1),
                dilations: Sequence[int] = (1, 1)) -> np.ndarray:
    top, left, bottom, right = pads  # ONNX order: begins, then ends
    with torch.no_grad():
        padded = torch.nn.functional.pad(torch.tensor(x), (left, right, top, bottom))
        out = torch.nn.functional.conv2d(padded, torch.tensor(weight),
                                         None if bias is None else torch.tensor(bias), stride=tuple(strides),
                                         dilation=tuple(dilations), groups=group)
    return out.numpy()


class ReferenceRunner:
    """Runs one plugin-flavour graph on CPU: ONNX's reference evaluator for the standard ops (its
    2-D Conv replaced by PyTorch's: same math, ~100x faster), `kernels` for the plugin nodes."""

    def __init__(self, graph: str | os.PathLike[str] | onnx.ModelProto, kernels: PluginKernels | None = None) -> None:
        from onnx.reference import ReferenceEvaluator
        from onnx.reference.op_run import OpRun

        register_schemas()
        kernels = kernels or TorchKernels()
        proto = graph if isinstance(graph, onnx.ModelProto) else onnx.load(str(graph))

        class ModulatedConv(OpRun):
            op_domain = PLUGIN_DOMAIN

            def _run(self, x, weight, styles, demodulate=None, up=None, padding=None, plugin_namespace=None,
                     plugin_version=None):
                return (kernels.modulated_conv(x, weight, styles, demodulate=demodulate, up=up, padding=padding),)

        class FlowWarp(OpRun):
            op_domain = PLUGIN_DOMAIN

            def _run(self, features, flow, plugin_namespace=None, plugin_version=None):
                return (kernels.flow_warp(features, flow),)

        class Conv(OpRun):
            def _run(self, x, weight, bias=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
                     pads=None, strides=None):
                if x.ndim != 4 or (auto_pad not in (None, "NOTSET", b"NOTSET")):
                    raise ExportError(f"Conv on {x.ndim}-D input with auto_pad {auto_pad!r} in a plugin-flavour graph")
                return (_torch_conv(x, weight, bias, group=group or 1, pads=pads or (0, 0, 0, 0),
                                    strides=strides or (1, 1), dilations=dilations or (1, 1)),)

        self._evaluator = ReferenceEvaluator(proto, new_ops=[ModulatedConv, FlowWarp, Conv])
        self.input_names = list(self._evaluator.input_names)
        self.output_names = list(self._evaluator.output_names)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(out) for out in self._evaluator.run(None, dict(feeds))]
