"""Calibration data from the real pipeline: every stage's inputs as a Session feeds them.

The images are inverted and edited through an ordinary Session (the FP32 graphs on a CPU
backend), so each stage sees the distribution it sees at run time: the encoder the user's
images, the synthesis head their W+ and the edited W+, the residual encoder, flow head, fuse and
tail the activations those produce. Nothing here names a stage's inputs: the Session's dataflow
walk does, and a recording device keeps what it was fed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from warpres.stages import Stage


class RecordingDevice:
    """A host Device that keeps a copy of every stage call's feeds (stage name -> input name ->
    list of batches) and otherwise runs as the device it wraps."""

    def __init__(self, device) -> None:
        self._device = device
        self.feeds: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray], pipeline: int) -> dict[str, np.ndarray]:
        for name, value in feeds.items():
            self.feeds[stage.name][name].append(np.array(value, dtype=np.float32))
        return self._device.run(stage, feeds, pipeline)

    def __getattr__(self, name: str):  # upload, split, gather, download, timing: the wrapped device's
        return getattr(self._device, name)


def collect_stage_inputs(session, images: Sequence[np.ndarray], edit_sets: Sequence, *, batch_size: int = 4,
                         progress: Callable[[int], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{stage name: {input name: (N, ...) float32}} for every stage of `session`'s model: the
    images inverted in batches of `batch_size`, each batch rendered under every edit set (None:
    the reconstruction). `session` runs on a host device (onnxruntime or openvino, FP32);
    `progress(n)` is called after each batch of n images."""
    recorder = RecordingDevice(session.device)
    session.device = recorder  # the Session's own walk decides every feed; the recorder only listens
    try:
        for start in range(0, len(images), batch_size):
            batch = list(images[start:start + batch_size])
            session.edit_many(session.invert(batch), list(edit_sets))
            if progress is not None:
                progress(len(batch))
    finally:
        session.device = recorder._device
    return {stage: {name: np.concatenate(batches) for name, batches in inputs.items()}
            for stage, inputs in recorder.feeds.items()}
