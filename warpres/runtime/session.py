"""Session: invert once, edit many times, on any backend (ARCHITECTURE §1, §3).

The session owns the stage graph, the chunking and the per-image cache; a backend only runs one
stage, on a device (warpres.runtime.device) whose tensors stay where the backend computes them.
`invert` runs everything that depends on the image alone (encoder, synthesis head of the
original latent, E1) and caches it; every `edit` of those images reruns only the head of the
edited latent, the flow (WarpRes), the fuse and the tail. The cache is an LRU bounded in bytes:
an evicted image is recomputed from the encoder input its handle keeps, so a handle never
goes stale and memory stays bounded. Cache entries live on the device (GPU memory under
TensorRT), so a re-edit uploads only the edited W+ and downloads only the image.
"""

from __future__ import annotations

import itertools
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpres.edits import DirectionLibrary, EditRequest, parse_edit_spec
from warpres.errors import BackendError, EditError, ImageError, WarpresError
from warpres.files import cache_root
from warpres.images import to_model_input, to_uint8
from warpres.precision import check_backend_precision, normalize_precisions
from warpres.runtime.backends.base import Backend
from warpres.runtime.device import Device, Pending, Tensor
from warpres.stages import (
    ENCODER,
    OUTPUT,
    PORTABLE,
    SYNTHESIS_TAIL,
    ModelFolder,
    Stage,
    Step,
    cached_tensors,
    is_model_folder,
    open_model_folder,
    run_steps,
    stages_for,
    walk,
)

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 2 << 30  # ~90 FFHQ-1024 WarpRes images (~22 MB each)
DEFAULT_MAX_BATCH = 8
CHANNEL_ORDERS = ("rgb", "bgr")

LatentEdit = Callable[[np.ndarray], np.ndarray]
Edits = str | EditRequest | LatentEdit | Sequence[str | EditRequest | LatentEdit] | None
LatentFilter = Callable[[np.ndarray], np.ndarray]
CheckpointExporter = Callable[[Path, Path], ModelFolder]
"""(checkpoint file, folder) -> the exported model folder, e.g. warpres.export.export_checkpoint."""


@dataclass(frozen=True)
class ModelInfo:
    """What the session runs: family, encoder input size Senc, output size R, W+ shape (L, D)."""

    family: str
    image_size: int
    resolution: int
    latent_shape: tuple[int, int]

    @property
    def stages(self) -> tuple[Stage, ...]:
        return stages_for(self.family)


@dataclass(frozen=True, eq=False)
class ImageHandle:
    """One inverted image: its cache key, its encoder input (3, Senc, Senc) kept so an evicted
    cache entry can be recomputed, the W+ (L, D) its edits start from, and the kind of output
    its edits return (see Inversion)."""

    key: int
    session_id: int
    image: np.ndarray
    wplus: np.ndarray
    output: str = "pixels"
    channels: str = "rgb"


@dataclass(frozen=True)
class Inversion:
    """The handles of one `invert` call, in input order, and how outputs should look:
    "pixels" (uint8 (B, R, R, 3) in `channels` order), "array" (float32 (B, 3, R, R) in
    [-1, 1]) or "tensor" (a torch tensor like the array)."""

    handles: tuple[ImageHandle, ...]
    output: str
    channels: str = "rgb"

    def __len__(self) -> int:
        return len(self.handles)

    def __iter__(self) -> Iterator[ImageHandle]:
        return iter(self.handles)

    def __getitem__(self, index: int | slice) -> ImageHandle | Inversion:
        if isinstance(index, slice):
            return Inversion(self.handles[index], self.output, self.channels)
        return self.handles[index]

    @property
    def wplus(self) -> np.ndarray:
        """(B, L, D) latents the edits start from."""
        return np.stack([handle.wplus for handle in self.handles])


class FeatureCache:
    """LRU of per-image tensors, bounded by their total bytes (the newest entry always stays)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise WarpresError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: int) -> bool:
        return key in self._entries

    def get(self, key: int) -> dict[str, np.ndarray] | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return entry

    def put(self, key: int, entry: dict[str, np.ndarray]) -> None:
        if key in self._entries:
            self.bytes -= _nbytes(self._entries.pop(key))
        self._entries[key] = entry
        self.bytes += _nbytes(entry)
        while self.bytes > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= _nbytes(evicted)
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _nbytes(entry: Mapping[str, np.ndarray]) -> int:
    return sum(array.nbytes for array in entry.values())


_session_ids = itertools.count()


class Session:
    """invert / edit / edit_batch over one backend, with the per-image cache.

    model: an exported model folder (``manifest.json``), a checkpoint file in any format
    `warpres.checkpoints.load_checkpoint` reads, or an EditingModel. A checkpoint used with an
    ONNX backend is exported once into `export_cache` (default ``~/.cache/warpres/models``),
    keyed by the checkpoint's SHA-256, by `exporter` (warpres.export.export_checkpoint, handed
    in: the runtime does not import the exporter); a model folder needs neither. backend: "auto"
    (TensorRT engines on a GPU, then ONNX Runtime CUDA, then OpenVINO, then ONNX Runtime CPU),
    "openvino", "onnxruntime", "tensorrt" or "torch".
    directions: extra edit directions (a DirectionLibrary, a folder of official edit files or
    a folder written by DirectionLibrary.save), merged with the model folder's own.
    channels: order of uint8 pixels in and out ("bgr" takes OpenCV frames as they come).
    backend_options: passed to the backend (warpres.runtime.backends.create_backend), e.g.
    {"cuda_graphs": False} for tensorrt or {"device": "cuda"} for torch.
    """

    def __init__(self, model, backend: str = "auto", *, precision: str | Mapping[str, str] | None = None,
                 directions: DirectionLibrary | str | os.PathLike[str] | None = None,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
                 channels: str = "rgb", export_cache: str | os.PathLike[str] | None = None,
                 exporter: CheckpointExporter | None = None,
                 backend_options: Mapping[str, object] | None = None) -> None:
        if channels not in CHANNEL_ORDERS:
            raise WarpresError(f"channels must be one of {CHANNEL_ORDERS}, got {channels!r}")
        if max_batch < 1:
            raise WarpresError(f"max_batch must be >= 1, got {max_batch}")
        self.channels = channels
        self.max_batch = max_batch
        self.cache = FeatureCache(cache_bytes)
        self._id = next(_session_ids)
        self._keys = itertools.count()
        self.backend, self.info, own_directions, self.backend_reason = _open(
            model, backend, precision, (export_cache, exporter), dict(backend_options or {}))
        self.device: Device = self.backend.as_device()
        self.directions = _merge_directions(own_directions, directions)
        # the dataflow walks of this family: encode (image -> W+), the rest of an inversion (W+ ->
        # the cache), an evicted entry's recomputation (image + the handle's W+ -> the cache), an edit
        family = self.info.family
        self._cache_names = cached_tensors(family)
        self._encode = walk(family, {"image"}, {"wplus"})
        encoded = {"image", *(tensor for step in self._encode for _, tensor in step.produces)}
        self._invert = walk(family, encoded, self._cache_names)
        self._recompute = walk(family, {"image", "wplus"}, self._cache_names)
        self._edit = walk(family, {*self._cache_names, "wplus_edit"}, {OUTPUT})

    # -- invert -------------------------------------------------------------------------------

    def invert(self, images, *, latent_filter: LatentFilter | None = None) -> Inversion:
        """Encode images and cache everything an edit of them reuses.

        images: uint8 / uint16 pixels (one (H, W[, C]) image, a (B, H, W, C) batch or a list of
        any sizes; gray, RGB(A)), or float model input (B, 3, Senc, Senc) in [-1, 1] as a numpy
        array or torch tensor. Edits of the result come back in the same kind.
        latent_filter: maps W+ (b, L, D) to the W+ to use (e.g. temporal smoothing); called once per
        chunk of up to max_batch images, in input order.
        """
        encoder_input, output = self._encoder_input(images)
        device, pipeline = self.device, 0  # W+ comes back to the host per chunk, so chunks run in order
        handles: list[ImageHandle] = []
        for start in range(0, len(encoder_input), self.max_batch):
            chunk = encoder_input[start:start + self.max_batch]
            tensors = self._run(self._encode, {"image": device.upload(chunk, "image", pipeline)}, pipeline)
            wplus = self._collect(device.download(tensors["wplus"], "wplus", pipeline), ENCODER, "wplus")
            if latent_filter is not None:
                wplus = self._checked_latents(latent_filter(wplus.copy()), wplus.shape, "latent_filter")
                tensors["wplus"] = device.upload(wplus, "wplus", pipeline)
            entries = self._split(self._run(self._invert, tensors, pipeline), len(chunk), pipeline)
            for index, entry in enumerate(entries):
                # copies, so one handle never keeps its whole batch alive
                handle = ImageHandle(next(self._keys), self._id, chunk[index].copy(), wplus[index].copy(), output,
                                     self.channels)
                self.cache.put(handle.key, entry)
                handles.append(handle)
        return Inversion(tuple(handles), output, self.channels)

    def _run(self, steps: Sequence[Step], tensors: dict[str, Tensor], pipeline: int) -> dict[str, Tensor]:
        """Issue `steps` of the dataflow on `pipeline`, adding their outputs to `tensors`."""
        return run_steps(steps, tensors, lambda step, feeds: self.device.run(step.stage, feeds, pipeline))

    def _split(self, tensors: dict[str, Tensor], count: int, pipeline: int) -> list[dict[str, Tensor]]:
        """Per-image cache entries (owned copies) of the batched tensors an edit reads."""
        columns = {name: self.device.split(tensors[name], pipeline) for name in self._cache_names}
        return [{name: column[index] for name, column in columns.items()} for index in range(count)]

    def _cached(self, handles: Sequence[ImageHandle], pipeline: int) -> dict[str, Tensor]:
        """The cached tensors of `handles`, batched (B, ...) on `pipeline`; evicted ones are recomputed."""
        device = self.device
        entries: list[dict[str, Tensor] | None] = [self.cache.get(h.key) for h in handles]
        missing = [i for i, entry in enumerate(entries) if entry is None]
        if missing:
            log.debug("recomputing %d evicted cache entries", len(missing))
            held = {"image": device.upload(np.stack([handles[i].image for i in missing]), "image", pipeline),
                    "wplus": device.upload(np.stack([handles[i].wplus for i in missing]), "wplus", pipeline)}
            recomputed = self._split(self._run(self._recompute, held, pipeline), len(missing), pipeline)
            for i, entry in zip(missing, recomputed, strict=True):
                entries[i] = entry
                self.cache.put(handles[i].key, entry)
        return {name: device.gather([entry[name] for entry in entries], f"cached.{name}", pipeline)
                for name in self._cache_names}

    # -- edit ---------------------------------------------------------------------------------

    def edit(self, inversion: Inversion | ImageHandle | Sequence[ImageHandle], edits: Edits = None):
        """Apply `edits` in order to the inverted latents and render (B images, the kind
        `invert` was given). No edits renders the reconstruction (with residuals)."""
        inversion = self._as_inversion(inversion)
        return self._render(inversion, self.edited_latents(inversion, edits))

    def edit_many(self, inversion: Inversion | ImageHandle | Sequence[ImageHandle],
                  edit_sets: Sequence[Edits]) -> list:
        """Several edits of the same images, batched together: one output per edit set."""
        inversion = self._as_inversion(inversion)
        if not edit_sets:
            return []
        latents = np.concatenate([self.edited_latents(inversion, edits) for edits in edit_sets])
        tiled = Inversion(inversion.handles * len(edit_sets), inversion.output, inversion.channels)
        images = self._render(tiled, latents)
        size = len(inversion)
        return [images[i * size:(i + 1) * size] for i in range(len(edit_sets))]

    def edit_tensors(self, inversion: Inversion | ImageHandle | Sequence[ImageHandle], edits: Edits,
                     names: Sequence[str]) -> dict[str, np.ndarray]:
        """Dataflow tensors an edit computes on the way to its image (e.g. WarpRes's ``flow``, the
        fused ``feat_fused``, the synthesis head's low-rate ``rgb_edit``: a preview), for inspection:
        name -> float32 (B, ...) on the host. Only the stages those tensors need run."""
        inversion = self._as_inversion(inversion)
        produced = {target for step in self._edit for _, target in step.produces}
        unknown = sorted(set(names) - produced)
        if unknown:
            raise WarpresError(f"a {self.info.family} edit computes no {', '.join(unknown)}; it computes "
                               f"{', '.join(sorted(produced))}")
        needed, steps = set(names), []
        for step in reversed(self._edit):          # the steps the names depend on, nothing after them
            if any(target in needed for _, target in step.produces):
                steps.insert(0, step)
                needed |= {source for _, source in step.feeds}
        wplus_edit = self.edited_latents(inversion, edits)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        for start in range(0, len(inversion), self.max_batch):
            part = slice(start, start + self.max_batch)
            tensors = self._cached(inversion.handles[part], 0)
            tensors["wplus_edit"] = self.device.upload(wplus_edit[part], "wplus", 0)
            tensors = self._run(steps, tensors, 0)
            for name in names:
                parts[name].append(self.device.download(tensors[name], name, 0).result())
        return {name: np.concatenate(arrays) for name, arrays in parts.items()}

    def edit_batch(self, images, edits: Edits = None):
        """invert + edit in one call (nothing stays cached for reuse beyond the LRU)."""
        return self.edit(self.invert(images), edits)

    def check_edits(self, edit_sets: Sequence[Edits]) -> None:
        """Raise EditError for a malformed spec or an unknown direction name, before any work."""
        for edits in edit_sets:
            for edit in _edit_items(edits):
                if callable(edit):
                    continue
                if self.directions is None:
                    raise EditError(f"edit {edit!r} names a direction, but this model has no edit directions; "
                                    f"give a directions folder (--directions / directions=)")
                for request in parse_edit_spec(edit) if isinstance(edit, str) else [edit]:
                    self.directions.resolve(request.name)

    def edited_latents(self, inversion: Inversion, edits: Edits) -> np.ndarray:
        """The inversion's W+ (B, L, D) with `edits` applied in order."""
        wplus = inversion.wplus
        self.check_edits([edits])
        for edit in _edit_items(edits):
            if callable(edit):
                wplus = self._checked_latents(edit(wplus.copy()), wplus.shape, "edit function")
            else:
                wplus = self.directions.apply(wplus, parse_edit_spec(edit) if isinstance(edit, str) else [edit])
        return np.ascontiguousarray(wplus, dtype=np.float32)

    def _render(self, inversion: Inversion, wplus_edit: np.ndarray):
        """Render in chunks of max_batch, round-robin over the device's pipelines: chunk i+1 is
        uploaded and computed while chunk i is still computing or downloading."""
        in_flight: deque[Pending] = deque()
        images = []
        for index, start in enumerate(range(0, len(inversion), self.max_batch)):
            part = slice(start, start + self.max_batch)
            if len(in_flight) == self.device.pipelines:  # that pipeline's download slot is needed again
                images.append(self._collect(in_flight.popleft(), SYNTHESIS_TAIL, "image"))
            in_flight.append(self._render_chunk(inversion.handles[part], wplus_edit[part],
                                                index % self.device.pipelines))
        images.extend(self._collect(pending, SYNTHESIS_TAIL, "image") for pending in in_flight)
        return self._as_output(np.concatenate(images), inversion)

    def _render_chunk(self, handles: Sequence[ImageHandle], wplus_edit: np.ndarray, pipeline: int) -> Pending:
        tensors = self._cached(handles, pipeline)
        tensors["wplus_edit"] = self.device.upload(wplus_edit, "wplus", pipeline)
        return self.device.download(self._run(self._edit, tensors, pipeline)[OUTPUT], "image", pipeline)

    # -- plumbing -----------------------------------------------------------------------------

    def _collect(self, pending: Pending, stage: Stage, name: str) -> np.ndarray:
        """A finished download, checked: NaN or inf anywhere upstream ends up in it."""
        array = pending.result()
        if not np.all(np.isfinite(array)):
            raise BackendError(f"{self.device.name}: stage {stage.name} produced NaN or inf in {name}")
        return array

    def _as_inversion(self, value) -> Inversion:
        if isinstance(value, ImageHandle):
            value = (value,)
        if not isinstance(value, Inversion):
            handles = tuple(value)
            if not handles or not all(isinstance(h, ImageHandle) for h in handles):
                raise WarpresError("edit takes what invert returned (an Inversion, or its ImageHandles)")
            value = Inversion(handles, handles[0].output, handles[0].channels)
        if not value.handles:
            raise WarpresError("nothing to edit: the inversion holds no images")
        foreign = sum(h.session_id != self._id for h in value.handles)
        if foreign:
            raise WarpresError(f"{foreign} of these images were inverted by another Session; invert them with this one")
        return value

    def _encoder_input(self, images) -> tuple[np.ndarray, str]:
        size = self.info.image_size
        kind = "pixels"
        if type(images).__module__.startswith("torch"):
            images = images.detach().cpu().numpy()
            kind = "tensor"
        is_model_layout = (isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == 3
                           and images.shape[-1] != 3 and np.issubdtype(images.dtype, np.floating))
        if is_model_layout:
            if images.shape[2:] != (size, size) or not len(images):
                raise ImageError(f"float model input must be (B >= 1, 3, {size}, {size}) in [-1, 1], got "
                                 f"{images.shape}; give uint8 pixels to have them resized")
            if not np.all(np.isfinite(images)):
                raise ImageError("images contain NaN or inf")
            if np.abs(images).max() > 1 + 1e-3:
                raise ImageError(f"float model input must lie in [-1, 1], got [{images.min():g}, {images.max():g}]; "
                                 f"give uint8 pixels instead")
            return np.ascontiguousarray(images, dtype=np.float32), "array" if kind == "pixels" else kind
        if kind == "tensor":
            raise ImageError(f"a tensor input must be float (B, 3, {size}, {size}) in [-1, 1], got "
                             f"{images.dtype} {images.shape}")
        if self.channels == "bgr":
            images = _bgr_to_rgb(images)
        return to_model_input(images, size), kind

    def _as_output(self, images: np.ndarray, inversion: Inversion):
        if inversion.output == "array":
            return images
        if inversion.output == "tensor":
            import torch

            return torch.from_numpy(images)
        pixels = to_uint8(images)
        return np.ascontiguousarray(pixels[..., ::-1]) if inversion.channels == "bgr" else pixels

    @staticmethod
    def _checked_latents(wplus: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        if not isinstance(wplus, np.ndarray) or wplus.shape != shape:
            got = wplus.shape if isinstance(wplus, np.ndarray) else type(wplus).__name__
            raise EditError(f"{what} must return a W+ array of shape {shape}, got {got}")
        if not np.all(np.isfinite(wplus)):
            raise EditError(f"{what} returned NaN or inf")
        return np.ascontiguousarray(wplus, dtype=np.float32)


def _edit_items(edits: Edits) -> list:
    if edits is None or (isinstance(edits, str) and not edits.strip()):
        return []
    if isinstance(edits, (str, EditRequest)) or callable(edits):
        return [edits]
    return list(edits)


def _bgr_to_rgb(images):
    def flip(image: np.ndarray) -> np.ndarray:
        if image.ndim == 3 and image.shape[-1] in (3, 4):
            order = [2, 1, 0, 3][:image.shape[-1]]
            return image[..., order]
        return image

    if isinstance(images, np.ndarray):
        return flip(images) if images.ndim == 3 else (np.stack([flip(i) for i in images]) if images.ndim == 4
                                                      else images)
    return [flip(image) if isinstance(image, np.ndarray) else image for image in images]


# -- opening a model --------------------------------------------------------------------------

def _open(model, backend: str, precision, export: tuple[str | os.PathLike[str] | None, CheckpointExporter | None],
          options: dict) -> tuple[Backend, ModelInfo, DirectionLibrary | None, str]:
    from warpres.runtime.backends import BACKEND_NAMES, available

    if backend not in BACKEND_NAMES:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_NAMES)}")
    precision = normalize_precisions(precision)
    if backend != "auto":  # before exporting for nothing
        check_backend_precision(backend, precision)
    if backend == "tensorrt" and not (status := available()["tensorrt"]).usable:  # before exporting for nothing
        raise BackendError(f"tensorrt is not available: {status.detail}")
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise WarpresError(f"{path}: no such model folder or checkpoint")
        if is_model_folder(path):
            if backend == "torch":
                raise BackendError(f"{path}: the torch backend runs PyTorch checkpoints; give the checkpoint "
                                   f"this folder was exported from, or pick an ONNX backend")
            return _open_folder(open_model_folder(path), backend, precision, options)
        if path.is_dir():
            raise WarpresError(f"{path}: a folder without manifest.json is not an exported model")
        if backend == "torch":
            from warpres.checkpoints import load_checkpoint

            return _open_torch(load_checkpoint(path), precision, options)
        return _open_folder(_exported_checkpoint(path, *export), backend, precision, options)
    if not hasattr(model, "generator") or not hasattr(model, "family"):
        raise WarpresError(f"model must be a model folder, a checkpoint path or an EditingModel, got "
                           f"{type(model).__name__}")
    if backend not in ("torch", "auto"):
        raise BackendError(f"an in-memory EditingModel runs on the torch backend; export it "
                           f"(warpres.export.export_model) to use {backend}")
    return _open_torch(model, precision, options)


def _open_torch(model, precision, options: dict) -> tuple[Backend, ModelInfo, None, str]:
    from warpres.runtime.backends.pytorch import TorchBackend

    if model.encoder is None:
        raise WarpresError("this checkpoint has no encoder (a generator alone), so it cannot invert images")
    info = ModelInfo(model.family, model.encoder.config.input_size, model.generator.config.resolution,
                     (model.generator.num_ws, model.generator.config.w_dim))
    backend = TorchBackend(model, precision=precision, **options)
    return backend, info, None, "PyTorch eager reference"


def _open_folder(folder: ModelFolder, backend: str, precision,
                 options: dict) -> tuple[Backend, ModelInfo, DirectionLibrary | None, str]:
    from warpres.runtime.backends import create_backend

    manifest = folder.manifest
    if manifest.flavour != PORTABLE and backend != "tensorrt":
        raise BackendError(f"{folder.path}: {manifest.flavour} graphs run on TensorRT only; export the portable "
                           f"flavour for ONNX Runtime and OpenVINO")
    info = ModelInfo(manifest.family, manifest.image_size, manifest.resolution, manifest.latent_shape)
    instance, reason = create_backend(backend, folder, precision=precision, **options)
    directions = DirectionLibrary.load(folder.directions_path) if folder.directions_path else None
    return instance, info, directions, reason


def default_export_cache() -> Path:
    return cache_root() / "models"


def _exported_checkpoint(checkpoint: Path, export_cache, exporter: CheckpointExporter | None) -> ModelFolder:
    """The export of `checkpoint` in the cache, made on first use by `exporter`."""
    from warpres import __version__
    from warpres.files import sha256_file

    # the package version is part of the key: a newer exporter may write different graphs
    folder = Path(export_cache or default_export_cache()) / f"{sha256_file(checkpoint)[:24]}-{__version__}"
    if is_model_folder(folder):
        try:
            return open_model_folder(folder)
        except WarpresError as exc:
            log.warning("re-exporting %s: the cached export is unusable (%s)", checkpoint, exc)
    if exporter is None:  # a deployed runtime gets model folders
        raise BackendError(f"{checkpoint}: running a checkpoint on an ONNX backend exports it first: pass "
                           f"exporter=warpres.export.export_checkpoint (needs PyTorch and the exporter: pip install "
                           f"'warpres[export]'), or an exported model folder")
    log.info("exporting %s to %s (once; later runs reuse it)", checkpoint, folder)
    return exporter(checkpoint, folder)


def _merge_directions(own: DirectionLibrary | None, extra) -> DirectionLibrary | None:
    if extra is None:
        return own
    if not isinstance(extra, DirectionLibrary):
        extra = DirectionLibrary.from_folder(extra)
    return extra if own is None else own.merged(extra)
