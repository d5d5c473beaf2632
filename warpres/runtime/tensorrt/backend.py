"""The TensorRT backend the registry creates (warpres.runtime.backends): the session runs on its
`TensorRTDevice` (warpres.runtime.tensorrt.device).

    session = Session("exported/warpres-ffhq", backend="tensorrt")          # fp16 engines if built
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from warpres.runtime.tensorrt.device import TensorRTDevice
from warpres.stages import ModelFolder, Stage


class TensorRTBackend:
    """The backend object the registry returns: `as_device()` is the CUDA device the session runs on;
    `run` is one stage on host arrays (upload, run, download), for checks such as `selftest`."""

    def __init__(self, folder: ModelFolder, **options: Any) -> None:
        self._device = TensorRTDevice(folder, **options)
        self.name = self._device.name
        self.folder = folder

    def as_device(self) -> TensorRTDevice:
        return self._device

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        device = self._device
        tensors = {name: device.upload(np.asarray(array, dtype=np.float32), f"{stage.name}.{name}", 0)
                   for name, array in feeds.items()}
        outputs = device.run(stage, tensors, 0)
        pending = {name: device.download(tensor, f"{stage.name}.{name}", 0) for name, tensor in outputs.items()}
        return {name: download.result() for name, download in pending.items()}
