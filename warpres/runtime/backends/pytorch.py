"""The eager PyTorch backend: the reference every parity test compares against.

It runs the same stage modules the exporter traces (warpres.models.subgraphs). PyTorch and the
models are imported only when this backend is created, so the rest of the runtime stays
deployable without them. On CPUs with AMX, `precision="bf16"` autocasts convolutions to
bfloat16 and keeps activations channels-last, where oneDNN's AMX kernels run ~7x faster.

The session runs it through `TorchDevice`: stage tensors stay torch tensors where the model
runs, so on a GPU (`device="cuda"`) only images and W+ cross to the host, as with TensorRT. A
host round trip per stage made FFHQ-1024 on an H200 transfer-bound: 12 images/s at batch 1, 4
and 16 alike (benchmarks/results/gpu_reference.md).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence

import numpy as np

from warpres.errors import BackendError
from warpres.precision import check_backend_precision, normalize_precision
from warpres.runtime.device import HostDevice, Ready
from warpres.stages import Stage, stages_for


class TorchBackend:
    def __init__(self, model, *, precision: str | None = "fp32", device: str = "cpu") -> None:
        precision = normalize_precision(precision) or "fp32"
        check_backend_precision("torch", precision)
        import torch

        from warpres.models.subgraphs import stage_module

        self._torch = torch
        self.precision = precision
        self.device = torch.device(device)
        self._channels_last = precision == "bf16"
        on_device = all(param.device == self.device for param in model.parameters())
        if self._channels_last or not on_device:  # Module.to converts in place: leave the caller's model as it was
            model = copy.deepcopy(model).to(self.device, memory_format=(
                torch.channels_last if self._channels_last else torch.preserve_format))
        model.eval()
        self._modules = {stage.name: stage_module(model, stage) for stage in stages_for(model.family)}
        self.name = f"torch ({precision}, {self.device.type.upper()})"

    def as_device(self) -> TorchDevice:
        """Torch tensors on this backend's device, stages in order (warpres.runtime.device)."""
        return TorchDevice(self)

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One stage on host arrays (what the parity checks call)."""
        outputs = self.run_tensors(stage, {name: self.tensor(array) for name, array in feeds.items()})
        return {name: to_numpy(out) for name, out in outputs.items()}

    def run_tensors(self, stage: Stage, feeds: Mapping[str, object]) -> dict[str, object]:
        """One stage on torch tensors already on this backend's device; float32 outputs there."""
        torch = self._torch
        module = self._modules.get(stage.name)
        if module is None:
            raise BackendError(f"this model has no {stage.name} stage")
        missing = [name for name in stage.inputs if name not in feeds]
        if missing:
            raise BackendError(f"{stage.name}: missing inputs {missing}")
        inputs = [self._layout(feeds[name]) for name in stage.inputs]
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            outputs = module(*inputs)
        return {name: out.float() for name, out in zip(stage.outputs, outputs, strict=True)}

    def tensor(self, array: np.ndarray):
        """A host array as a float32 tensor on this backend's device."""
        return self._torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def _layout(self, tensor):
        if self._channels_last and tensor.ndim == 4:
            return tensor.contiguous(memory_format=self._torch.channels_last)
        return tensor


def to_numpy(tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().float().cpu().numpy())


class TorchDevice(HostDevice):
    """The torch backend as a device: a `HostDevice` (one pipeline, per-stage NaN / inf checks,
    the same timing) whose tensors are torch tensors on the backend's device. While timing is on,
    each stage synchronises the device around it, so its time is its own even on CUDA."""

    backend: TorchBackend

    def upload(self, array: np.ndarray, slot: str, pipeline: int):
        return self.backend.tensor(array)

    def run(self, stage: Stage, feeds: Mapping[str, object], pipeline: int) -> dict[str, object]:
        torch = self.backend._torch
        if self._times is not None:
            self._synchronize()
            start = time.perf_counter()
        outputs = self.backend.run_tensors(stage, feeds)
        if self._times is not None:
            self._synchronize()
            self._times[stage.name].append(time.perf_counter() - start)
        for name in stage.outputs:
            if not bool(torch.isfinite(outputs[name]).all()):
                raise BackendError(f"{self.name}: stage {stage.name} produced NaN or inf in {name}")
        return outputs

    def split(self, tensor, pipeline: int) -> list:
        # copies, so one cached image never keeps its whole batch alive
        return [row.clone() for row in tensor]

    def gather(self, tensors: Sequence, slot: str, pipeline: int):
        return self.backend._torch.stack(list(tensors))

    def download(self, tensor, slot: str, pipeline: int) -> Ready:
        return Ready(to_numpy(tensor))

    def _synchronize(self) -> None:
        if self.backend.device.type == "cuda":
            self.backend._torch.cuda.synchronize(self.backend.device)
