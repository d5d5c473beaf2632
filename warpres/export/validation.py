"""Every exported graph against its PyTorch stage, on fresh realistic inputs at two batch sizes.

For each output: max |onnx - torch| and that error relative to max |torch|; an output fails
when the error exceeds its spec's `atol + rtol * max |torch|`, and the ExportError names the
stage, the output, the batch, the error and the tolerance. ONNX Runtime (CPU) runs the graphs;
graphs with plugin nodes run on ONNX's reference evaluator with the plugin ops as PyTorch references
(warpres.export.plugin_graph.ReferenceRunner).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import onnx
import torch

from warpres.errors import ExportError
from warpres.export.activations import Activations, eval_mode, pipeline_activations
from warpres.export.fingerprint import model_id
from warpres.export.plugin_graph import ReferenceRunner, plugin_node_counts
from warpres.export.specs import ExportSpec, Tolerance, spec_for
from warpres.models.editor import EditingModel
from warpres.models.subgraphs import stage_module
from warpres.stages import PLUGIN, ModelFolder, open_model_folder, stage_feeds

logger = logging.getLogger(__name__)

VALIDATION_BATCHES = (1, 3)
VALIDATION_SEED = 1000  # batch b uses seed VALIDATION_SEED + b; tracing uses other seeds


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else 0.0


@dataclass(frozen=True)
class OutputError:
    """How far one graph output is from PyTorch at one batch size."""

    stage: str
    output: str
    batch: int
    max_abs: float  # inf when the graph produced NaN / inf where PyTorch did not
    reference_max: float  # max |torch output|
    tolerance: Tolerance

    @property
    def max_rel(self) -> float:
        """max_abs / max |reference|: the error in units of the output's own scale."""
        return _ratio(self.max_abs, self.reference_max)

    @property
    def allowed(self) -> float:
        return self.tolerance.allowed(self.reference_max)

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.allowed

    @property
    def severity(self) -> float:
        """max_abs / allowed: above 1 fails."""
        return _ratio(self.max_abs, self.allowed)

    def describe(self) -> str:
        t = self.tolerance
        return (f"{self.stage}: output {self.output} at batch {self.batch} differs from PyTorch by "
                f"{self.max_abs:.3g} (max |reference| {self.reference_max:.3g}, relative {self.max_rel:.3g}); "
                f"tolerance atol {t.atol:g} + rtol {t.rtol:g} x max |reference| = {self.allowed:.3g} ({t.reason})")


@dataclass(frozen=True)
class ValidationReport:
    """Per stage, output and batch size: the error of the exported graph against PyTorch."""

    errors: tuple[OutputError, ...]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.errors)

    @property
    def failures(self) -> tuple[OutputError, ...]:
        return tuple(e for e in self.errors if not e.ok)

    def worst(self) -> dict[tuple[str, str], OutputError]:
        """(stage, output) -> its largest error relative to what is allowed, over batch sizes."""
        worst: dict[tuple[str, str], OutputError] = {}
        for e in self.errors:
            key = (e.stage, e.output)
            if key not in worst or e.severity > worst[key].severity:
                worst[key] = e
        return worst

    def table(self) -> list[str]:
        """A small text table, one row per (stage, output), worst batch size."""
        rows = [f"{'stage':<17}{'output':<17}{'batch':>5}{'max|err|':>11}{'max|ref|':>11}{'rel':>11}"
                f"{'allowed':>11}  ok"]
        for (stage, output), e in self.worst().items():
            rows.append(f"{stage:<17}{output:<17}{e.batch:>5}{e.max_abs:>11.3g}{e.reference_max:>11.3g}"
                        f"{e.max_rel:>11.3g}{e.allowed:>11.3g}  {'yes' if e.ok else 'NO'}")
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON: {stage: {output: {max_abs_error, max_rel_error, atol, rtol, reason, batches}}}."""
        out: dict[str, Any] = {}
        for (stage, output), e in self.worst().items():
            out.setdefault(stage, {})[output] = {
                "max_abs_error": e.max_abs, "max_rel_error": e.max_rel, "reference_max": e.reference_max,
                "atol": e.tolerance.atol, "rtol": e.tolerance.rtol, "reason": e.tolerance.reason,
                "batches": sorted({x.batch for x in self.errors if (x.stage, x.output) == (stage, output)}),
            }
        return out

    def raise_for_failures(self) -> None:
        if not self.ok:
            raise ExportError("exported graph disagrees with PyTorch:\n  "
                              + "\n  ".join(e.describe() for e in self.failures))


def ort_session(path: str | os.PathLike[str]) -> Any:
    """An ONNX Runtime CPU session on one graph file (warnings off: they are not errors here)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class GraphRunner(Protocol):
    """Runs one exported graph on host arrays."""

    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]: ...


class OrtRunner:
    """A portable graph on ONNX Runtime (CPU)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._session = ort_session(path)
        self.input_names = [i.name for i in self._session.get_inputs()]
        self.output_names = [o.name for o in self._session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        return self._session.run(None, dict(feeds))


def graph_runner(path: str | os.PathLike[str], has_plugin_nodes: bool | None = None) -> GraphRunner:
    """ONNX Runtime for a portable graph, the reference runner for one with plugin nodes
    (`has_plugin_nodes`; read from the file when not given)."""
    if has_plugin_nodes is False:
        return OrtRunner(path)
    proto = onnx.load(str(path))
    return ReferenceRunner(proto) if plugin_node_counts(proto) else OrtRunner(path)


def _max_abs_error(graph_out: np.ndarray, reference: np.ndarray) -> float:
    if not np.all(np.isfinite(graph_out)):
        return math.inf
    return float(np.max(np.abs(graph_out.astype(np.float64) - reference))) if reference.size else 0.0


@torch.no_grad()
def compare_stage(model: EditingModel, spec: ExportSpec, graph_path: str | os.PathLike[str],
                  activations: Mapping[int, Activations], has_plugin_nodes: bool | None = None) -> list[OutputError]:
    """Run the stage in PyTorch and on the graph (`graph_runner`) on each batch's activations;
    measure every output. Raises ExportError when the graph cannot run or its outputs have the
    wrong names or shapes."""
    stage = spec.stage
    try:
        session = graph_runner(graph_path, has_plugin_nodes)
    except Exception as exc:
        raise ExportError(f"{graph_path}: cannot load the {stage.name} graph to run it ({exc})") from exc
    names = (session.input_names, session.output_names)
    if names != (list(stage.inputs), list(stage.outputs)):
        raise ExportError(f"{graph_path}: tensors {names[0]} -> {names[1]}; stage {stage.name} expects "
                          f"{list(stage.inputs)} -> {list(stage.outputs)}")
    module = stage_module(model, stage)
    errors = []
    for batch, acts in activations.items():
        inputs = stage_feeds(model.family, stage, acts)
        references = module(*inputs.values())
        feeds = {name: np.ascontiguousarray(value.numpy()) for name, value in inputs.items()}
        try:
            graph_outputs = session.run(feeds)
        except Exception as exc:
            raise ExportError(f"{graph_path}: failed to run {stage.name} at batch {batch} ({exc})") from exc
        for name, reference, graph_out in zip(stage.outputs, references, graph_outputs, strict=True):
            reference = reference.numpy()
            if graph_out.shape != reference.shape:
                raise ExportError(f"{stage.name}: output {name} at batch {batch} is {graph_out.shape}; "
                                  f"PyTorch gives {reference.shape}")
            if not np.all(np.isfinite(reference)):
                raise ExportError(f"{stage.name}: PyTorch output {name} has NaN / inf at batch {batch}; "
                                  f"the model cannot be validated")
            scale = float(np.max(np.abs(reference))) if reference.size else 0.0
            errors.append(OutputError(stage.name, name, batch, _max_abs_error(graph_out, reference),
                                      scale, spec.tolerance))
    return errors


def validation_activations(model: EditingModel, batches: Sequence[int] = VALIDATION_BATCHES,
                           seed: int = VALIDATION_SEED) -> dict[int, Activations]:
    """Fresh dataflow runs, one per batch size (seed + batch each)."""
    return {batch: pipeline_activations(model, batch, seed + batch) for batch in batches}


def validate_graph(model: EditingModel, spec: ExportSpec, graph_path: str | os.PathLike[str], *,
                   batches: Sequence[int] = VALIDATION_BATCHES, seed: int = VALIDATION_SEED) -> ValidationReport:
    """Compare one exported stage graph with `model`'s stage; raise ExportError if it disagrees."""
    with eval_mode(model):
        report = ValidationReport(tuple(compare_stage(model, spec, graph_path,
                                                      validation_activations(model, batches, seed))))
    report.raise_for_failures()
    return report


def validate_model_folder(model: EditingModel, folder: str | os.PathLike[str] | ModelFolder, *,
                          batches: Sequence[int] = VALIDATION_BATCHES, seed: int = VALIDATION_SEED,
                          emit: Callable[[str], None] | None = logger.info) -> ValidationReport:
    """Validate every graph of an exported folder (files verified by hash) against `model`,
    which must be the model it was exported from (same model_id). Raises ExportError on any
    disagreement; returns the report otherwise."""
    folder = folder if isinstance(folder, ModelFolder) else open_model_folder(folder)
    manifest = folder.manifest
    expected = model_id(model)
    if manifest.model_id != expected:
        raise ExportError(f"{folder.path}: exported from model {manifest.model_id[:12]}…, not from this model "
                          f"({expected[:12]}…); re-export it or validate against the model it came from")
    if manifest.family != model.family:
        raise ExportError(f"{folder.path}: a {manifest.family} export; this model is {model.family}")
    with eval_mode(model):
        activations = validation_activations(model, batches, seed)
        maybe_plugins = None if manifest.flavour == PLUGIN else False  # portable graphs are not read to look
        errors = [e for stage in manifest.stages
                  for e in compare_stage(model, spec_for(stage), folder.graph_path(stage), activations, maybe_plugins)]
    report = ValidationReport(tuple(errors))
    if emit is not None:
        for line in report.table():
            emit(line)
    report.raise_for_failures()
    return report
