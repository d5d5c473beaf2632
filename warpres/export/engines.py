"""TensorRT engines from an exported model folder: one engine per stage, with a metadata header.

    from warpres.export.engines import build_model_engines
    paths = build_model_engines("exported/warpres-ffhq", precision="fp16")

Engine files carry a header (`warpres.runtime.tensorrt.engine_file`) that lets the runtime refuse an
engine built by another TensorRT or for another GPU.

A plugin-flavour folder (warpres.export.plugin_graph) builds against the warpres plugin library
(plugins/, `libwarpres_plugins.so`): it is loaded into TensorRT's plugin registry so the ONNX
parser finds the ModulatedConv / FlowWarp creators, and serialized into every engine, so an
engine runs without the library installed, and is refused unless the user allows engines that
embed plugins.

TensorRT proper needs a GPU to build; TensorRT-RTX (`tensorrt_rtx`) also builds on a machine without
one and stands in for it in tests. This module never creates a `Runtime`: without a GPU, TensorRT's
Runtime constructor returns a broken object that crashes the process later.

The TensorRT versions differ in one place, `build_features`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tqdm.auto import tqdm

from warpres.errors import BackendError, ExportError
from warpres.files import atomic_path, sha256_file
from warpres.runtime.tensorrt.availability import TensorRTInfo, import_tensorrt
from warpres.runtime.tensorrt.engine_file import (
    CALIBRATION_TARGET,
    ENGINE_DIR,
    ENGINE_PRECISIONS,
    EngineHeader,
    EngineTarget,
    encode_header,
    engine_path,
)
from warpres.runtime.tensorrt.plugin_library import PLUGIN_BUILD_HINT, PLUGIN_LIBRARY_ENV, load_plugin_library
from warpres.stages import PLUGIN, PORTABLE, open_model_folder

logger = logging.getLogger(__name__)

TIMING_CACHE_NAME = "timing.cache"
# (min, opt, max) batch: single edits, up to a short burst of video frames
DEFAULT_PROFILES: tuple[tuple[int, int, int], ...] = ((1, 1, 8),)
DEFAULT_WORKSPACE_BYTES = 2 << 30
MIN_TENSORRT_MAJOR = 10

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
    used (11 has none): an FP16 engine is built from an FP16 ONNX graph (warpres.calibration.fp16)."""
    rtx = info.flavour == "tensorrt-rtx"
    if not rtx and info.major < MIN_TENSORRT_MAJOR:
        raise BackendError(f"TensorRT {info.version} is too old: warpres builds strongly typed networks, "
                           f"TensorRT >= {MIN_TENSORRT_MAJOR}")
    strongly_typed_flag = 0 if rtx or info.major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return BuildFeatures(network_flags=strongly_typed_flag, timing_cache=not rtx,
                         refit=hasattr(trt.BuilderFlag, "REFIT"))


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


def staircase_profiles(sizes: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """One profile per batch size, each covering the sizes above the previous one and tuned for
    its own: (1, 8, 32) -> (1..1 @1, 2..8 @8, 9..32 @32)."""
    ordered = sorted(set(sizes))
    return tuple((low, size, size) for low, size in zip([1, *(s + 1 for s in ordered)], ordered, strict=False))


def _check_profiles(profiles: Sequence[tuple[int, int, int]]) -> tuple[tuple[int, int, int], ...]:
    checked = [tuple(int(batch) for batch in profile) for profile in profiles]
    if not checked or any(len(p) != 3 or not 1 <= p[0] <= p[1] <= p[2] for p in checked):
        raise ExportError(f"batch profiles must be (min, opt, max) with 1 <= min <= opt <= max, got {list(profiles)}")
    return tuple((low, opt, high) for low, opt, high in checked)


def _attach_timing_cache(config: Any, path: Path) -> Any:
    """Attach the timing cache at `path` (an empty one if absent, or recorded on another GPU) and
    return it: TensorRT needs the object alive until the build ends."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None:  # unreadable bytes (an interrupted write by another tool): start over
        logger.warning("%s: timing cache unreadable; starting a new one", path)
        cache = config.create_timing_cache(b"")
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
                 source_sha256: str | None = None, calibration_sha256: str | None = None,
                 plugin_library: str | os.PathLike[str] | None = None) -> EngineHeader:
    """Parse `onnx_path`, build a strongly typed engine with one optimization profile per
    (min, opt, max) batch in `profiles` (dim 0 of every input; the other dims are the graph's),
    and write header + plan to `engine_path` atomically. A graph with plugin nodes needs
    `plugin_library`, which is loaded first and serialized into the engine.

    precision_tag only labels the engine: the precision is the ONNX graph's tensor types.
    stage defaults to the file stem; source_sha256 (the stage graph the engine stands for, e.g.
    the FP32 graph an FP16 graph was converted from) defaults to the SHA-256 of `onnx_path`;
    calibration_sha256 is the calibrated Q/DQ graph's pin, for engines built from one.
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
    library = load_plugin_library(trt, plugin_library) if plugin_library is not None else None
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
    if library is not None:
        config.plugins_to_serialize = [str(library)]
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for batches in profiles:
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            profile.set_shape(tensor.name, *_profile_shapes(tuple(tensor.shape), batches, tensor.name, onnx_path))
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache_path) if timing_cache_path is not None and features.timing_cache else None
    timing_cache = _attach_timing_cache(config, cache_path) if cache_path is not None else None
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: {info.flavour} {info.version} could not build an engine:\n  "
                          + "\n  ".join(trt_logger.errors or ["(no error message)"]))
    header = EngineHeader(stage=stage or onnx_path.stem, precision=precision_tag, target=EngineTarget.current(info),
                          source_sha256=source_sha256 or sha256_file(onnx_path), profiles=profiles,
                          refittable=refittable, embedded_plugins=(library.name,) if library is not None else (),
                          calibration_sha256=calibration_sha256)
    with atomic_path(engine_path) as tmp, open(tmp, "wb") as handle:
        handle.write(encode_header(header))
        handle.write(memoryview(plan))
    if timing_cache is not None:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(timing_cache.serialize()))
    return header


def build_model_engines(model_dir: str | os.PathLike[str], *, precision: str = "fp32",
                        profiles: Sequence[tuple[int, int, int]] = DEFAULT_PROFILES,
                        workspace_bytes: int = DEFAULT_WORKSPACE_BYTES, refittable: bool = False,
                        progress: bool = True, plugin_library: str | os.PathLike[str] | None = None) -> list[Path]:
    """One engine per stage of the exported model folder, in stage order, written as
    `engines/<stage>.<precision>.engine` (timing cache: `engines/timing.cache`). For "fp16" each
    graph is first converted with warpres.calibration.fp16 to `engines/<stage>.fp16.onnx`; every
    header pins the manifest's SHA-256 of the stage's FP32 graph.

    A plugin-flavour folder needs `plugin_library` (default: $WARPRES_PLUGIN_LIBRARY), which every
    engine embeds; a portable folder takes none."""
    if precision not in ENGINE_PRECISIONS:
        raise ExportError(f"precision {precision!r}: choose one of {', '.join(ENGINE_PRECISIONS)}")
    folder = open_model_folder(model_dir)
    plugin_library = _plugin_library_for(folder.manifest.flavour, folder.path, plugin_library, precision)
    calibration = _calibration_for(folder, precision)
    import_tensorrt()  # fail before converting anything
    engine_dir = folder.path / ENGINE_DIR
    paths = []
    with tqdm(folder.manifest.stages, desc=f"build {precision}", unit="engine", disable=not progress) as bar:
        for stage in bar:
            bar.set_postfix_str(stage.name)
            source, pinned = folder.graph_path(stage), None
            if calibration is not None and stage.name in calibration.stages:
                source = folder.calibrated_graph_path(CALIBRATION_TARGET, stage)  # Q/DQ: INT8 layers
                pinned = calibration.stages[stage.name].file.sha256
            elif precision in ("fp16", "mixed"):
                from warpres.calibration.fp16 import convert_fp16

                source = convert_fp16(source, engine_dir / f"{stage.name}.fp16.onnx").destination
            path = engine_path(folder.path, stage.name, precision)
            start = time.perf_counter()
            build_engine(source, path, profiles=profiles, workspace_bytes=workspace_bytes,
                         timing_cache_path=engine_dir / TIMING_CACHE_NAME, refittable=refittable,
                         precision_tag=precision, stage=stage.name,
                         source_sha256=folder.manifest.graphs[stage.name].sha256, calibration_sha256=pinned,
                         plugin_library=plugin_library)
            logger.info("%s: built in %.1f s", path, time.perf_counter() - start)
            paths.append(path)
    return paths


def _calibration_for(folder, precision: str):
    """The tensorrt calibration an int8 / mixed build needs (None for fp32 / fp16)."""
    if precision not in ("int8", "mixed"):
        return None
    calibration = folder.manifest.calibrations.get(CALIBRATION_TARGET)
    if calibration is None:
        raise ExportError(f"{folder.path}: no tensorrt calibration; run `warpres calibrate {folder.path} --images DIR "
                          f"--target tensorrt --precision {precision}` first")
    missing = [stage.name for stage in folder.manifest.stages if stage.name not in calibration.stages]
    if precision == "int8" and missing:
        raise ExportError(f"{folder.path}: the tensorrt calibration is mixed ({', '.join(missing)} in float); build "
                          f"--precision mixed, or calibrate with --precision int8")
    if not calibration.meets_bar:
        logger.warning("%s: the tensorrt calibration missed its accuracy bar; its engines are built but the "
                       "runtime does not pick them unless asked for %s", folder.path, precision)
    return calibration


def _plugin_library_for(flavour: str, folder: Path, plugin_library: str | os.PathLike[str] | None,
                        precision: str) -> Path | None:
    """The plugin library a folder of `flavour` builds with, or None for a portable folder."""
    if flavour == PORTABLE:
        if plugin_library is not None:
            raise ExportError(f"{folder}: the portable flavour has no plugin nodes; export with --flavour plugin "
                              f"to build with the warpres plugins")
        return None
    if flavour != PLUGIN:
        raise ExportError(f"{folder}: unknown graph flavour {flavour!r}")
    if precision != "fp32":
        raise ExportError(f"{folder}: plugin-flavour engines are built in fp32 (ModelOpt AutoCast runs the graph "
                          f"on ONNX Runtime, which has no plugin kernels); build fp16 from the portable flavour")
    plugin_library = plugin_library or os.environ.get(PLUGIN_LIBRARY_ENV)
    if not plugin_library:
        raise ExportError(f"{folder}: a plugin-flavour model builds against the warpres plugin library "
                          f"(libwarpres_plugins.so); pass --plugin-library or set {PLUGIN_LIBRARY_ENV}, or "
                          f"{PLUGIN_BUILD_HINT}")
    return Path(plugin_library)
