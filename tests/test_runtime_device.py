"""The session's orchestration against the device contract (warpres.runtime.device), on a strict
fake device: its tensors are opaque (the session cannot read them on the host), each lives in a
slot buffer that its pipeline's next use of the slot overwrites, and every transfer is logged.
The TensorRT backend's CUDA device keeps the same contract with real buffers and streams."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from conftest import tiny_editing_model

from warpres.edits import DirectionLibrary, LinearDirection
from warpres.runtime.device import HostDevice
from warpres.runtime.session import Session
from warpres.stages import ENCODER


@dataclass(frozen=True, eq=False)
class Opaque:
    """A tensor the host cannot read: numpy operations on it fail."""

    value: np.ndarray
    pipeline: int | None  # None: an owned copy from split, usable on any pipeline
    slot: tuple | None
    generation: int

    @property
    def shape(self) -> tuple[int, ...]:
        return self.value.shape

    @property
    def nbytes(self) -> int:
        return self.value.nbytes


class StaleTensor(AssertionError):
    pass


class StrictDevice:
    """Computes with a host backend, enforces the buffer rules of the contract, logs transfers."""

    def __init__(self, backend, pipelines: int) -> None:
        self.host = HostDevice(backend)
        self.name = f"strict fake ({pipelines} pipelines)"
        self.pipelines = pipelines
        self.generations: Counter = Counter()
        self.uploads: list[tuple[str, int]] = []
        self.downloads: list[tuple[str, int]] = []
        self.stages: list[tuple[str, int]] = []
        self.uncollected: dict[tuple[int, str], bool] = {}
        self.crossed = 0  # cache entries made on one pipeline and gathered on another
        self.made_on: dict[int, int] = {}

    def _new(self, value: np.ndarray, pipeline: int, slot: tuple) -> Opaque:
        key = (pipeline, slot, value.shape)
        self.generations[key] += 1
        return Opaque(value, pipeline, key, self.generations[key])

    def _read(self, tensor: Opaque, pipeline: int) -> np.ndarray:
        assert isinstance(tensor, Opaque), f"the session passed a host {type(tensor).__name__} to the device"
        if tensor.pipeline is not None:
            if tensor.pipeline != pipeline:
                raise StaleTensor(f"slot {tensor.slot} of pipeline {tensor.pipeline} read on pipeline {pipeline}")
            if self.generations[tensor.slot] != tensor.generation:
                raise StaleTensor(f"slot {tensor.slot} read after its pipeline reused it")
        return tensor.value

    def upload(self, array, slot, pipeline):
        assert isinstance(array, np.ndarray) and array.dtype == np.float32
        self.uploads.append((slot, pipeline))
        return self._new(array.copy(), pipeline, ("upload", slot))

    def run(self, stage, feeds, pipeline):
        self.stages.append((stage.name, pipeline))
        outputs = self.host.run(stage, {name: self._read(t, pipeline) for name, t in feeds.items()}, pipeline)
        return {name: self._new(value, pipeline, (stage.name, name)) for name, value in outputs.items()}

    def split(self, tensor, pipeline):
        rows = [Opaque(row.copy(), None, None, 0) for row in self._read(tensor, pipeline)]
        self.made_on.update((id(row), pipeline) for row in rows)
        return rows

    def gather(self, tensors, slot, pipeline):
        self.crossed += sum(self.made_on[id(t)] != pipeline for t in tensors)
        return self._new(np.stack([self._read(t, pipeline) for t in tensors]), pipeline, ("gather", slot))

    def download(self, tensor, slot, pipeline):
        if self.uncollected.get((pipeline, slot)):
            raise StaleTensor(f"pipeline {pipeline} downloaded {slot} again before the last one was collected")
        self.uncollected[(pipeline, slot)] = True
        self.downloads.append((slot, pipeline))
        value = self._read(tensor, pipeline).copy()
        device = self

        class Download:
            def result(self):
                device.uncollected[(pipeline, slot)] = False
                return value

        return Download()

    def start_timing(self):
        self.host.start_timing()

    def stop_timing(self):
        return self.host.stop_timing()


def _directions(dim: int = 32) -> DirectionLibrary:
    rng = np.random.default_rng(0)
    return DirectionLibrary([LinearDirection("smile", rng.standard_normal((1, dim)).astype(np.float32))])


def _sessions(family: str, pipelines: int, **options) -> tuple[Session, Session, StrictDevice]:
    model = tiny_editing_model(family)
    reference = Session(model, backend="torch", directions=_directions(), **options)
    strict = Session(model, backend="torch", directions=_directions(), **options)
    device = strict.device = StrictDevice(strict.backend, pipelines)
    return reference, strict, device


@pytest.mark.parametrize("family", ["inversion", "styleres", "warpres"])
def test_two_pipelines_render_exactly_what_the_host_device_renders(family, images):
    reference, strict, device = _sessions(family, pipelines=2, max_batch=1)
    expected = reference.edit(reference.invert(images.numpy()), "smile=1.5")
    got = strict.edit(strict.invert(images.numpy()), "smile=1.5")
    np.testing.assert_array_equal(got, expected)
    tails = [pipeline for stage, pipeline in device.stages if stage == "synthesis_tail"]
    assert tails == [index % 2 for index in range(len(images))]  # chunks alternate between the pipelines


def test_only_latents_and_images_cross_to_the_host(images):
    _, session, device = _sessions("warpres", pipelines=2, max_batch=2)
    inversion = session.invert(images.numpy())
    assert {slot for slot, _ in device.uploads} == {"image"}
    assert {slot for slot, _ in device.downloads} == {"wplus"}
    device.uploads.clear()
    device.downloads.clear()
    session.edit(inversion, "smile=1")
    chunks = -(-len(images) // 2)
    assert Counter(slot for slot, _ in device.uploads) == {"wplus": chunks}
    assert Counter(slot for slot, _ in device.downloads) == {"image": chunks}


def test_cache_entries_made_on_one_pipeline_are_read_on_the_other(images):
    _, session, device = _sessions("warpres", pipelines=2, max_batch=1)
    session.edit(session.invert(images.numpy()))  # inverted on pipeline 0, rendered on both
    assert device.crossed > 0


def test_evicted_images_are_recomputed_on_the_pipeline_that_renders_them(images):
    reference, strict, device = _sessions("warpres", pipelines=2, max_batch=1, cache_bytes=1)
    expected = reference.edit_many(reference.invert(images.numpy()), ["smile=1", None])
    got = strict.edit_many(strict.invert(images.numpy()), ["smile=1", None])  # the cache keeps one image
    for batch, reference_batch in zip(got, expected, strict=True):
        np.testing.assert_array_equal(batch, reference_batch)
    assert strict.cache.evictions > 0
    assert ("encoder", 1) in device.stages


def test_the_strict_device_catches_a_buffer_read_after_reuse(images):
    _, session, device = _sessions("styleres", pipelines=1)
    first = device.upload(images.numpy()[:1], "image", 0)
    device.upload(images.numpy()[1:2], "image", 0)
    with pytest.raises(StaleTensor, match="reused"):
        device.run(ENCODER, {"image": first}, 0)
