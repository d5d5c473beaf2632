"""`export_model`: an EditingModel to a deployable model folder (ARCHITECTURE §2).

The folder is built in a hidden staging folder beside `out_dir` and moved into place only when
every graph is exported, cleaned and validated and the manifest (written last) pins them all;
an error or Ctrl-C removes the staging folder and leaves `out_dir` as it was.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import onnxscript
import torch
from tqdm.auto import tqdm

import warpres
from warpres.edits import DIRECTIONS_JSON, DIRECTIONS_TENSORS, DirectionLibrary, EditRequest
from warpres.errors import EditError, ExportError, WarpresError
from warpres.export import graph
from warpres.export.activations import eval_mode, pipeline_activations
from warpres.export.fingerprint import model_config, model_id, stage_fingerprint
from warpres.export.plugin_graph import plugin_node_counts
from warpres.export.specs import specs_for
from warpres.export.validation import (
    VALIDATION_BATCHES,
    VALIDATION_SEED,
    ValidationReport,
    compare_stage,
    validation_activations,
)
from warpres.files import atomic_path, sha256_file
from warpres.models.editor import EditingModel
from warpres.stages import (
    FLAVOURS,
    PORTABLE,
    FileEntry,
    Manifest,
    ModelFolder,
    is_model_folder,
    open_model_folder,
    stage_feeds,
    write_manifest,
)

logger = logging.getLogger(__name__)

VALIDATION_NAME = "validation.json"  # informative, beside the manifest; not pinned, the runtime ignores it
TRACE_BATCH = 2  # torch.export specialises an axis traced at size 1
TRACE_SEED = 0


def versions() -> dict[str, str]:
    """The package versions an export records in its manifest."""
    return {"warpres": warpres.__version__, "torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxscript": onnxscript.__version__,
            "exporter": graph.EXPORTER}


def _check_replaceable(out_dir: Path) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir}: exists and is not a folder; choose another output path")
    if any(out_dir.iterdir()) and not is_model_folder(out_dir):
        raise ExportError(f"{out_dir}: exists, is not empty and is not an exported model folder (no manifest.json); "
                          f"refusing to replace it")


@contextmanager
def _staging_folder(out_dir: Path) -> Iterator[Path]:
    """A fresh hidden folder beside `out_dir` (same file system, so it can be renamed into
    place); removed on exit unless it was published."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(4)}.partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, out_dir: Path) -> None:
    """Move the complete `staging` folder to `out_dir`, replacing an earlier export there.

    Two renames: the old folder aside, the new one in; the old one is restored if the second
    fails. Between them (microseconds) `out_dir` is absent, never half-written.
    """
    _check_replaceable(out_dir)
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.{secrets.token_hex(4)}.old")
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def _emit_report(report: ValidationReport, emit: Callable[[str], None]) -> ValidationReport:
    """Show the error table; raise ExportError naming every output over its tolerance."""
    for line in report.table():
        emit(line)
    report.raise_for_failures()
    return report


def _check_directions_fit(directions: DirectionLibrary, model: EditingModel) -> None:
    """Each direction must apply to this model's W+ (B, L, w_dim)."""
    config = model.generator.config
    probe = np.zeros((1, config.num_ws, config.w_dim), dtype=np.float32)
    for name in directions.names:
        try:
            directions.apply(probe, [EditRequest(name, 1.0)])
        except EditError as exc:
            raise ExportError(f"direction {name!r} does not fit this model's W+ (1, {config.num_ws}, "
                              f"{config.w_dim}): {exc}") from None


def export_model(model: EditingModel, out_dir: str | os.PathLike[str], *, directions: DirectionLibrary | None = None,
                 opset: int = graph.OPSET, validate: bool = True, progress: bool = True,
                 traced: dict[str, onnx.ModelProto] | None = None, flavour: str = PORTABLE) -> ModelFolder:
    """Export `model`'s stages (warpres.stages.stages_for(model.family)) as ONNX graphs of
    `flavour` (portable, or plugin: TensorRT plugin nodes for modulated convs and warps) into
    `out_dir`, with `directions` and the manifest, and return the opened folder.

    Each graph is traced on realistic activations, constant-folded, audited (standard ops,
    constant conv weights, dynamic `batch`), stamped with the model_id, checked (onnx.checker,
    strict shape inference) and, with `validate`, compared with PyTorch on fresh inputs at batch
    1 and 3 (ExportError beyond tolerance; the error table goes to `validation.json` beside the
    manifest). The model is in eval mode during the export; its training flags are restored.
    """
    out_dir = Path(out_dir)
    if flavour not in FLAVOURS:
        raise ExportError(f"flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    if opset < graph.MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: the exporter needs opset >= {graph.MIN_OPSET} (Resize-18)")
    try:
        specs = specs_for(model.family)
    except WarpresError as exc:
        raise ExportError(str(exc)) from None
    _check_replaceable(out_dir)
    if directions is not None:
        _check_directions_fit(directions, model)
    identity = model_id(model)
    emit: Callable[[str], None] = tqdm.write if progress else logger.info
    with eval_mode(model), _staging_folder(out_dir) as staging:
        trace_inputs = pipeline_activations(model, TRACE_BATCH, TRACE_SEED)
        checks = validation_activations(model, VALIDATION_BATCHES, VALIDATION_SEED) if validate else {}
        io, graphs, errors = {}, {}, []
        with tqdm(specs, desc=f"export {model.family} ({flavour})", unit="stage", disable=not progress) as bar:
            for spec in bar:
                stage = spec.stage
                bar.set_postfix_str(stage.name)
                stage_inputs = stage_feeds(model.family, stage, trace_inputs)
                key = (None if traced is None
                       else f"{opset}:{flavour}:{stage_fingerprint(model, stage, stage_inputs)}")
                proto = None if key is None else traced.get(key)
                if proto is None:
                    proto = graph.trace_stage(model, stage, stage_inputs, opset, flavour)
                    if key is not None:
                        traced[key] = proto
                path = staging / stage.filename
                has_plugin_nodes = bool(plugin_node_counts(proto))
                io[stage.name] = graph.write_graph(proto, path, stage, opset, {
                    "model_id": identity, "stage": stage.name, "family": model.family, "flavour": flavour},
                    flavour)
                del proto  # the encoder's is 1 GB at FFHQ size
                if validate:
                    errors += compare_stage(model, spec, path, checks, has_plugin_nodes)
                    if not all(e.ok for e in errors):
                        bar.close()
                        _emit_report(ValidationReport(tuple(errors)), emit)  # raises, naming the outputs
                graphs[stage.name] = FileEntry(stage.filename, sha256_file(path))
        pinned = {}
        if directions is not None:
            directions.save(staging)
            pinned = {role: FileEntry(name, sha256_file(staging / name))
                      for role, name in (("tensors", DIRECTIONS_TENSORS), ("description", DIRECTIONS_JSON))}
        if validate:
            report = _emit_report(ValidationReport(tuple(errors)), emit)
            with atomic_path(staging / VALIDATION_NAME) as tmp:
                tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        write_manifest(staging, Manifest(
            family=model.family, config=model_config(model), model_id=identity, flavour=flavour,
            opset=opset, io=io, graphs=graphs, directions=pinned, versions=versions()))
        _publish(staging, out_dir)
    return open_model_folder(out_dir)


def export_checkpoint(checkpoint: str | os.PathLike[str], folder: str | os.PathLike[str]) -> ModelFolder:
    """Export a checkpoint file (any format warpres.checkpoints reads) into `folder`: the exporter
    a Session is handed to run checkpoints on the ONNX backends."""
    from warpres.checkpoints import load_checkpoint

    return export_model(load_checkpoint(checkpoint), folder)
