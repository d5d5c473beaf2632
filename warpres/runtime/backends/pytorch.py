"""The eager PyTorch backend: the reference every parity test compares against.

It runs the same stage modules the exporter traces (warpres.models.subgraphs). PyTorch and the
models are imported only when this backend is created, so the rest of the runtime stays
deployable without them. On CPUs with AMX, `precision="bf16"` autocasts convolutions to
bfloat16 and keeps activations channels-last, where oneDNN's AMX kernels run ~7x faster.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import numpy as np

from warpres.errors import BackendError
from warpres.precision import check_backend_precision, normalize_precision
from warpres.runtime.device import HostDevice
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
        if self._channels_last:  # Module.to converts in place: leave the caller's model as it was
            model = copy.deepcopy(model).to(self.device, memory_format=torch.channels_last)
        else:
            model = model.to(self.device)
        model.eval()
        self._modules = {stage.name: stage_module(model, stage) for stage in stages_for(model.family)}
        self.name = f"torch ({precision}, {self.device.type.upper()})"

    def as_device(self) -> HostDevice:
        """Host arrays, stages in order (warpres.runtime.device)."""
        return HostDevice(self)

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        module = self._modules.get(stage.name)
        if module is None:
            raise BackendError(f"this model has no {stage.name} stage")
        missing = [name for name in stage.inputs if name not in feeds]
        if missing:
            raise BackendError(f"{stage.name}: missing inputs {missing}")
        inputs = [self._tensor(feeds[name]) for name in stage.inputs]
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            outputs = module(*inputs)
        return {name: np.ascontiguousarray(out.float().cpu().numpy())
                for name, out in zip(stage.outputs, outputs, strict=True)}

    def _tensor(self, array: np.ndarray):
        tensor = self._torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)
        if self._channels_last and tensor.ndim == 4:
            tensor = tensor.contiguous(memory_format=self._torch.channels_last)
        return tensor
