"""Which backend runs an exported model folder: the registry, `auto` selection and what the ONNX
backends share: loading a stage's graph and checking feeds (ARCHITECTURE §3).

`create_backend("auto", folder)` tries, in order: TensorRT engines (`warpres build`) on a GPU,
ONNX Runtime with the CUDA provider where a GPU exists, OpenVINO on the CPU, ONNX Runtime on the
CPU. It returns the backend and a one-line reason for the caller to print.

The torch backend runs the PyTorch model, not the exported graphs, so the registry does not
create it: `warpres.runtime.session.Session` does (`backends.pytorch.TorchBackend`).

Nothing here or in the backend modules imports torch, the exporter, onnxruntime, openvino,
tensorrt or cuda-python at import time; a backend imports its package when it is created, and a missing
package is a BackendError naming what to `pip install`.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from warpres.errors import BackendError
from warpres.precision import check_backend_precision, normalize_precisions
from warpres.runtime.backends.base import Backend
from warpres.stages import BATCH_AXIS, ModelFolder, Stage

BACKEND_NAMES = ("auto", "tensorrt", "openvino", "onnxruntime", "torch")
# The keyword options each ONNX backend takes besides `precision`.
_OPTIONS = {"onnxruntime": ("device", "threads"), "openvino": ("cache_dir", "threads"),
            "tensorrt": ("device_index", "pipelines", "cuda_graphs", "allow_embedded_plugins")}


class Availability(NamedTuple):
    usable: bool
    detail: str
    """Version and devices when usable, else why not and what to install."""


class BackendChoice(NamedTuple):
    backend: Backend
    reason: str
    """One line for the user: "auto picked openvino (bf16, CPU): ..." or "requested"."""


Graph = TypeVar("Graph")


# -- graphs and feeds -------------------------------------------------------------------------

def import_package(module: str, install: str):
    """Import a backend's package lazily; a missing one is a BackendError saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"{install} ({exc})") from None


def load_stage_graph(folder: ModelFolder, stage: Stage,
                     load: Callable[[Path], tuple[Graph, Sequence[str], Sequence[str]]],
                     path: Path | None = None) -> Graph:
    """A stage's graph of the model folder (or the graph at `path`, e.g. a calibrated one) as one
    ONNX backend holds it. `load(path)` returns the
    loaded graph with its input and output names (raising BackendError when the runtime cannot
    load the file); a missing file, or inputs other than the stage's, or outputs lacking one of the
    stage's, are a BackendError naming the file and telling the user to re-export."""
    path = path if path is not None else folder.graph_path(stage)
    if not path.is_file():
        raise BackendError(f"{path}: missing ({stage.name} graph of {folder.path}); re-export the model")
    graph, inputs, outputs = load(path)
    if sorted(inputs) != sorted(stage.inputs) or not set(stage.outputs) <= set(outputs):
        raise BackendError(f"{path}: graph maps {list(inputs)} -> {list(outputs)}; stage {stage.name} needs "
                           f"{list(stage.inputs)} -> {list(stage.outputs)}; re-export the model")
    return graph


def check_feeds(folder: ModelFolder, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`feeds` as C-contiguous float32 arrays, after checking them against the manifest: exactly
    the stage's inputs, float32, the recorded rank and non-batch dims, one batch size >= 1."""
    if stage not in folder.manifest.stages:
        raise BackendError(f"{folder.path}: this {folder.manifest.family} model has no stage {stage.name} with "
                           f"inputs {list(stage.inputs)}")
    missing = [name for name in stage.inputs if name not in feeds]
    unexpected = sorted(name for name in feeds if name not in stage.inputs)
    if missing or unexpected:
        raise BackendError(f"stage {stage.name}: expected inputs {list(stage.inputs)}, got {sorted(feeds)} "
                           f"(missing {missing}, unexpected {unexpected})")
    specs = folder.manifest.io[stage.name]
    checked: dict[str, np.ndarray] = {}
    batch = None
    for name in stage.inputs:
        array, expected = feeds[name], specs[name].shape
        shown = "(" + ", ".join("B" if dim == BATCH_AXIS else str(dim) for dim in expected) + ")"
        if not isinstance(array, np.ndarray) or array.dtype != np.float32:
            got = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
            raise BackendError(f"stage {stage.name}: input {name} must be a float32 numpy array {shown}, got {got}")
        if array.ndim != len(expected) or any(isinstance(dim, int) and dim != size
                                              for dim, size in zip(expected, array.shape, strict=True)):
            raise BackendError(f"stage {stage.name}: input {name} must have shape {shown}, got {array.shape}")
        if array.shape[0] < 1 or array.shape[0] != (batch or array.shape[0]):
            raise BackendError(f"stage {stage.name}: input {name} has batch {array.shape[0]}; every input needs "
                               f"the same batch >= 1 (first input: {batch})")
        batch = array.shape[0]
        checked[name] = np.ascontiguousarray(array)
    return checked


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads not counted): the default thread
    count of the CPU backends, whose convolutions saturate the shared FMA units of a core."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


# -- what is usable here ----------------------------------------------------------------------

def _tensorrt(folder: ModelFolder | None) -> Availability:
    """A GPU and an importable TensorRT (tensorrt_availability: never TensorRT without a GPU), then built engines."""
    from warpres.runtime.tensorrt.availability import tensorrt_availability

    status = tensorrt_availability()
    if not status.usable:
        return Availability(False, status.problem)
    where = f"{status.info.flavour} {status.info.version} on {status.gpu.name}"
    if folder is None:
        return Availability(True, where)
    from warpres.runtime.tensorrt.engine_file import built_precisions

    precisions = built_precisions(folder)
    if not precisions:
        return Availability(False, f"no engines in {folder.path}/engines (build them: warpres build {folder.path})")
    return Availability(True, f"{where}, {'/'.join(precisions)} engines")


def _onnxruntime(device: str = "cpu") -> Availability:
    from warpres.runtime.backends import onnxruntime as ort_backend

    try:
        ort = ort_backend.import_onnxruntime()
    except BackendError as exc:
        return Availability(False, str(exc))
    providers = ort.get_available_providers()
    if device == "cuda":
        from warpres.runtime.tensorrt.gpu import nvidia_gpu_present

        if "CUDAExecutionProvider" not in providers:
            return Availability(False, f"no CUDAExecutionProvider (providers: {', '.join(providers)})")
        if not nvidia_gpu_present():
            return Availability(False, "a CUDAExecutionProvider but no NVIDIA GPU")
    return Availability(True, f"onnxruntime {ort.__version__} (providers: {', '.join(providers)})")


def _openvino() -> Availability:
    from warpres.runtime.backends import openvino as ov_backend

    try:
        ov = ov_backend.import_openvino()
        core = ov.Core()
        devices = core.available_devices
    except BackendError as exc:
        return Availability(False, str(exc))
    except Exception as exc:  # a broken install or plugin: report it, let auto move on
        return Availability(False, f"OpenVINO does not start ({type(exc).__name__}: {exc})")
    if "CPU" not in devices:
        return Availability(False, f"OpenVINO has no CPU device (devices: {', '.join(devices)})")
    capabilities = ov_backend.cpu_capabilities(core)
    return Availability(True, f"openvino {ov.get_version().split('-')[0]} (CPU: {', '.join(capabilities)})")


def _torch() -> Availability:
    if importlib.util.find_spec("torch") is None:  # find_spec does not import it
        return Availability(False, "PyTorch is not installed: pip install torch")
    return Availability(True, "PyTorch installed; Session creates it from a checkpoint")


def available() -> dict[str, Availability]:
    """Each backend name (but "auto") -> whether it can run here, and why not."""
    cuda = _onnxruntime("cuda")
    ort = _onnxruntime()
    if ort.usable:
        ort = Availability(True, f"{ort.detail}; CUDA: {'yes' if cuda.usable else 'no'}")
    return {"tensorrt": _tensorrt(None), "openvino": _openvino(), "onnxruntime": ort, "torch": _torch()}


# -- creating one -----------------------------------------------------------------------------

def _create(name: str, folder: ModelFolder, precision, options: dict) -> Backend:
    unknown = sorted(set(options) - set(_OPTIONS[name]))
    if unknown:
        raise BackendError(f"{name} takes the options {', '.join(_OPTIONS[name])}; got {', '.join(unknown)}")
    check_backend_precision(name, precision)
    if name == "tensorrt":
        from warpres.runtime.tensorrt.backend import TensorRTBackend

        return TensorRTBackend(folder, precision=precision, **options)
    if name == "onnxruntime":
        from warpres.runtime.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(folder, **options)
    from warpres.runtime.backends.openvino import OpenVinoBackend

    return OpenVinoBackend(folder, precision=precision, **options)


def create_backend(name: str, folder: ModelFolder, *, precision: str | Mapping[str, str] | None = None,
                   **options) -> BackendChoice:
    """The backend `name` (one of BACKEND_NAMES but "torch") for an exported model folder.

    precision: None (the backend's default: tensorrt the best engines built, openvino bf16 where
    the CPU has it, else fp32), or one of warpres.precision.BACKEND_PRECISIONS[name] ("f32" is
    read as "fp32"), or {stage name: precision} (openvino). options: device and threads (onnxruntime), cache_dir
    and threads (openvino), device_index, pipelines, cuda_graphs and allow_embedded_plugins
    (tensorrt); auto passes each backend the ones it takes and picks the device itself.
    """
    if name not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name == "torch":
        raise BackendError("the torch backend runs the PyTorch model, not exported graphs; it is created by "
                           "warpres.runtime.session.Session from a checkpoint or an EditingModel")
    precision = normalize_precisions(precision)
    if name != "auto":
        check_backend_precision(name, precision)
    if name == "tensorrt":
        status = _tensorrt(folder)
        if not status.usable:
            raise BackendError(f"tensorrt is not available: {status.detail}")
    if name != "auto":
        return BackendChoice(_create(name, folder, precision, options), "requested")

    if "device" in options:
        raise BackendError("auto picks the device itself; name a backend (e.g. onnxruntime) to choose one")
    unknown = sorted(set(options) - {option for names in _OPTIONS.values() for option in names})
    if unknown:
        raise BackendError(f"unknown backend options {', '.join(unknown)}")
    skipped = []
    candidates = (("tensorrt", None, lambda: _tensorrt(folder)),
                  ("onnxruntime", "cuda", lambda: _onnxruntime("cuda")), ("openvino", None, _openvino),
                  ("onnxruntime", "cpu", _onnxruntime))
    for candidate, device, probe in candidates:
        label = f"{candidate} {device.upper()}" if device else candidate
        try:
            check_backend_precision(candidate, precision)
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
            continue
        status = probe()
        if not status.usable:
            skipped.append(f"{label}: {status.detail}")
            continue
        chosen = {key: value for key, value in options.items() if key in _OPTIONS[candidate]}
        if device:
            chosen["device"] = device
        try:
            backend = _create(candidate, folder, precision, chosen)
        except BackendError as exc:
            skipped.append(f"{label}: {exc}")
            continue
        note = getattr(backend, "calibration_note", "")  # openvino: whether a calibration is used, and why
        return BackendChoice(backend, f"auto picked {backend.name}" + (f" ({note})" if note else "") + ": "
                             + "; ".join(skipped))
    raise BackendError("no backend can run this model here: " + "; ".join(skipped))
