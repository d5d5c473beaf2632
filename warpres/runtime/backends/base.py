"""What every backend implements: run one stage on named numpy arrays (ARCHITECTURE §3).

The runtime owns the stage graph, batching and the cache; a backend only runs a stage. Arrays
cross the boundary as C-contiguous float32 numpy arrays, batch first, named as in
warpres.stages.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from warpres.stages import Stage


class Backend(Protocol):
    name: str
    """What runs the graphs, as shown to users: e.g. "openvino (bf16, CPU)"."""

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Inputs named by `stage.inputs` -> outputs named by `stage.outputs`, same batch."""
        ...
