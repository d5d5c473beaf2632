"""FP16 stage graphs for TensorRT: ModelOpt AutoCast with StyleGAN2's precision-critical math kept in FP32.

TensorRT 11 and TensorRT-RTX build strongly typed networks only (no FP16 builder flag), so an FP16
engine comes from an ONNX graph whose tensors are already FP16. AutoCast rewrites the graph:
initializers become FLOAT16, and Cast nodes go in around the nodes it keeps in FP32 and at the
graph's inputs and outputs (`keep_io_types`: stage tensors stay float32, as the manifest says).

Kept in FP32 (what goes wrong in FP16, on the exported graphs of conftest's tiny WarpRes model):
- the style affine (Gemm) and the demodulation sum: Pow -> MatMul (squared styles times squared
  weights, summed over input channels and taps) -> Sqrt -> Reciprocal. At FFHQ width the sum runs
  over 512 x 9 terms; FP16 accumulation and its 11-bit mantissa put the error straight into every
  output channel's scale. ReduceSum is the same sum in exporters that do not turn it into a MatMul.
- Clip: the conv_clamp at +-256 must compare in the precision the activations were trained in.
- GridSample and the grid math feeding it (flow -> Gather / Add / Div / Sub / Unsqueeze / Concat):
  pixel coordinates near 64 have an FP16 spacing of 1/32 px, i.e. a visible warp error.
  Found by walking back from each GridSample's grid input through elementwise and layout ops
  (`grid_math_nodes`), so node names from the exporter are never hard-coded.

`compare_fp16` measures each FP16 graph against its FP32 graph on ONNX Runtime (CPU) on the
activations the stage meets in deployment (`warpres.export.activations`).
"""

from __future__ import annotations

import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from warpres.errors import BackendError, ExportError
from warpres.export.activations import Activations
from warpres.export.specs import Tolerance
from warpres.export.validation import OutputError, ValidationReport, ort_session
from warpres.files import atomic_path
from warpres.stages import ModelFolder, stage_feeds

logger = logging.getLogger(__name__)

FP32_OP_TYPES = ("Gemm", "MatMul", "Pow", "ReduceSum", "Sqrt", "Reciprocal", "Clip", "GridSample")
# Ops that may sit between a flow tensor and GridSample's grid: elementwise arithmetic and layout.
# The walk back from the grid stops at anything else (Conv, Resize, ...): those are the flow net.
GRID_MATH_OP_TYPES = frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Gather", "Slice", "Split", "Unsqueeze",
                                "Squeeze", "Reshape", "Transpose", "Concat", "Cast"})

FP16_TOLERANCE = Tolerance(atol=1e-3, rtol=1e-2, reason="FP16 graph vs its FP32 graph: 11-bit mantissa (4.9e-4 "
                                                       "relative per op) accumulated over a stage")

_INSTALL_HINT = "pip install 'warpres[fp16]' (ModelOpt AutoCast and the ONNX tools it uses)"


@dataclass(frozen=True)
class Fp16Report:
    """One AutoCast conversion: which nodes stayed FP32 and why (op type or grid math)."""

    source: Path
    destination: Path
    nodes: int  # nodes of the source graph
    kept_op_types: dict[str, int]  # op type -> how many nodes of it stayed FP32 by op type
    kept_grid_math: tuple[str, ...]  # names of the nodes computing a GridSample grid
    seconds: float

    @property
    def kept(self) -> int:
        return sum(self.kept_op_types.values()) + len(self.kept_grid_math)


def grid_math_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes that compute a GridSample grid: walking back from each GridSample's
    second input through GRID_MATH_OP_TYPES producers, stopping at graph inputs, initializers and
    other op types."""
    producer = {output: node for node in graph.node for output in node.output}
    found: dict[str, None] = {}  # ordered set
    pending = [node.input[1] for node in graph.node if node.op_type == "GridSample"]
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.op_type not in GRID_MATH_OP_TYPES or node.name in found:
            continue
        if not node.name:
            raise ExportError(f"a {node.op_type} node computing a GridSample grid has no name; AutoCast "
                              f"excludes nodes by name")
        found[node.name] = None
        pending.extend(name for name in node.input if name)
    return list(found)


@contextmanager
def _quiet_modelopt() -> Iterator[None]:
    """ModelOpt logs every node it skips at INFO on its own handler; keep only its errors."""
    loggers = [logging.getLogger(name) for name in ["modelopt.onnx", *logging.root.manager.loggerDict]
               if name.startswith("modelopt.onnx")]
    levels = [(log, log.level) for log in loggers]
    try:
        for log in loggers:
            log.setLevel(logging.ERROR)
        yield
    finally:
        for log, level in levels:
            log.setLevel(level)


def _autocast():
    try:
        from modelopt.onnx.autocast import convert_to_mixed_precision
    except ImportError as exc:
        raise BackendError(f"FP16 graphs need NVIDIA ModelOpt's AutoCast ({exc}); {_INSTALL_HINT}") from None
    return convert_to_mixed_precision


def convert_fp16(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 op_types_to_exclude: Iterable[str] = FP32_OP_TYPES, keep_grid_math: bool = True) -> Fp16Report:
    """Write an FP16 copy of the graph `src` to `dst` (atomically) with float32 inputs and outputs;
    the op types in `op_types_to_exclude` and (with `keep_grid_math`) the grid math stay FP32.

    AutoCast also keeps FP32 any node whose values exceed FP16-safe magnitudes on its own random
    reference inputs in [-1, 1] (its data_max / init_max defaults).
    """
    convert_to_mixed_precision = _autocast()
    src, dst = Path(src), Path(dst)
    op_types = tuple(op_types_to_exclude)
    graph = onnx.load(str(src), load_external_data=False).graph
    grid_nodes = grid_math_nodes(graph) if keep_grid_math else []
    start = time.perf_counter()
    try:
        with _quiet_modelopt():
            converted = convert_to_mixed_precision(
                onnx_path=str(src), low_precision_type="fp16", keep_io_types=True, providers=["cpu"],
                op_types_to_exclude=list(op_types),
                nodes_to_exclude=[f"^{re.escape(name)}$" for name in grid_nodes])
    except Exception as exc:  # AutoCast raises plain exceptions of many kinds
        raise ExportError(f"{src}: FP16 conversion failed ({type(exc).__name__}: {exc})") from exc
    seconds = time.perf_counter() - start
    with atomic_path(dst) as tmp:
        onnx.save(converted, str(tmp))
    counts: dict[str, int] = {}
    for node in graph.node:
        if node.op_type in op_types:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return Fp16Report(src, dst, len(graph.node), counts, tuple(grid_nodes), seconds)


def compare_fp16(folder: ModelFolder, fp16_graphs: Mapping[str, str | os.PathLike[str]],
                 activations: Mapping[int, Activations], tolerance: Tolerance = FP16_TOLERANCE) -> ValidationReport:
    """Per stage in `fp16_graphs` (stage name -> FP16 graph), output and batch: max |fp16 - fp32|
    and max |fp32|, both graphs run by ONNX Runtime (CPU) on the stage's inputs picked from
    `activations` (batch -> `pipeline_activations(model, batch, seed)` of the exported model).
    The report is not raised; `report.ok` says whether every output is within `tolerance`."""
    errors = []
    for stage in folder.manifest.stages:
        if stage.name not in fp16_graphs:
            continue
        reference, candidate = ort_session(folder.graph_path(stage)), ort_session(fp16_graphs[stage.name])
        for batch, acts in activations.items():
            feeds = {name: np.ascontiguousarray(value.numpy())
                     for name, value in stage_feeds(folder.manifest.family, stage, acts).items()}
            for name, want, got in zip(stage.outputs, reference.run(None, feeds), candidate.run(None, feeds),
                                       strict=True):
                finite = bool(np.all(np.isfinite(got)))
                max_abs = float(np.max(np.abs(got.astype(np.float64) - want))) if finite else math.inf
                errors.append(OutputError(stage.name, name, batch, max_abs, float(np.max(np.abs(want))), tolerance))
    return ValidationReport(tuple(errors))
