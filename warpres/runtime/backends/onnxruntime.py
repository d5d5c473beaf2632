"""ONNX Runtime: the portable reference runtime on any CPU, with the CUDA provider where present.

One InferenceSession per stage, created on first use (or by `warm_up`), running the portable
graphs in fp32. onnxruntime is imported when a backend is created, never by importing this
module, so the runtime stays importable without it (ARCHITECTURE §4).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from warpres.errors import BackendError
from warpres.runtime.device import HostDevice
from warpres.runtime.backends import check_feeds, import_package, load_stage_graph, physical_cores
from warpres.stages import ModelFolder, Stage

PACKAGE = "onnxruntime"
"""The module imported; pip installs it as `onnxruntime` (CPU) or `onnxruntime-gpu` (CUDA)."""
DEVICES = ("cpu", "cuda")


def import_onnxruntime():
    return import_package(PACKAGE, "ONNX Runtime is not installed: pip install onnxruntime (onnxruntime-gpu for CUDA)")


def execution_providers(device: str, available: Sequence[str]) -> list[str]:
    """The providers a session on `device` asks for, given ONNX Runtime's `available` ones."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device != "cuda":
        raise BackendError(f"onnxruntime device must be one of {', '.join(DEVICES)}, got {device!r}")
    if "CUDAExecutionProvider" not in available:
        raise BackendError(f"ONNX Runtime here has no CUDAExecutionProvider (providers: {', '.join(available)}); "
                           f"on a machine with an NVIDIA GPU, pip install onnxruntime-gpu in place of onnxruntime")
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]  # CPU takes the few nodes CUDA lacks


class OnnxRuntimeBackend:
    """Runs a model folder's stages with ONNX Runtime. device: "cpu" or "cuda" (needs
    onnxruntime-gpu and an NVIDIA GPU). threads: intra-op threads (default: the physical cores
    this process may use)."""

    def __init__(self, folder: ModelFolder, *, device: str = "cpu", threads: int | None = None) -> None:
        self._ort = import_onnxruntime()
        self._providers = execution_providers(device, self._ort.get_available_providers())
        if threads is not None and threads < 1:
            raise BackendError(f"onnxruntime threads must be >= 1, got {threads}")
        self.folder = folder
        self.device = device
        self.threads = threads or physical_cores()
        self.name = f"onnxruntime ({device.upper()}, fp32)"
        self._sessions: dict[str, object] = {}

    def as_device(self) -> HostDevice:
        """Host arrays, stages in order (warpres.runtime.device)."""
        return HostDevice(self)

    def warm_up(self, stages: Iterable[Stage] | None = None) -> None:
        """Create the sessions now (all stages by default) instead of on first use."""
        for stage in stages if stages is not None else self.folder.manifest.stages:
            self._session(stage)

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = check_feeds(self.folder, stage, feeds)
        session = self._session(stage)
        try:
            outputs = session.run(list(stage.outputs), feeds)
        except Exception as exc:  # ORT raises its own pybind exception types
            raise BackendError(f"{self.name}: stage {stage.name} failed ({_first_line(exc)})") from None
        # ORT hands back arrays it no longer owns: no copy needed beyond dtype/layout.
        return {name: np.ascontiguousarray(out, dtype=np.float32)
                for name, out in zip(stage.outputs, outputs, strict=True)}

    def _options(self):
        ort = self._ort
        options = ort.SessionOptions()
        # Constant folding, Conv+bias+activation fusions and, on CPU, the blocked NCHWc conv layout.
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One thread per physical core inside each op: hyper-threads share the FMA units convs saturate.
        options.intra_op_num_threads = self.threads
        # Each stage is one chain of convs: parallelism lives inside ops, not between graph branches.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spin-waiting: on a busy CPU spinners starve the thread they
        # wait for (measured 5x slower on the tiny pipeline with 2 cores shared, no gain on big convs).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Batch sizes repeat (max_batch chunks), so the planned activation layout per shape is reused.
        options.enable_mem_pattern = True
        # Keep activation buffers (MBs per stage) between calls instead of returning them to malloc.
        options.enable_cpu_mem_arena = True
        # Errors only: initializer and shape-inference warnings mean nothing to a user.
        options.log_severity_level = 3
        return options

    def _session(self, stage: Stage):
        session = self._sessions.get(stage.name)
        if session is not None:
            return session

        def load(path):
            try:
                session = self._ort.InferenceSession(str(path), sess_options=self._options(),
                                                     providers=self._providers)
            except Exception as exc:  # InvalidProtobuf, Fail, NotImplemented, ...: all mean the file is unusable
                raise BackendError(f"{path}: ONNX Runtime cannot load the {stage.name} graph ({_first_line(exc)}); "
                                   f"re-export the model") from None
            return session, [node.name for node in session.get_inputs()], [node.name for node in session.get_outputs()]

        session = self._sessions[stage.name] = load_stage_graph(self.folder, stage, load)
        return session


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
