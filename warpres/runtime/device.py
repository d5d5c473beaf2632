"""Where stage tensors live between stages: the one seam between the session's orchestration and
the hardware (ARCHITECTURE §3).

The session (stage order, chunking, the per-image cache, double buffering) is written once,
against `Device`. A CPU backend runs behind `HostDevice`, whose tensors are numpy arrays; the
TensorRT backend behind its CUDA device (`warpres.runtime.tensorrt.device`), whose tensors stay
in GPU memory from stage to stage, so only images and W+ cross to the host.

The contract every device keeps, and the session relies on:

- Work is issued on a *pipeline* (0 .. pipelines-1): a CUDA stream with its own buffers. Work on
  one pipeline runs in issue order; different pipelines may overlap.
- A tensor from `upload`, `run` or `gather` lives in a buffer its pipeline reuses: it stays valid
  until that pipeline next issues the same *slot* (the upload or gather slot name, or the stage
  output) with the same shape. What must outlive that is copied with `split` (per-image copies
  the cache owns, usable from any pipeline).
- `download` is asynchronous: its `Pending.result()` waits for the copy. A pipeline's pending
  download must be collected before the pipeline downloads the same slot again.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from warpres.errors import BackendError
from warpres.runtime.backends.base import Backend
from warpres.stages import Stage

Tensor = Any
"""A device's tensor: numpy on the host, a GPU buffer view on CUDA; has .shape and .nbytes."""


class Pending(Protocol):
    def result(self) -> np.ndarray:
        """The downloaded array (float32, C-contiguous), once the copy has finished."""
        ...


class Device(Protocol):
    name: str
    """What runs the graphs, as shown to users."""
    pipelines: int
    """How many pipelines may be in flight at once (1: everything runs in order)."""

    def upload(self, array: np.ndarray, slot: str, pipeline: int) -> Tensor:
        """A float32 host array on the device."""
        ...

    def run(self, stage: Stage, feeds: Mapping[str, Tensor], pipeline: int) -> dict[str, Tensor]:
        """Issue one stage; outputs named by `stage.outputs`."""
        ...

    def split(self, tensor: Tensor, pipeline: int) -> list[Tensor]:
        """Owned per-image copies of a batched tensor, (B, ...) -> B x (...)."""
        ...

    def gather(self, tensors: Sequence[Tensor], slot: str, pipeline: int) -> Tensor:
        """Per-image tensors (from `split`, any pipeline) stacked into one batch in a slot buffer."""
        ...

    def download(self, tensor: Tensor, slot: str, pipeline: int) -> Pending:
        """Start copying a tensor to the host."""
        ...

    def start_timing(self) -> None:
        """Record the time of every stage run from now on."""
        ...

    def stop_timing(self) -> dict[str, list[float]]:
        """Seconds per stage run since `start_timing`, per stage name; stops recording."""
        ...


class Ready:
    """A download that has already finished (host devices copy nothing)."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def result(self) -> np.ndarray:
        return self._array


class HostDevice:
    """A CPU backend as a device: tensors are numpy arrays, everything runs in order on one
    pipeline, and every stage's outputs are checked for NaN / inf where they are made (it costs
    nothing next to a CPU stage, and the error names the stage)."""

    pipelines = 1

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._times: dict[str, list[float]] | None = None

    @property
    def name(self) -> str:
        return self.backend.name

    def upload(self, array: np.ndarray, slot: str, pipeline: int) -> np.ndarray:
        return np.ascontiguousarray(array, dtype=np.float32)

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray], pipeline: int) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        outputs = self.backend.run(stage, feeds)
        if self._times is not None:
            self._times[stage.name].append(time.perf_counter() - start)
        for name in stage.outputs:
            if not np.all(np.isfinite(outputs[name])):
                raise BackendError(f"{self.name}: stage {stage.name} produced NaN or inf in {name}")
        return outputs

    def split(self, tensor: np.ndarray, pipeline: int) -> list[np.ndarray]:
        # copies, so one cached image never keeps its whole batch alive
        return [row.copy() for row in tensor]

    def gather(self, tensors: Sequence[np.ndarray], slot: str, pipeline: int) -> np.ndarray:
        return np.stack(tensors)

    def download(self, tensor: np.ndarray, slot: str, pipeline: int) -> Ready:
        return Ready(tensor)

    def start_timing(self) -> None:
        self._times = defaultdict(list)

    def stop_timing(self) -> dict[str, list[float]]:
        times, self._times = self._times or {}, None
        return dict(times)
