"""One stage to one clean ONNX graph: trace, fold constants, audit, stamp, check.

Exporter: torch 2.13's torch.export-based `torch.onnx.export(dynamo=True)`. Measured on the
tiny models, the deprecated TorchScript exporter (dynamo=False, opset 17) exports the encoder and
the branch stages but not synthesis_head / synthesis_tail, with or without dynamic axes: the
tracer records `upfirdn2d`'s depthwise filter, expanded to `x.shape[1]`, as a runtime value and
refuses "convolution for kernel of unknown shape". torch.export keeps only the batch symbolic,
so every graph gets one `batch` axis and static sizes elsewhere, and no TracerWarnings; it
lowers bilinear resizes to Resize-18, hence opset 18.

Portable flavour: standard-domain ONNX ops only; modulated convs decomposed (input scale ->
Conv with a constant weight -> output scale); the warp as GridSample; constant noise; no
training-only or random ops. `audit_graph` asserts all of it on the final graph.

Plugin flavour: the same, except that modulated convs and warps are single plugin nodes in the
`warpres` domain (warpres.export.plugin_graph), traced through the models' custom ops.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch

from warpres.errors import ExportError
from warpres.export import plugin_graph
from warpres.models.editor import EditingModel
from warpres.models.plugin_ops import plugin_nodes
from warpres.models.subgraphs import stage_module
from warpres.stages import BATCH_AXIS, FLAVOURS, PLUGIN, PORTABLE, Stage, TensorSpec

OPSET = 18  # the torch.export-based exporter lowers bilinear resizes to Resize-18; 18 runs everywhere we deploy
MIN_OPSET = 18
EXPORTER = "torch.onnx.export(dynamo=True)"
METADATA_PREFIX = "warpres."
FOLD_LIMIT = 2**23  # elements; above the largest weight (512 x 512 x 3 x 3 = 2.4M)
PROTOBUF_LIMIT = 2**31 - 1  # bytes; a single ModelProto cannot be serialised past it

STANDARD_DOMAINS = frozenset({"", "ai.onnx"})
TRAINING_ONLY_OPS = frozenset({"Dropout", "Gradient", "Momentum", "Adagrad", "Adam"})
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                        "Bernoulli", "Multinomial"})
CONSTANT_WEIGHT_OPS = frozenset({"Conv", "ConvTranspose"})


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's expected, harmless chatter, and nothing else."""
    # "torchvision is not installed. Skipping torchvision::nms" (x4, WARNING), and the optimizer
    # passes' per-node INFO notes: chatter, not problems.
    loggers = {name: logging.getLogger(name) for name in
               ("torch.onnx._internal.exporter._registration", "onnxscript", "onnx_ir")}
    levels = {name: logger.level for name, logger in loggers.items()}
    with warnings.catch_warnings():
        # torch 2.13 internals deep-copy pytree specs through a deprecated isinstance check.
        warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                                category=FutureWarning)
        # Every input shares the one `batch` Dim on purpose; the exporter notes it keeps one name.
        warnings.filterwarnings("ignore", message=r"# The axis name: batch will not be used", category=UserWarning)
        for logger in loggers.values():
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, logger in loggers.items():
                logger.setLevel(levels[name])


def trace_stage(model: EditingModel, stage: Stage, inputs: Mapping[str, torch.Tensor],
                opset: int = OPSET, flavour: str = PORTABLE) -> onnx.ModelProto:
    """Export `stage` of `model` traced on `inputs` (batch >= 2, stage order) with a dynamic batch,
    as the portable or the plugin flavour."""
    if flavour not in FLAVOURS:
        raise ExportError(f"flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    plugins = flavour == PLUGIN
    module = stage_module(model, stage)
    if plugins:
        _check_plugin_filters(module, stage)
    args = tuple(inputs[name] for name in stage.inputs)
    if args[0].shape[0] < 2:
        raise ExportError(f"{stage.name}: trace with a batch of at least 2 (a batch of 1 specialises the axis)")
    batch = torch.export.Dim(BATCH_AXIS)
    try:
        # no autograd bookkeeping while tracing: ~10% faster
        with _quiet_exporter(), torch.no_grad(), plugin_nodes(plugins):
            # dynamo=True: the legacy tracer cannot give the synthesis graphs a dynamic batch (module doc)
            program = torch.onnx.export(
                module, args, dynamo=True, opset_version=opset, optimize=False, verbose=False,
                input_names=list(stage.inputs), output_names=list(stage.outputs),
                # forward(*inputs): one entry for the varargs tuple, batch axis 0 of each tensor
                dynamic_shapes=(tuple({0: batch} for _ in stage.inputs),),
                custom_translation_table=plugin_graph.translation_table() if plugins else None)
    except Exception as exc:  # the exporter raises many types; the stage name is what the user needs
        raise ExportError(f"{stage.name}: torch.onnx.export failed ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    fold_constants(program.model, stage)
    return program.model_proto


def _check_plugin_filters(module: torch.nn.Module, stage: Stage) -> None:
    """The ModulatedConv plugin hard-codes StyleGAN2's binomial upsampling filter."""
    from warpres.models.modulated_conv import is_binomial_filter

    for name, buffer in module.named_buffers():
        if name.endswith("resample_filter") and not is_binomial_filter(buffer):
            raise ExportError(f"{stage.name}: {name} is not the binomial [1, 3, 3, 1] filter the ModulatedConv "
                              f"plugin implements; export the portable flavour")


def fold_constants(model_ir: Any, stage: Stage) -> None:
    """Fold weight-only subgraphs the exporter left (its optimizer skips inputs over 8192
    elements): the demodulation energies sum_k W^2 become (O, I) constants and the transposed
    conv weights are stored transposed. On the exporter's IR, in place: no copy of the weights.

    (onnxslim folds the same and fuses 2-3 more Adds per synthesis graph, but converting the
    1 GB e4e encoder graph took it 37 s and 6 GB of extra peak memory.)
    """
    import onnxscript.optimizer

    try:
        with _quiet_exporter():
            onnxscript.optimizer.optimize(model_ir, input_size_limit=FOLD_LIMIT, output_size_limit=FOLD_LIMIT)
    except Exception as exc:
        raise ExportError(f"{stage.name}: constant folding failed ({type(exc).__name__}: {exc})") from exc


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those of subgraphs (If / Loop / Scan bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                yield from _nodes(subgraph)


def audit_graph(proto: onnx.ModelProto, stage: Stage, opset: int, flavour: str = PORTABLE) -> None:
    """Raise ExportError unless the graph is of its flavour: standard ops at `opset` (plus, in the
    plugin flavour, well-formed warpres plugin nodes), no functions, no training-only or random
    ops, constant Conv weights, exactly the stage's tensors with a `batch` axis 0 and static other
    axes."""
    where = f"{stage.name}.onnx"
    imports = {entry.domain: entry.version for entry in proto.opset_import}
    expected = {"": opset}
    if flavour == PLUGIN:
        expected[plugin_graph.PLUGIN_DOMAIN] = plugin_graph.PLUGIN_OPSET_VERSION
    standard = imports.get("", imports.get("ai.onnx"))
    others = {domain: version for domain, version in imports.items() if domain not in STANDARD_DOMAINS}
    if standard != opset or any(expected.get(domain) != version for domain, version in others.items()):
        raise ExportError(f"{where}: imports opsets {imports}; the {flavour} flavour imports {expected} at most")
    if proto.functions:
        raise ExportError(f"{where}: contains local functions {[f.name for f in proto.functions]}; "
                          f"exported graphs inline everything")
    constants = {init.name for init in proto.graph.initializer}
    constants |= {out for node in proto.graph.node if node.op_type == "Constant" for out in node.output}
    for node in _nodes(proto.graph):
        label = f"{where}: node {node.name or '?'} ({node.domain or 'ai.onnx'}::{node.op_type})"
        if node.domain not in STANDARD_DOMAINS:
            if flavour != PLUGIN:
                raise ExportError(f"{label} is not a standard ONNX op; the portable flavour allows standard ops only")
            plugin_graph.audit_plugin_node(node, constants, where)
            continue
        if node.op_type in TRAINING_ONLY_OPS:
            raise ExportError(f"{label} is training-only; export the model in eval mode")
        if node.op_type == "BatchNormalization":
            training = any(a.name == "training_mode" and a.i for a in node.attribute)
            if training or len([o for o in node.output if o]) > 1:
                raise ExportError(f"{label} is in training mode; export the model in eval mode")
        if node.op_type in RANDOM_OPS:
            raise ExportError(f"{label} draws random numbers; noise must be a constant in exported graphs")
        if node.op_type in CONSTANT_WEIGHT_OPS and node.input[1] not in constants:
            raise ExportError(f"{label} has a runtime weight {node.input[1]!r}; the portable flavour needs "
                              f"decomposed modulated convs (fused_modconv=False) with constant weights")
    _check_io(proto, stage)


def _dims(value: onnx.ValueInfoProto) -> tuple[int | str, ...]:
    return tuple(d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else "?")
                 for d in value.type.tensor_type.shape.dim)


def _check_io(proto: onnx.ModelProto, stage: Stage) -> None:
    where = f"{stage.name}.onnx"
    initializers = {init.name for init in proto.graph.initializer}
    inputs = tuple(v.name for v in proto.graph.input if v.name not in initializers)
    outputs = tuple(v.name for v in proto.graph.output)
    if (inputs, outputs) != (stage.inputs, stage.outputs):
        raise ExportError(f"{where}: tensors {list(inputs)} -> {list(outputs)}; the stage contract is "
                          f"{list(stage.inputs)} -> {list(stage.outputs)}")
    for value in (*proto.graph.input, *proto.graph.output):
        if value.name in initializers:
            continue
        dims = _dims(value)
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            dtype = onnx.TensorProto.DataType.Name(value.type.tensor_type.elem_type)
            raise ExportError(f"{where}: {value.name} is {dtype}; every stage tensor is float32")
        if not dims or dims[0] != BATCH_AXIS or not all(isinstance(d, int) and d > 0 for d in dims[1:]):
            raise ExportError(f"{where}: {value.name} has shape {dims}; expected ({BATCH_AXIS!r}, static sizes...)")


def check_graph_file(path: str | Path, stage: Stage) -> None:
    """onnx.checker (full check) and strict shape inference, on the file: the C++ side reads it,
    so a 1 GB graph is not copied through Python twice. The inferred shapes are written back."""
    plugin_graph.register_schemas()  # plugin nodes are checked against their schemas
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path), check_type=True, strict_mode=True,
                                               data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"{stage.name}.onnx: fails the ONNX checker / shape inference: {exc}") from exc


def write_graph(proto: onnx.ModelProto, path: str | Path, stage: Stage, opset: int,
                metadata: Mapping[str, str], flavour: str = PORTABLE) -> dict[str, TensorSpec]:
    """Audit, stamp `warpres.*` metadata, save as one self-contained file, then check the file.
    Returns the stage's tensor specs as the graph declares them."""
    audit_graph(proto, stage, opset, flavour)
    stamp_metadata(proto, metadata)
    size = proto.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise ExportError(f"{stage.name}.onnx: {size / 2**30:.2f} GiB is over protobuf's 2 GiB limit; "
                          f"exported graphs store weights inside the graph file (external data is not "
                          f"supported by the manifest)")
    io = graph_io(proto, stage)
    onnx.save_model(proto, str(path), save_as_external_data=False)
    check_graph_file(path, stage)
    return io


def stamp_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    """Set `warpres.<key>` metadata_props (replacing earlier warpres entries, keeping others)."""
    kept = [(p.key, p.value) for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    for key, value in [*kept, *((METADATA_PREFIX + k, v) for k, v in metadata.items())]:
        proto.metadata_props.add(key=key, value=value)


def graph_io(proto: onnx.ModelProto, stage: Stage) -> dict[str, TensorSpec]:
    """Every input and output of the stage: TensorSpec(("batch", ...), "float32")."""
    values = {v.name: v for v in (*proto.graph.input, *proto.graph.output)}
    return {name: TensorSpec(_dims(values[name]), "float32") for name in (*stage.inputs, *stage.outputs)}
