"""Calibration data from the real pipeline: every stage's inputs as a Session feeds them.

The images are inverted and edited through an ordinary Session (the FP32 graphs on a CPU
backend), so each stage sees the distribution it sees at run time: the encoder the user's
images, the synthesis head their W+ and the edited W+, the residual encoder, flow head, fuse and
tail the activations those produce. Nothing here names a stage's inputs: the Session's dataflow
walk does, and a recording device keeps what it was fed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpres.edits import DirectionLibrary, EditRequest, GanSpaceDirection
from warpres.errors import CalibrationError, ImageError
from warpres.files import atomic_path, cache_root, sha256_file
from warpres.media.imageio import list_images, read_image, to_rgb8
from warpres.stages import Stage

logger = logging.getLogger(__name__)

MIN_IMAGES = 8
"""Usable images a calibration needs: a quarter (at least 2) is held out to measure accuracy."""
LINEAR_STRENGTH = 2.0
"""The strength (both signs) a linear direction is calibrated at: InterfaceGAN edits are applied at 1-3."""
EDITS_PER_BATCH = 2
"""Edit sets each batch of images is rendered under besides the reconstruction, rotating over the
directions, so every direction and sign is seen without rendering every image under every edit."""


@dataclass(frozen=True)
class CalibrationImages:
    """The usable images of a calibration folder, split into calibration and held-out images."""

    calibration: list[np.ndarray]
    held_out: list[np.ndarray]
    names: list[str]
    sha256: str
    """Over the usable files' names and contents: what the activation cache and the plan are keyed by."""


def read_calibration_images(folder: str | os.PathLike[str], minimum: int = MIN_IMAGES) -> CalibrationImages:
    """Every readable image of `folder` (unreadable or corrupt ones are skipped with a warning),
    every fourth one (at least 2) held out. Raises CalibrationError with fewer than `minimum`."""
    try:
        listing = list_images([folder])
    except ImageError as exc:
        raise CalibrationError(str(exc)) from None
    for line in listing.skipped:
        logger.warning("%s", line)
    images, names, digest = [], [], hashlib.sha256()
    for path in listing.paths:
        try:
            image = to_rgb8(read_image(path))
        except ImageError as exc:
            logger.warning("%s: skipped, unreadable (%s)", path, exc)
            continue
        images.append(image)
        names.append(path.name)
        digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    if len(images) < minimum:
        raise CalibrationError(f"{folder}: {len(images)} usable image(s); calibration needs at least {minimum} "
                               f"(a quarter is held out to measure accuracy)")
    held = set(range(0, len(images), 4))
    return CalibrationImages([im for i, im in enumerate(images) if i not in held],
                             [im for i, im in enumerate(images) if i in held], names, digest.hexdigest())


def default_edit_sets(directions: DirectionLibrary | None) -> list[tuple[EditRequest, ...]]:
    """One edit set per direction and sign at the strength users apply: linear directions at
    +-LINEAR_STRENGTH, GANSpace edits at their csv strength and its negation."""
    if directions is None:
        return []
    sets = []
    for name in directions.names:
        direction = directions.resolve(name)
        strength = direction.config.strength if isinstance(direction, GanSpaceDirection) else LINEAR_STRENGTH
        sets += [(EditRequest(name, strength),), (EditRequest(name, -strength),)]
    return sets


def both_signs(edits: Sequence[EditRequest]) -> list[tuple[EditRequest, ...]]:
    """One edit set per edit at its strength and at the negated strength (`--edits`)."""
    sets = []
    for edit in edits:
        if edit.strength is None:
            sets.append((edit,))
        else:
            sets += [(edit,), (EditRequest(edit.name, -edit.strength),)]
    return sets


def random_edit_sets(directions: DirectionLibrary | None, count: int, seed: int = 0,
                     max_strength: float = 1.5 * LINEAR_STRENGTH) -> list[tuple[EditRequest, ...]]:
    """`count` edit sets of one or two of the model's linear directions at uniform strengths in
    +-`max_strength` (`--random-edits N`); GANSpace edits keep their csv strength."""
    if directions is None or not directions.names:
        raise CalibrationError("--random-edits needs edit directions (the model folder's or --directions)")
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(count):
        names = rng.choice(directions.names, size=min(len(directions.names), int(rng.integers(1, 3))), replace=False)
        sets.append(tuple(EditRequest(str(name), None if isinstance(directions.resolve(str(name)), GanSpaceDirection)
                                      else round(float(rng.uniform(-max_strength, max_strength)), 2))
                          for name in names))
    return sets


def rotating_edits(edit_sets: Sequence, per_batch: int = EDITS_PER_BATCH) -> Callable[[int], list]:
    """batch index -> the reconstruction (None) and the next `per_batch` of `edit_sets`, round robin."""
    def for_batch(index: int) -> list:
        if not edit_sets:
            return [None]
        count = min(per_batch, len(edit_sets))
        return [None, *(edit_sets[(index * count + k) % len(edit_sets)] for k in range(count))]
    return for_batch


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


def collect_stage_inputs(session, images: Sequence[np.ndarray], edit_sets: Sequence | Callable[[int], Sequence], *,
                         batch_size: int = 4,
                         progress: Callable[[int], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{stage name: {input name: (N, ...) float32}} for every stage of `session`'s model: the
    images inverted in batches of `batch_size`, each batch rendered under every edit set (None:
    the reconstruction) of `edit_sets`, or of `edit_sets(batch index)`. `session` runs on a host
    device (onnxruntime or openvino, FP32); `progress(n)` is called after each batch of n images."""
    recorder = RecordingDevice(session.device)
    session.device = recorder  # the Session's own walk decides every feed; the recorder only listens
    try:
        for start in range(0, len(images), batch_size):
            batch = list(images[start:start + batch_size])
            sets = edit_sets(start // batch_size) if callable(edit_sets) else edit_sets
            session.edit_many(session.invert(batch), list(sets))
            if progress is not None:
                progress(len(batch))
    finally:
        session.device = recorder._device
    return {stage: {name: np.concatenate(batches) for name, batches in inputs.items()}
            for stage, inputs in recorder.feeds.items()}


def activation_key(graph_hashes: Mapping[str, str], images_sha256: str, edit_sets: Sequence) -> str:
    """The activation cache's key: every stage graph's hash, the images' hash and the edits."""
    text = repr((sorted(graph_hashes.items()), images_sha256, [repr(e) for e in edit_sets]))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def activation_cache_dir() -> Path:
    return cache_root() / "calibration"


def cached_stage_inputs(key: str, collect: Callable[[], dict[str, dict[str, np.ndarray]]],
                        cache_dir: Path | None = None) -> tuple[dict[str, dict[str, np.ndarray]], bool]:
    """(the stage inputs stored under `key`, True), or (collect(), False) after storing them.
    An unreadable cache file is collected again; a cache that cannot be written only warns."""
    path = (cache_dir or activation_cache_dir()) / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                feeds: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
                for item in stored.files:
                    stage, name = item.split("/", 1)
                    feeds[stage][name] = stored[item]
            return dict(feeds), True
        except (OSError, ValueError) as exc:
            logger.warning("%s: unreadable activation cache (%s); collecting again", path, exc)
    feeds = collect()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **{f"{stage}/{name}": value for stage, inputs in feeds.items()
                                for name, value in inputs.items()})
    except OSError as exc:
        logger.warning("%s: cannot store the activation cache (%s)", path, exc)
    return feeds, False
