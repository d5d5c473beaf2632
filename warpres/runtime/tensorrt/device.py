"""The TensorRT backend's device: the engines `warpres build` wrote, run on one GPU through cuda-python.

`TensorRTDevice` is the session's device (warpres.runtime.device): each pipeline owns a
non-blocking stream, one execution context per (stage, optimization profile) sharing the
pipeline's scratch memory (its stages run in order, never at once), device buffers allocated
once per (slot, shape) and reused, and pinned host buffers for uploads and downloads. Stage
outputs are bound directly as the next stage's inputs (`set_tensor_address`); after one plain
run of a (stage, shapes, addresses) binding, its `execute_async_v3` is captured as a CUDA graph
and replayed, falling back to plain enqueues when capture fails. Cache entries are stream-ordered
allocations with a ready event, so another pipeline waits for them on the GPU, not the host.

Before anything touches TensorRT: a GPU must be visible to CUDA (`tensorrt_availability`), every
engine's header must match this TensorRT and this GPU, and its source hash the exported graph;
engines that embed plugin libraries (host code) are refused unless the user opts in.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warpres.errors import BackendError
from warpres.precision import normalize_precision
from warpres.runtime.tensorrt import cuda
from warpres.runtime.tensorrt.availability import tensorrt_availability
from warpres.runtime.tensorrt.engine_file import (
    ENGINE_PRECISIONS,
    EngineTarget,
    built_precisions,
    check_engines,
    engine_path,
)
from warpres.stages import ModelFolder, Stage

log = logging.getLogger(__name__)

DEFAULT_PIPELINES = 2


@dataclass(eq=False)
class CudaTensor:
    """A float32 tensor in GPU memory: a slot buffer of a pipeline, or an owned cache entry
    (`owner` set, `ready` recorded on `home` once its copy is done)."""

    address: int
    shape: tuple[int, ...]
    owner: cuda.DeviceBuffer | None = None
    ready: cuda.Event | None = None
    home: cuda.Stream | None = None

    @property
    def nbytes(self) -> int:
        return 4 * int(np.prod(self.shape))


class _Download:
    def __init__(self, pinned: cuda.PinnedBuffer, shape: tuple[int, ...]) -> None:
        self._pinned, self._shape = pinned, shape

    def result(self) -> np.ndarray:
        self._pinned.settle()
        return self._pinned.view(self._shape).copy()


@dataclass(eq=False)
class _Pipeline:
    stream: cuda.Stream
    scratch: cuda.DeviceBuffer
    contexts: dict[tuple[str, int], Any] = field(default_factory=dict)
    slots: dict[tuple, cuda.DeviceBuffer] = field(default_factory=dict)
    pinned: dict[tuple, cuda.PinnedBuffer] = field(default_factory=dict)
    graphs: dict[tuple, cuda.CapturedGraph | None] = field(default_factory=dict)
    warm: set[tuple] = field(default_factory=set)

    def slot(self, key: tuple, shape: tuple[int, ...]) -> cuda.DeviceBuffer:
        buffer = self.slots.get((key, shape))
        if buffer is None:
            buffer = self.slots[key, shape] = cuda.DeviceBuffer(shape)
        return buffer

    def host(self, key: tuple, nbytes: int) -> cuda.PinnedBuffer:
        buffer = self.pinned.get((key, nbytes))
        if buffer is None:
            buffer = self.pinned[key, nbytes] = cuda.PinnedBuffer(nbytes)
        return buffer


class TensorRTDevice:
    """The session's device on one GPU; see the module docstring."""

    def __init__(self, folder: ModelFolder, *, precision: str | None = None, device_index: int = 0,
                 pipelines: int = DEFAULT_PIPELINES, cuda_graphs: bool = True,
                 allow_embedded_plugins: bool = False) -> None:
        status = tensorrt_availability(device_index)  # before TensorRT: see the module docstring
        if status.gpu is None:
            raise BackendError(f"TensorRT needs an NVIDIA GPU: {status.problem}")
        if not status.usable:
            raise BackendError(status.problem)
        trt, info, gpu = status.module, status.info, status.gpu
        precision = normalize_precision(precision) or next(iter(built_precisions(folder, picked_by_default=True)), None)
        if precision not in ENGINE_PRECISIONS:
            raise BackendError(f"{folder.path}: no complete set of engines (precision {precision!r}); "
                               f"build them with `warpres build {folder.path}`")
        cuda.set_device(device_index)
        running = EngineTarget(info.flavour, info.version, None if info.flavour == "tensorrt-rtx" else gpu.sm)
        headers = check_engines(folder, precision, running, allow_embedded_plugins=allow_embedded_plugins)

        self.name = f"tensorrt ({precision}, {gpu.name}{'' if cuda_graphs else ', no CUDA graphs'})"
        self.precision = precision
        self.pipelines = pipelines
        self.cuda_graphs = cuda_graphs
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._runtime.engine_host_code_allowed = allow_embedded_plugins
        self._engines: dict[str, Any] = {}
        self._profiles: dict[str, tuple[tuple[int, int, int], ...]] = {}
        for stage in folder.manifest.stages:
            header, offset = headers[stage.name]
            plan = engine_path(folder.path, stage.name, precision).read_bytes()[offset:]
            engine = self._runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise BackendError(f"{engine_path(folder.path, stage.name, precision)}: TensorRT could not load the "
                                   f"engine; rebuild it with `warpres build {folder.path}`")
            _check_io(engine, stage, trt)
            self._engines[stage.name] = engine
            self._profiles[stage.name] = header.profiles
        scratch_bytes = max(int(engine.device_memory_size_v2) for engine in self._engines.values())
        self._lanes = [_Pipeline(cuda.Stream(), cuda.DeviceBuffer((max(1, -(-scratch_bytes // 4)),)))
                       for _ in range(pipelines)]
        self._timing: list[tuple[str, cuda.Event, cuda.Event]] | None = None

    # -- the device contract ----------------------------------------------------------------

    def upload(self, array: np.ndarray, slot: str, pipeline: int) -> CudaTensor:
        lane = self._lanes[pipeline]
        array = np.ascontiguousarray(array, dtype=np.float32)
        pinned = lane.host(("upload", slot), array.nbytes)
        pinned.settle()  # its previous upload may still be reading it
        pinned.view(array.shape)[...] = array
        buffer = lane.slot(("upload", slot), array.shape)
        cuda.copy_async(buffer.address, pinned.address, array.nbytes, "h2d", lane.stream)
        pinned.done.record(lane.stream)
        pinned.pending = True
        return CudaTensor(buffer.address, array.shape)

    def run(self, stage: Stage, feeds: Mapping[str, CudaTensor], pipeline: int) -> dict[str, CudaTensor]:
        lane = self._lanes[pipeline]
        batch = next(iter(feeds.values())).shape[0]
        profile = self._profile_for(stage.name, batch)
        context = self._context(lane, stage.name, profile)
        binding = []
        for name in stage.inputs:
            tensor = feeds[name]
            if not context.set_input_shape(name, tensor.shape):
                raise BackendError(f"{self.name}: stage {stage.name} rejects input {name} of shape {tensor.shape}")
            context.set_tensor_address(name, tensor.address)
            binding.append((name, tensor.shape, tensor.address))
        outputs = {}
        for name in stage.outputs:
            shape = tuple(context.get_tensor_shape(name))
            buffer = lane.slot((stage.name, name), shape)
            context.set_tensor_address(name, buffer.address)
            binding.append((name, shape, buffer.address))
            outputs[name] = CudaTensor(buffer.address, shape)
        timing = (cuda.Event(timing=True).record(lane.stream),) if self._timing is not None else ()
        self._enqueue(lane, context, (stage.name, profile, tuple(binding)), stage)
        if timing:
            self._timing.append((stage.name, timing[0], cuda.Event(timing=True).record(lane.stream)))
        return outputs

    def split(self, tensor: CudaTensor, pipeline: int) -> list[CudaTensor]:
        lane = self._lanes[pipeline]
        rows = []
        row_shape = tensor.shape[1:]
        row_bytes = tensor.nbytes // tensor.shape[0]
        for index in range(tensor.shape[0]):
            owner = cuda.DeviceBuffer(row_shape, stream=lane.stream)
            cuda.copy_async(owner.address, tensor.address + index * row_bytes, row_bytes, "d2d", lane.stream)
            rows.append(CudaTensor(owner.address, row_shape, owner=owner, home=lane.stream))
        ready = cuda.Event().record(lane.stream)
        for row in rows:
            row.ready = ready
        return rows

    def gather(self, tensors: Sequence[CudaTensor], slot: str, pipeline: int) -> CudaTensor:
        lane = self._lanes[pipeline]
        shape = (len(tensors), *tensors[0].shape)
        buffer = lane.slot(("gather", slot), shape)
        foreign = [tensor for tensor in tensors if tensor.home is not lane.stream]
        for ready in {id(t.ready): t.ready for t in foreign}.values():
            lane.stream.wait(ready)
        row_bytes = tensors[0].nbytes
        for index, tensor in enumerate(tensors):
            cuda.copy_async(buffer.address + index * row_bytes, tensor.address, row_bytes, "d2d", lane.stream)
        if foreign:  # their memory is freed on their home stream: only after this copy
            read = cuda.Event().record(lane.stream)
            for tensor in foreign:
                tensor.owner.uses.append(read)
        return CudaTensor(buffer.address, shape)

    def download(self, tensor: CudaTensor, slot: str, pipeline: int) -> _Download:
        lane = self._lanes[pipeline]
        pinned = lane.host(("download", slot), tensor.nbytes)
        pinned.settle()
        cuda.copy_async(pinned.address, tensor.address, tensor.nbytes, "d2h", lane.stream)
        pinned.done.record(lane.stream)
        pinned.pending = True
        return _Download(pinned, tensor.shape)

    def start_timing(self) -> None:
        self._timing = []

    def stop_timing(self) -> dict[str, list[float]]:
        recorded, self._timing = self._timing or [], None
        times: dict[str, list[float]] = defaultdict(list)
        for name, start, end in recorded:
            end.synchronize()
            times[name].append(end.seconds_since(start))
        return dict(times)

    def synchronize(self) -> None:
        for lane in self._lanes:
            lane.stream.synchronize()

    # -- engines, contexts, graphs ------------------------------------------------------------

    def _profile_for(self, stage: str, batch: int) -> int:
        for index, (low, _, high) in enumerate(self._profiles[stage]):
            if low <= batch <= high:
                return index
        covered = ", ".join(f"{low}..{high}" for low, _, high in self._profiles[stage])
        raise BackendError(f"{self.name}: the {stage} engine takes batches {covered}, not {batch}; run the "
                           f"session with a smaller max_batch or rebuild with `warpres build --batch`")

    def _context(self, lane: _Pipeline, stage: str, profile: int) -> Any:
        context = lane.contexts.get((stage, profile))
        if context is None:
            engine = self._engines[stage]
            context = engine.create_execution_context(self._trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise BackendError(f"{self.name}: TensorRT could not create an execution context for {stage}")
            # one pipeline's stages run one after another on its stream, so they can share scratch
            context.set_device_memory(lane.scratch.address, lane.scratch.nbytes)
            if not context.set_optimization_profile_async(profile, lane.stream.address):
                raise BackendError(f"{self.name}: could not select profile {profile} of the {stage} engine")
            lane.contexts[stage, profile] = context
        return context

    def _enqueue(self, lane: _Pipeline, context: Any, key: tuple, stage: Stage) -> None:
        """Replay the binding's graph; capture it on its second run (the first may initialise
        lazily, which capture must not record); plain enqueue when graphs are off or failed."""
        graph = lane.graphs.get(key)
        if graph is not None:
            graph.launch(lane.stream)
            return
        if self.cuda_graphs and key in lane.warm and key not in lane.graphs:
            graph = lane.graphs[key] = cuda.capture(lane.stream, lambda: context.execute_async_v3(lane.stream.address))
            if graph is not None:
                graph.launch(lane.stream)
                return
            log.info("%s: CUDA graph capture failed for %s; running it without a graph", self.name, stage.name)
        if not context.execute_async_v3(lane.stream.address):
            raise BackendError(f"{self.name}: TensorRT failed to enqueue stage {stage.name}")
        lane.warm.add(key)


def _check_io(engine: Any, stage: Stage, trt: Any) -> None:
    """The engine's I/O must be the stage's, float32 (FP16 graphs keep float32 I/O)."""
    names = {name: engine.get_tensor_mode(name)
             for name in (engine.get_tensor_name(i) for i in range(engine.num_io_tensors))}
    inputs = sorted(name for name, mode in names.items() if mode == trt.TensorIOMode.INPUT)
    outputs = sorted(name for name, mode in names.items() if mode == trt.TensorIOMode.OUTPUT)
    if inputs != sorted(stage.inputs) or outputs != sorted(stage.outputs):
        raise BackendError(f"the {stage.name} engine has inputs {inputs} and outputs {outputs}; the stage needs "
                           f"{sorted(stage.inputs)} -> {sorted(stage.outputs)}; rebuild the engines")
    for name in names:
        if engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
            raise BackendError(f"the {stage.name} engine's {name} is {engine.get_tensor_dtype(name)}, not float32; "
                               f"rebuild the engines with `warpres build`")
