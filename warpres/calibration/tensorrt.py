"""INT8 Q/DQ stage graphs for TensorRT with NVIDIA ModelOpt's ONNX PTQ, measured on ONNX Runtime.

`modelopt.onnx.quantization.quantize` calibrates on the stage's recorded inputs (ONNX Runtime on
the CPU) and writes an ONNX graph with QuantizeLinear / DequantizeLinear pairs, which TensorRT
(and TensorRT-RTX) build as strongly typed INT8 layers; `warpres build --precision int8|mixed`
builds them. The same graphs run on ONNX Runtime, which is how each recipe is measured here.

Recipes (each stage keeps the one with the best lowest final-image PSNR, as for OpenVINO):
- everything ModelOpt quantizes (Conv, Gemm, MatMul, Add, Mul, ...);
- the modulation / demodulation multiplies (every Mul), the grid math feeding GridSample (the
  node walk of warpres.calibration.fp16) and the weighted layers nearest the stage's outputs in
  float. Pixel coordinates near 64 quantized to 8 bits move the warp by whole pixels.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx

from warpres.calibration.accuracy import StageRunner
from warpres.calibration.fp16 import _quiet_modelopt, grid_math_nodes
from warpres.calibration.openvino import Recipe
from warpres.errors import CalibrationError

logger = logging.getLogger(__name__)

WEIGHTED_OP_TYPES = frozenset({"Conv", "Gemm", "MatMul"})
MAX_SAMPLES = 64  # rows per input ModelOpt calibrates on (ONNX Runtime runs them all at once)
RECIPES = (
    Recipe("all quantized", "symmetric", False, False),
    Recipe("outputs, multiplies and grid math in float", "symmetric", True, True),
)
METHODS = {"max": "max", "entropy": "entropy"}


def output_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the weighted nodes nearest each graph output (the first Conv / Gemm / MatMul on
    every path walking back from the outputs)."""
    producer = {output: node for node in graph.node for output in node.output}
    found, seen = set(), set()
    pending = [output.name for output in graph.output]
    while pending:
        node = producer.get(pending.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED_OP_TYPES:
            found.add(node.name)
            continue
        pending.extend(name for name in node.input if name)
    return sorted(found)


def grid_math_sharing_nodes(graph: onnx.GraphProto) -> list[str]:
    """The grid math nodes and every other reader of the tensors they read: ModelOpt puts one Q/DQ
    pair on a tensor for its quantized readers, which the grid math would then read too."""
    grid = set(grid_math_nodes(graph))
    read = {name for node in graph.node if node.name in grid for name in node.input}
    return sorted(grid | {node.name for node in graph.node if read & set(node.input)})


class TensorRTQuantizer:
    """Quantizes one model folder's stages with ModelOpt; runs graphs on ONNX Runtime to measure them."""

    recipes = RECIPES
    suffix = ".onnx"
    float_stage_precision = "fp16"  # `warpres build --precision mixed` builds the other stages from AutoCast FP16

    def __init__(self, folder) -> None:
        try:
            from modelopt.onnx.quantization import quantize
        except ImportError as exc:
            raise CalibrationError(f"TensorRT INT8 graphs need NVIDIA ModelOpt ({exc}): "
                                   f"pip install 'warpres[calibration]'") from None
        self._quantize = quantize
        self.folder = folder
        self._work = Path(tempfile.mkdtemp(prefix="warpres-modelopt-"))

    def __del__(self) -> None:
        shutil.rmtree(getattr(self, "_work", ""), ignore_errors=True)

    def source_model(self, stage) -> Path:
        return self.folder.graph_path(stage)

    def quantize(self, stage, inputs: Mapping[str, np.ndarray], recipe: Recipe, method: str) -> Path:
        """A Q/DQ copy of the stage's graph calibrated on `inputs` ({input: (N, ...)}), in a work folder."""
        if method not in METHODS:
            raise CalibrationError(f"method {method!r}: choose one of {', '.join(METHODS)}")
        source = self.folder.graph_path(stage)
        count = len(next(iter(inputs.values())))
        picks = np.unique(np.linspace(0, count - 1, min(count, MAX_SAMPLES)).round().astype(int))
        data = {name: np.ascontiguousarray(value[picks]) for name, value in inputs.items()}
        excluded = []
        if recipe.float_outputs:
            graph = onnx.load(str(source), load_external_data=False).graph
            excluded = output_nodes(graph) + grid_math_sharing_nodes(graph)
        out = self._work / f"{stage.name}.{len(list(self._work.iterdir()))}.onnx"
        try:
            with _quiet_modelopt():
                self._quantize(str(source), quantize_mode="int8", calibration_data=data,
                               calibration_method=METHODS[method], calibration_eps=["cpu"],
                               high_precision_dtype="fp32", output_path=str(out),
                               nodes_to_exclude=[f"^{re.escape(name)}$" for name in excluded] or None,
                               op_types_to_exclude=["Mul"] if recipe.float_multiplies else None)
        except Exception as exc:  # ModelOpt raises many kinds
            raise CalibrationError(f"{stage.name}: ModelOpt could not quantize the stage "
                                   f"({type(exc).__name__}: {exc})") from exc
        return out

    def runner(self, path: Path) -> StageRunner:
        from warpres.export.validation import ort_session

        session = ort_session(path)
        names = [output.name for output in session.get_outputs()]

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            return dict(zip(names, session.run(None, dict(feeds)), strict=True))
        return run

    def load(self, path: Path) -> Path:
        return path

    def save(self, path: Path, destination: Path) -> tuple[Path]:
        shutil.copyfile(path, destination)
        return (destination,)
