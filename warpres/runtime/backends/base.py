"""What every backend implements: run one stage on named numpy arrays, and hand the session the
Device it runs stages on (ARCHITECTURE §3).

The runtime owns the stage graph, batching and the cache; a backend only runs a stage. Arrays
cross `run` as C-contiguous float32 numpy arrays, batch first, named as in warpres.stages. A CPU
ONNX backend's device is a `HostDevice` over `run`; the torch backend's (`TorchDevice`) and the
TensorRT backend's keep tensors where they compute (GPU memory on a GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import numpy as np

from warpres.stages import Stage

if TYPE_CHECKING:  # warpres.runtime.device builds on this protocol
    from warpres.runtime.device import Device


class Backend(Protocol):
    name: str
    """What runs the graphs, as shown to users: e.g. "openvino (bf16, CPU)"."""

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs named by `stage.inputs` -> outputs named by `stage.outputs`, same batch."""
        ...

    def as_device(self) -> Device:
        """The Device the session runs this backend's stages on."""
        ...
