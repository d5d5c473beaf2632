"""OpenVINO on the CPU: the default backend, bf16 on CPUs with AMX / AVX512-BF16, fp32 for parity,
int8 / mixed from a calibration (warpres.calibration).

An INT8 stage runs the calibrated Q/DQ graph the manifest pins for the "openvino" target; its
float remainder runs at the precision a float stage would (bf16 where the CPU has it). With no
precision asked, a calibration is used only when its held-out accuracy met its bar.

Each stage's ONNX graph is read with OpenVINO's ONNX frontend, compiled on first use (or by
`warm_up`) with one reused infer request, and cached on disk, so a later process loads the
compiled blob instead of compiling again. The batch axis stays dynamic. openvino is imported
when a backend is created, never by importing this module (ARCHITECTURE §4).

The cache is keyed by OpenVINO's hash of the model itself: we compile the `ov.Model`, not the
file path. With a path, OpenVINO 2026.4 keys the blob by the path and checks only the file's
timestamp, so a graph rewritten in place within the same second loads the old model's blob.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from warpres.errors import BackendError, ModelFolderError
from warpres.files import cache_root
from warpres.precision import BACKEND_PRECISIONS, CALIBRATED, check_backend_precision, normalize_precision
from warpres.runtime.backends import check_feeds, import_package, load_stage_graph
from warpres.runtime.device import HostDevice
from warpres.stages import Calibration, ModelFolder, Stage

log = logging.getLogger(__name__)

PACKAGE = "openvino"
"""The module imported; pip installs it as `openvino`."""
PRECISIONS = BACKEND_PRECISIONS["openvino"]
TARGET = "openvino"
"""The calibration target whose graphs this backend runs."""


def import_openvino():
    return import_package(PACKAGE, "OpenVINO is not installed: pip install openvino")


def cpu_capabilities(core) -> tuple[str, ...]:
    """What the CPU plugin can run fast here, e.g. ("BF16", "WINOGRAD", "FP32", "INT8", ...)."""
    return tuple(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def resolve_precision(requested: str | None, capabilities: Sequence[str]) -> tuple[str, str | None]:
    """(the precision to compile with, a warning to log or None). None asks for bf16 where the
    CPU has it and fp32 elsewhere; an explicit bf16 on a CPU without it falls back to fp32."""
    requested = normalize_precision(requested)
    check_backend_precision("openvino", requested)
    has_bf16 = "BF16" in capabilities
    if requested is None:
        return ("bf16" if has_bf16 else "fp32"), None
    if requested in CALIBRATED:
        return "int8", None
    if requested == "bf16" and not has_bf16:
        return "fp32", (f"bf16 requested but this CPU has no BF16 support (OpenVINO capabilities: "
                        f"{', '.join(capabilities)}); running in fp32")
    return requested, None


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/warpres/openvino, else ~/.cache/warpres/openvino."""
    return cache_root() / "openvino"


class OpenVinoBackend:
    """Runs a model folder's stages with OpenVINO on the CPU.

    precision: "fp32" ("f32" is read as it), "bf16", "int8" (every stage's calibrated graph),
    "mixed" (the calibrated stages in INT8, the others at the float default), None (a
    calibration that met its bar as "mixed", else bf16 where the CPU has it, else fp32), or
    {stage name: precision} for stages that need another than the default (e.g. {"flow": "fp32"});
    unlisted stages take the float default. `calibration_note` says whether a calibration is used
    and why (or why not). cache_dir: where compiled blobs go (default `default_cache_dir()`).
    threads: inference threads (default: OpenVINO's, one per physical core). One infer request
    per stage, reused: use a backend from one thread at a time.
    """

    def __init__(self, folder: ModelFolder, *, precision: str | Mapping[str, str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        self._ov = import_openvino()
        self._core = self._ov.Core()
        if threads is not None and threads < 1:
            raise BackendError(f"openvino threads must be >= 1, got {threads}")
        self.folder = folder
        self.threads = threads
        capabilities = cpu_capabilities(self._core)
        self.float_precision = resolve_precision(None, capabilities)[0]  # the float part of INT8 stages too
        self.calibration_note = ""
        self.precisions = self._stage_precisions(self._with_calibration(precision), capabilities)
        self.cache_dir = self._usable_cache_dir(Path(cache_dir) if cache_dir is not None else default_cache_dir())
        self.name = f"openvino ({_describe(self.precisions)}, CPU)"
        self._compiled: dict[str, tuple[object, object]] = {}  # stage -> (compiled model, infer request)

    def _with_calibration(self, precision):
        """`precision` with "int8" / "mixed" (or None over a calibration that met its bar) turned
        into {stage: "int8"} for the calibrated stages; refuses an int8 / mixed the folder cannot give."""
        calibration: Calibration | None = self.folder.manifest.calibrations.get(TARGET)
        stages = [stage.name for stage in self.folder.manifest.stages]
        asked = normalize_precision(precision) if isinstance(precision, str) else precision
        if calibration is None:
            if asked in CALIBRATED or (isinstance(asked, Mapping) and "int8" in asked.values()):
                raise BackendError(f"{self.folder.path}: no openvino calibration; run `warpres calibrate "
                                   f"{self.folder.path} --images DIR` first")
            return precision
        if asked is None:
            if not calibration.meets_bar:
                self.calibration_note = (f"the openvino calibration missed its accuracy bar "
                                         f"({calibration.plan.get('bar_db')} dB); running float")
                return None
            asked = "mixed"
        if asked == "int8" and set(calibration.stages) != set(stages):
            floats = sorted(set(stages) - set(calibration.stages))
            raise BackendError(f"{self.folder.path}: the openvino calibration is mixed ({', '.join(floats)} in "
                               f"float); ask for mixed, or calibrate with --precision int8")
        if asked in CALIBRATED:
            for name in calibration.stages:  # fails now, not at first use, when a source graph changed
                self._calibrated_path(name)
            summary = calibration.plan.get("summary", "")
            self.calibration_note = (f"calibrated INT8 {'/'.join(calibration.stages)}"
                                     + (f" ({summary})" if summary else ""))
            return dict.fromkeys(calibration.stages, "int8")
        return precision

    def _calibrated_path(self, name: str) -> Path:
        stage = next(stage for stage in self.folder.manifest.stages if stage.name == name)
        try:
            return self.folder.calibrated_graph_path(TARGET, stage)
        except ModelFolderError as exc:
            raise BackendError(str(exc)) from None

    def _stage_precisions(self, precision, capabilities: Sequence[str]) -> dict[str, str]:
        stages = [stage.name for stage in self.folder.manifest.stages]
        if isinstance(precision, Mapping):
            unknown = sorted(set(precision) - set(stages))
            if unknown:
                raise BackendError(f"openvino precision names stages {unknown} this {self.folder.manifest.family} "
                                   f"model lacks (stages: {', '.join(stages)})")
            requested = {stage: precision.get(stage) for stage in stages}
        else:
            requested = dict.fromkeys(stages, precision)
        resolved, warnings = {}, set()
        for stage, asked in requested.items():
            resolved[stage], warning = resolve_precision(asked, capabilities)
            if warning:
                warnings.add(warning)
        for warning in warnings:
            log.warning("openvino: %s", warning)
        return resolved

    @staticmethod
    def _usable_cache_dir(path: Path) -> Path | None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only home must not stop inference, only make it start slower
            log.warning("openvino: cannot use model cache %s (%s); compiling without a cache", path, exc)
            return None
        return path

    def as_device(self) -> HostDevice:
        """Host arrays, stages in order (warpres.runtime.device)."""
        return HostDevice(self)

    def warm_up(self, stages: Iterable[Stage] | None = None) -> None:
        """Compile now (all stages by default) instead of on first use."""
        for stage in stages if stages is not None else self.folder.manifest.stages:
            self._request(stage)

    def loaded_from_cache(self, stage: Stage) -> bool:
        """Whether `stage` was loaded from a cached blob rather than compiled (compiles it if needed)."""
        self._request(stage)
        compiled, _ = self._compiled[stage.name]
        return bool(compiled.get_property("LOADED_FROM_CACHE"))

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_feeds(self.folder, stage, feeds)
        request = self._request(stage)
        try:
            # share_inputs: the call is synchronous, so OpenVINO may read our arrays in place.
            results = request.infer(feeds, share_inputs=True, share_outputs=True)
        except Exception as exc:
            raise BackendError(f"{self.name}: stage {stage.name} failed ({_last_line(exc)})") from None
        # The request reuses its output buffers on the next call: copy out, never return views.
        return {name: np.array(results[name], dtype=np.float32, copy=True) for name in stage.outputs}

    def _config(self, precision: str) -> dict[str, object]:
        ov = self._ov
        precision = self.float_precision if precision == "int8" else precision  # the Q/DQ graph's float part
        config: dict[str, object] = {
            # fp32 pins full precision (on AMX CPUs the plugin otherwise defaults to bf16).
            "INFERENCE_PRECISION_HINT": ov.Type.bf16 if precision == "bf16" else ov.Type.f32,
            # One stream over all cores: the runtime issues one synchronous request per stage.
            "PERFORMANCE_HINT": "LATENCY",
        }
        if self.cache_dir is not None:
            config["CACHE_DIR"] = str(self.cache_dir)
        if self.threads is not None:
            config["INFERENCE_NUM_THREADS"] = self.threads
        return config

    def _request(self, stage: Stage):
        entry = self._compiled.get(stage.name)
        if entry is not None:
            return entry[1]

        def load(path):
            try:
                if path.suffix == ".xml":  # a calibrated stage: the OpenVINO IR NNCF wrote, weights beside it
                    model = self._core.read_model(str(path), str(path.with_suffix(".bin")))
                else:  # the ONNX frontend directly: read_model would also try every other frontend on a bad file
                    frontend = self._ov.frontend.FrontEndManager().load_by_framework("onnx")
                    model = frontend.convert(frontend.load(str(path)))
            except Exception as exc:
                raise BackendError(f"{path}: OpenVINO cannot read the {stage.name} graph ({_last_line(exc)}); "
                                   f"re-export the model") from None
            return (model, [port.get_any_name() for port in model.inputs],
                    [name for port in model.outputs for name in port.get_names()])

        precision = self.precisions[stage.name]
        path = self._calibrated_path(stage.name) if precision == "int8" else None
        model = load_stage_graph(self.folder, stage, load, path)
        try:
            compiled = self._core.compile_model(model, "CPU", self._config(precision))
        except Exception as exc:
            path = path or self.folder.graph_path(stage)
            raise BackendError(f"{path}: OpenVINO cannot compile the {stage.name} graph ({_last_line(exc)})") from None
        request = compiled.create_infer_request()
        self._compiled[stage.name] = (compiled, request)
        return request


def _describe(precisions: Mapping[str, str]) -> str:
    """"bf16", or "bf16, fp32: flow, fuse" when some stages differ from the most common one."""
    values = list(precisions.values())
    main = max(PRECISIONS, key=values.count)
    others = {p: [stage for stage, q in precisions.items() if q == p] for p in PRECISIONS if p != main}
    return ", ".join([main, *(f"{p}: {'/'.join(stages)}" for p, stages in others.items() if stages)])


def _last_line(exc: Exception) -> str:
    """OpenVINO messages end with what went wrong, after lines naming its own source files."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__
