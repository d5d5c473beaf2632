"""TensorRT engines from an exported model folder: one engine per stage, with a metadata header.

    from warpres.export.engines import build_model_engines
    paths = build_model_engines("exported/warpres-ffhq", precision="fp16")

An engine file is `MAGIC` + uint32 little-endian header length + the header as UTF-8 JSON
(`EngineHeader`) + TensorRT's serialized plan. A plan only runs on the TensorRT version that built
it and on the GPU it was tuned for; the header lets the runtime say so (and tell the user to rebuild)
instead of failing inside TensorRT.

TensorRT proper needs a GPU to build; TensorRT-RTX (`tensorrt_rtx`) also builds on a machine without
one and stands in for it in tests. This module never creates a `Runtime`: without a GPU, TensorRT's
Runtime constructor returns a broken object that crashes the process later.

The TensorRT versions differ in one place, `build_features`.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import struct
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

import warpres
from warpres.errors import BackendError, ExportError
from warpres.files import atomic_path, sha256_file
from warpres.stages import open_model_folder

logger = logging.getLogger(__name__)

MAGIC = b"WARPRES-TRT\x00"
_LENGTH = struct.Struct("<I")
HEADER_FORMAT_VERSION = 1
ENGINE_DIR = "engines"
TIMING_CACHE_NAME = "timing.cache"
PRECISIONS = ("fp32", "fp16")
# (min, opt, max) batch: single edits, up to a short burst of video frames
DEFAULT_PROFILES: tuple[tuple[int, int, int], ...] = ((1, 1, 8),)
DEFAULT_WORKSPACE_BYTES = 2 << 30
MIN_TENSORRT_MAJOR = 10

_INSTALL_HINT = ("pip install tensorrt-cu13 (TensorRT, needs an NVIDIA GPU to build) or "
                 "pip install 'warpres[tensorrt-test]' (TensorRT-RTX, builds without a GPU)")


@dataclass(frozen=True)
class TensorRTInfo:
    """Which TensorRT is importable: flavour "tensorrt" | "tensorrt-rtx", version "10.16.1.11", major 10."""

    flavour: str
    version: str
    major: int


def import_tensorrt() -> tuple[ModuleType, TensorRTInfo]:
    """The TensorRT module (`tensorrt`, else `tensorrt_rtx`) and what it is.
    Raises BackendError with the pip command when neither imports."""
    failures = []
    for module_name, flavour in (("tensorrt", "tensorrt"), ("tensorrt_rtx", "tensorrt-rtx")):
        try:
            trt = importlib.import_module(module_name)
        except ImportError as exc:  # also the shim whose libraries are missing (libnvonnxparser.so.11)
            failures.append(f"{module_name}: {exc}")
            continue
        return trt, TensorRTInfo(flavour, trt.__version__, int(trt.__version__.split(".")[0]))
    raise BackendError(f"TensorRT is not importable ({'; '.join(failures)}); {_INSTALL_HINT}")


@dataclass(frozen=True)
class BuildFeatures:
    """What the builder of one TensorRT version takes.

    network_flags: bits for `Builder.create_network`. TensorRT 10 must be asked for a strongly
    typed network (precision from the ONNX tensor types, as 11 always does); in 11 and RTX the flag
    is deprecated and ignored, so nothing is passed.
    timing_cache: TensorRT-RTX tunes at run time and treats timing caches as no-ops (deprecated).
    refit: BuilderFlag.REFIT exists.
    """

    network_flags: int
    timing_cache: bool
    refit: bool


def build_features(trt: ModuleType, info: TensorRTInfo) -> BuildFeatures:
    """The one version gate: TensorRT 10 vs 11 vs TensorRT-RTX. FP16 / INT8 builder flags are never
    used (11 has none): an FP16 engine is built from an FP16 ONNX graph (warpres.export.fp16)."""
    rtx = info.flavour == "tensorrt-rtx"
    if not rtx and info.major < MIN_TENSORRT_MAJOR:
        raise BackendError(f"TensorRT {info.version} is too old: warpres builds strongly typed networks, "
                           f"TensorRT >= {MIN_TENSORRT_MAJOR}")
    strongly_typed_flag = 0 if rtx or info.major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return BuildFeatures(network_flags=strongly_typed_flag, timing_cache=not rtx,
                         refit=hasattr(trt.BuilderFlag, "REFIT"))


def current_compute_capability() -> str | None:
    """"major.minor" of the current CUDA device (e.g. "8.9"), or None when there is no usable GPU
    or cuda-python is not installed. Asks the CUDA runtime only; never creates a TensorRT Runtime."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        return None
    success = runtime.cudaError_t.cudaSuccess
    error, count = runtime.cudaGetDeviceCount()  # error 35 (insufficient driver) without a GPU driver
    if error != success or not count:
        return None
    error, device = runtime.cudaGetDevice()
    if error != success:
        return None
    error, properties = runtime.cudaGetDeviceProperties(device)
    return f"{properties.major}.{properties.minor}" if error == success else None


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is bound to: the TensorRT that built it and the GPU it was tuned for
    (compute capability "8.9", or None: built without a GPU, TensorRT-RTX's portable engine)."""

    flavour: str
    version: str
    compute_capability: str | None

    @classmethod
    def current(cls, info: TensorRTInfo) -> EngineTarget:
        return cls(info.flavour, info.version, current_compute_capability())


@dataclass(frozen=True)
class EngineHeader:
    """The JSON header in front of the plan. source_sha256: the exported stage graph the engine was
    built from (the manifest's pin), so an engine from another export is refused. profiles: one
    (min, opt, max) batch per optimization profile, in profile order."""

    stage: str
    precision: str
    target: EngineTarget
    source_sha256: str
    profiles: tuple[tuple[int, int, int], ...]
    refittable: bool
    warpres_version: str = warpres.__version__
    format_version: int = HEADER_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [list(p) for p in self.profiles]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineHeader:
        return cls(stage=data["stage"], precision=data["precision"], target=EngineTarget(**data["target"]),
                   source_sha256=data["source_sha256"],
                   profiles=tuple((int(a), int(b), int(c)) for a, b, c in data["profiles"]),
                   refittable=bool(data["refittable"]), warpres_version=data["warpres_version"],
                   format_version=int(data["format_version"]))


def encode_header(header: EngineHeader) -> bytes:
    """MAGIC + uint32 LE length + JSON: the bytes written in front of the plan."""
    body = json.dumps(header.to_dict(), sort_keys=True).encode("utf-8")
    return MAGIC + _LENGTH.pack(len(body)) + body


def read_engine_header(path: str | os.PathLike[str]) -> tuple[EngineHeader, int]:
    """The header of an engine file and the byte offset where TensorRT's plan starts."""
    path = Path(path)
    with open(path, "rb") as handle:
        prefix = handle.read(len(MAGIC) + _LENGTH.size)
        if len(prefix) < len(MAGIC) + _LENGTH.size or not prefix.startswith(MAGIC):
            raise BackendError(f"{path}: not a warpres TensorRT engine (no header); rebuild it with `warpres build`")
        (length,) = _LENGTH.unpack(prefix[len(MAGIC):])
        body = handle.read(length)
    try:
        if len(body) != length:
            raise ValueError(f"header is {len(body)} of {length} bytes")
        data = json.loads(body.decode("utf-8"))
        if data.get("format_version") != HEADER_FORMAT_VERSION:
            raise ValueError(f"header format {data.get('format_version')!r}; "
                             f"this version reads {HEADER_FORMAT_VERSION}")
        header = EngineHeader.from_dict(data)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise BackendError(f"{path}: unreadable engine header ({exc}); rebuild it with `warpres build`") from None
    return header, len(prefix) + length


def check_engine_header(header: EngineHeader, running: EngineTarget, path: str | os.PathLike[str] = "engine") -> None:
    """Raise BackendError, telling the user to rebuild, when the engine was built by another
    TensorRT (flavour or version) or for a GPU of another compute capability than `running`'s.
    An engine built without a GPU (compute capability None) runs on any."""
    built = header.target
    if (built.flavour, built.version) != (running.flavour, running.version):
        reason = f"was built by {built.flavour} {built.version}; this is {running.flavour} {running.version}"
    elif built.compute_capability is not None and built.compute_capability != running.compute_capability:
        reason = (f"was built for compute capability {built.compute_capability}; this GPU is "
                  f"{running.compute_capability or 'not available'}")
    else:
        return
    raise BackendError(f"{path}: the {header.stage} engine {reason}; rebuild the engines with `warpres build`")


def _collecting_logger(trt: ModuleType) -> Any:
    """A TensorRT ILogger that keeps error messages (`.errors`) for the ExportError and passes
    the rest to Python logging."""
    error_level = int(trt.ILogger.Severity.ERROR)  # lower is more severe
    warning_level = int(trt.ILogger.Severity.WARNING)

    class CollectingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            if int(severity) <= error_level:
                self.errors.append(msg)  # raised in the ExportError; logged only for --verbose runs
                logger.debug("TensorRT error: %s", msg)
            elif int(severity) == warning_level:
                logger.warning("TensorRT: %s", msg)
            else:
                logger.debug("TensorRT: %s", msg)

    return CollectingLogger()


def _parser_errors(parser: Any) -> list[str]:
    """Each ONNX parser error as "node <index> (<name>, <op>): [<code>] <description>"."""
    messages = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        where = f"node {error.node()} ({error.node_name() or 'unnamed'}, {error.node_operator() or '?'})"
        code = error.code()
        messages.append(f"{where}: [{getattr(code, 'name', code)}] {error.desc()}")
    return messages


def _profile_shapes(shape: Sequence[int], batches: tuple[int, int, int], name: str,
                    onnx_path: Path) -> list[tuple[int, ...]]:
    """(min, opt, max) shapes of one network input whose dim 0 is the dynamic batch."""
    if not shape or shape[0] != -1 or any(d < 0 for d in shape[1:]):
        raise ExportError(f"{onnx_path}: input {name} has shape {tuple(shape)}; expected a dynamic batch axis "
                          f"first and fixed sizes after it")
    return [(batch, *shape[1:]) for batch in batches]


def _check_profiles(profiles: Sequence[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    checked = tuple(tuple(int(b) for b in profile) for profile in profiles)
    if not checked or any(len(p) != 3 or not 1 <= p[0] <= p[1] <= p[2] for p in checked):
        raise ExportError(f"batch profiles must be (min, opt, max) with 1 <= min <= opt <= max, got {list(profiles)}")
    return checked  # type: ignore[return-value]


def _load_timing_cache(config: Any, path: Path | None) -> Any:
    """Attach the timing cache at `path` (an empty one if absent, or recorded on another GPU)."""
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):  # False: the file came from another device or version
        logger.warning("%s: timing cache does not fit this GPU / TensorRT; starting a new one", path)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: str | os.PathLike[str], engine_path: str | os.PathLike[str], *,
                 profiles: Sequence[tuple[int, int, int]] = DEFAULT_PROFILES,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
                 timing_cache_path: str | os.PathLike[str] | None = None, refittable: bool = False,
                 precision_tag: str = "fp32", stage: str | None = None,
                 source_sha256: str | None = None) -> EngineHeader:
    """Parse `onnx_path`, build a strongly typed engine with one optimization profile per
    (min, opt, max) batch in `profiles` (dim 0 of every input; the other dims are the graph's),
    and write header + plan to `engine_path` atomically.

    precision_tag only labels the engine: the precision is the ONNX graph's tensor types.
    stage defaults to the file stem; source_sha256 (the stage graph the engine stands for, e.g.
    the FP32 graph an FP16 graph was converted from) defaults to the SHA-256 of `onnx_path`.
    The timing cache at `timing_cache_path` is read before and written after the build, where the
    TensorRT flavour uses one. Raises ExportError with TensorRT's parser or builder errors.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    profiles = _check_profiles(profiles)
    trt, info = import_tensorrt()
    features = build_features(trt, info)
    if refittable and not features.refit:
        raise ExportError(f"{info.flavour} {info.version} cannot build refittable engines")
    trt_logger = _collecting_logger(trt)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(features.network_flags)
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = _parser_errors(parser) or trt_logger.errors
        raise ExportError(f"{onnx_path}: the {info.flavour} {info.version} ONNX parser rejected the graph:\n  "
                          + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for batches in profiles:
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            profile.set_shape(tensor.name, *_profile_shapes(tuple(tensor.shape), batches, tensor.name, onnx_path))
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None and features.timing_cache else None
    if cache_path is not None:
        _load_timing_cache(config, cache_path)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: {info.flavour} {info.version} could not build an engine:\n  "
                          + "\n  ".join(trt_logger.errors or ["(no error message)"]))
    header = EngineHeader(stage=stage or onnx_path.stem, precision=precision_tag, target=EngineTarget.current(info),
                          source_sha256=source_sha256 or sha256_file(onnx_path), profiles=profiles,
                          refittable=refittable)
    with atomic_path(engine_path) as tmp, open(tmp, "wb") as handle:
        handle.write(encode_header(header))
        handle.write(memoryview(plan))
    if cache_path is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return header


def engine_path_for(model_dir: str | os.PathLike[str], stage: str, precision: str) -> Path:
    """`<model_dir>/engines/<stage>.<precision>.engine`."""
    return Path(model_dir) / ENGINE_DIR / f"{stage}.{precision}.engine"


def build_model_engines(model_dir: str | os.PathLike[str], *, precision: str = "fp32",
                        profiles: Sequence[tuple[int, int, int]] = DEFAULT_PROFILES,
                        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, refittable: bool = False,
                        progress: bool = True) -> list[Path]:
    """One engine per stage of the exported model folder, in stage order, written as
    `engines/<stage>.<precision>.engine` (timing cache: `engines/timing.cache`). For "fp16" each
    graph is first converted with warpres.export.fp16 to `engines/<stage>.fp16.onnx`; every
    header pins the manifest's SHA-256 of the stage's FP32 graph."""
    if precision not in PRECISIONS:
        raise ExportError(f"precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    import_tensorrt()  # fail before converting anything
    folder = open_model_folder(model_dir)
    engine_dir = folder.path / ENGINE_DIR
    paths = []
    with tqdm(folder.manifest.stages, desc=f"build {precision}", unit="engine", disable=not progress) as bar:
        for stage in bar:
            bar.set_postfix_str(stage.name)
            source = folder.graph_path(stage)
            if precision == "fp16":
                from warpres.export.fp16 import convert_fp16

                source = convert_fp16(source, engine_dir / f"{stage.name}.fp16.onnx").destination
            path = engine_path_for(folder.path, stage.name, precision)
            start = time.perf_counter()
            build_engine(source, path, profiles=profiles, workspace_bytes=workspace_bytes,
                         timing_cache_path=engine_dir / TIMING_CACHE_NAME, refittable=refittable,
                         precision_tag=precision, stage=stage.name,
                         source_sha256=folder.manifest.graphs[stage.name].sha256)
            logger.info("%s: built in %.1f s", path, time.perf_counter() - start)
            paths.append(path)
    return paths
