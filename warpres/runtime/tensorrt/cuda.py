"""The CUDA runtime calls the TensorRT backend makes, through cuda-python (`cuda.bindings.runtime`),
as small owning objects: streams, events, device and pinned host buffers.

cuda-python returns `(error, *values)` from every call; `check` turns a failure into a
BackendError naming the call, so no error code is ever dropped. Nothing here runs without an
NVIDIA driver; `warpres.runtime.tensorrt.gpu.cuda_devices` is asked first.
"""

from __future__ import annotations

import ctypes
import math
import weakref
from typing import Any

import numpy as np

from warpres.errors import BackendError


def _runtime():
    from cuda.bindings import runtime

    return runtime


def check(result: Any, call: str) -> Any:
    """The values of a cuda-python call, or a BackendError with the CUDA error's name."""
    runtime = _runtime()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != runtime.cudaError_t.cudaSuccess:
        name = runtime.cudaGetErrorName(err)[1]
        raise BackendError(f"CUDA {call} failed: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) or None)


def set_device(index: int) -> None:
    """Make GPU `index` current for this thread (TensorRT deserialises onto the current device)."""
    check(_runtime().cudaSetDevice(index), "cudaSetDevice")


class Stream:
    """A non-blocking stream: it never synchronises with the legacy default stream, which TensorRT
    warns costs extra device synchronisation."""

    def __init__(self) -> None:
        runtime = _runtime()
        self.handle = check(runtime.cudaStreamCreateWithFlags(runtime.cudaStreamNonBlocking), "cudaStreamCreate")
        self._finalizer = weakref.finalize(self, runtime.cudaStreamDestroy, self.handle)

    @property
    def address(self) -> int:
        """The stream as the integer TensorRT's execute_async_v3 takes."""
        return int(self.handle)

    def wait(self, event: Event) -> None:
        check(_runtime().cudaStreamWaitEvent(self.handle, event.handle, 0), "cudaStreamWaitEvent")

    def synchronize(self) -> None:
        check(_runtime().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")


class Event:
    def __init__(self, timing: bool = False) -> None:
        runtime = _runtime()
        flags = runtime.cudaEventDefault if timing else runtime.cudaEventDisableTiming
        self.handle = check(runtime.cudaEventCreateWithFlags(flags), "cudaEventCreate")
        self._finalizer = weakref.finalize(self, runtime.cudaEventDestroy, self.handle)

    def record(self, stream: Stream) -> Event:
        check(_runtime().cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")
        return self

    def synchronize(self) -> None:
        check(_runtime().cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def seconds_since(self, start: Event) -> float:
        return check(_runtime().cudaEventElapsedTime(start.handle, self.handle), "cudaEventElapsedTime") / 1e3


class DeviceBuffer:
    """GPU memory for one tensor shape (float32). `stream`: allocated and freed stream-ordered
    (cudaMallocAsync) on it, after every stream in `uses` has passed its recorded event."""

    def __init__(self, shape: tuple[int, ...], stream: Stream | None = None) -> None:
        runtime = _runtime()
        self.shape = tuple(shape)
        self.nbytes = 4 * math.prod(self.shape)
        size = max(self.nbytes, 1)
        if stream is None:
            self.address = int(check(runtime.cudaMalloc(size), "cudaMalloc"))
            self._finalizer = weakref.finalize(self, runtime.cudaFree, self.address)
        else:
            self.address = int(check(runtime.cudaMallocAsync(size, stream.handle), "cudaMallocAsync"))
            self.uses: list[Event] = []
            self._finalizer = weakref.finalize(self, _free_after, self.address, stream, self.uses)


def _free_after(address: int, stream: Stream, uses: list[Event]) -> None:
    runtime = _runtime()
    for event in uses:
        runtime.cudaStreamWaitEvent(stream.handle, event.handle, 0)
    runtime.cudaFreeAsync(address, stream.handle)


class PinnedBuffer:
    """Page-locked host memory (what makes cudaMemcpyAsync asynchronous), with the event of the last
    copy in or out of it: it may be rewritten, or read, only after that event."""

    def __init__(self, nbytes: int) -> None:
        runtime = _runtime()
        self.nbytes = nbytes
        self.address = int(check(runtime.cudaMallocHost(max(nbytes, 1)), "cudaMallocHost"))
        self._finalizer = weakref.finalize(self, runtime.cudaFreeHost, self.address)
        self.done = Event()
        self.pending = False

    def view(self, shape: tuple[int, ...]) -> np.ndarray:
        raw = (ctypes.c_byte * self.nbytes).from_address(self.address)
        return np.frombuffer(raw, dtype=np.float32, count=math.prod(shape)).reshape(shape)

    def settle(self) -> None:
        """Wait for the last copy that used this buffer."""
        if self.pending:
            self.done.synchronize()
            self.pending = False


def copy_async(destination: int, source: int, nbytes: int, kind: str, stream: Stream) -> None:
    """kind: "h2d", "d2h" or "d2d"."""
    runtime = _runtime()
    direction = {"h2d": runtime.cudaMemcpyKind.cudaMemcpyHostToDevice,
                 "d2h": runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                 "d2d": runtime.cudaMemcpyKind.cudaMemcpyDeviceToDevice}[kind]
    check(runtime.cudaMemcpyAsync(destination, source, nbytes, direction, stream.handle), f"cudaMemcpyAsync {kind}")


class CapturedGraph:
    """One stream's work captured as a CUDA graph and instantiated, replayed with `launch`."""

    def __init__(self, graph_exec: Any) -> None:
        self._exec = graph_exec
        self._finalizer = weakref.finalize(self, _runtime().cudaGraphExecDestroy, graph_exec)

    def launch(self, stream: Stream) -> None:
        check(_runtime().cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")


def capture(stream: Stream, enqueue) -> CapturedGraph | None:
    """Capture what `enqueue()` issues on `stream` (it returns False on failure) as a graph. None
    when capture is not possible (an op that cannot be captured, a failed enqueue): the stream is
    left out of capture mode and the error cleared, so the caller falls back to plain enqueues."""
    runtime = _runtime()
    mode = runtime.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
    check(runtime.cudaStreamBeginCapture(stream.handle, mode), "cudaStreamBeginCapture")
    try:
        enqueued = enqueue()
    finally:
        err, graph = runtime.cudaStreamEndCapture(stream.handle)
    runtime.cudaGetLastError()  # a failed capture leaves a sticky-free error behind; clear it
    if not enqueued or err != runtime.cudaError_t.cudaSuccess or graph is None:
        return None
    try:
        err, graph_exec = runtime.cudaGraphInstantiate(graph, 0)
    finally:
        runtime.cudaGraphDestroy(graph)
    if err != runtime.cudaError_t.cudaSuccess:
        runtime.cudaGetLastError()
        return None
    return CapturedGraph(graph_exec)
