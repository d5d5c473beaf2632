"""TensorRT engine files as warpres writes them: the header, the checks, a model folder's engines.

An engine file is `MAGIC` + uint32 little-endian header length + the header as UTF-8 JSON
(`EngineHeader`) + TensorRT's serialized plan. A plan only runs on the TensorRT version that built
it and on the GPU it was tuned for; the header lets the runtime say so (and tell the user to rebuild)
instead of failing inside TensorRT. The builder (`warpres.export.engines`) writes these files; the
runtime reads them without importing the exporter or torch.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import warpres
from warpres.errors import BackendError
from warpres.runtime.tensorrt.availability import TensorRTInfo
from warpres.runtime.tensorrt.gpu import cuda_devices
from warpres.stages import ModelFolder

ENGINE_DIR = "engines"
MAGIC = b"WARPRES-TRT\x00"
_LENGTH = struct.Struct("<I")
HEADER_FORMAT_VERSION = 1

def current_compute_capability() -> str | None:
    """The compute capability the builder tunes for, "sm_89" style: CUDA device 0 (the device a
    fresh process builds on), or None without a usable GPU. Asks cuda-python (warpres.runtime.tensorrt.gpu),
    never TensorRT."""
    devices = cuda_devices().devices
    return devices[0].sm if devices else None


ENGINE_PRECISIONS = ("mixed", "int8", "fp16", "fp32")  # what `warpres build` makes; the order the runtime prefers
CALIBRATION_TARGET = "tensorrt"  # the calibration int8 / mixed engines are built from


def engine_path(model_dir: str | os.PathLike[str], stage: str, precision: str) -> Path:
    """Where a stage's engine lives: `<model_dir>/engines/<stage>.<precision>.engine`."""
    return Path(model_dir) / ENGINE_DIR / f"{stage}.{precision}.engine"


@dataclass(frozen=True)
class EngineTarget:
    """What an engine is bound to: the TensorRT that built it and the GPU it was tuned for
    (compute capability "sm_89", or None: built without a GPU, TensorRT-RTX's portable engine)."""

    flavour: str
    version: str
    compute_capability: str | None

    @classmethod
    def current(cls, info: TensorRTInfo) -> EngineTarget:
        """What the installed TensorRT builds for here. TensorRT-RTX engines are compiled for the
        GPU at run time, so they are recorded as portable (None) even when built on a GPU."""
        portable = info.flavour == "tensorrt-rtx"
        return cls(info.flavour, info.version, None if portable else current_compute_capability())


@dataclass(frozen=True)
class EngineHeader:
    """The JSON header in front of the plan. source_sha256: the exported stage graph the engine was
    built from (the manifest's pin), so an engine from another export is refused. calibration_sha256:
    for a stage built from a calibrated Q/DQ graph, that graph's hash, so an engine from an earlier
    calibration is refused after a recalibration (None for float stages). profiles: one
    (min, opt, max) batch per optimization profile, in profile order. embedded_plugins: the plugin
    libraries serialized into the plan (native code that runs when it loads; refused by default)."""

    stage: str
    precision: str
    target: EngineTarget
    source_sha256: str
    profiles: tuple[tuple[int, int, int], ...]
    refittable: bool
    embedded_plugins: tuple[str, ...] = ()
    calibration_sha256: str | None = None
    warpres_version: str = warpres.__version__
    format_version: int = HEADER_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["profiles"] = [list(p) for p in self.profiles]
        data["embedded_plugins"] = list(self.embedded_plugins)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineHeader:
        return cls(stage=data["stage"], precision=data["precision"], target=EngineTarget(**data["target"]),
                   source_sha256=data["source_sha256"],
                   profiles=tuple((int(a), int(b), int(c)) for a, b, c in data["profiles"]),
                   refittable=bool(data["refittable"]),
                   embedded_plugins=tuple(str(name) for name in data.get("embedded_plugins", ())),
                   calibration_sha256=data.get("calibration_sha256"),
                   warpres_version=data["warpres_version"],
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


def built_precisions(folder: ModelFolder, *, picked_by_default: bool = False) -> list[str]:
    """The precisions with an engine for every stage, in ENGINE_PRECISIONS order. With
    `picked_by_default`, int8 / mixed only where the folder's tensorrt calibration met its bar."""
    calibration = folder.manifest.calibrations.get(CALIBRATION_TARGET)
    trusted = calibration is not None and calibration.meets_bar
    return [precision for precision in ENGINE_PRECISIONS
            if (trusted or not picked_by_default or precision not in ("int8", "mixed"))
            and all(engine_path(folder.path, stage.name, precision).is_file() for stage in folder.manifest.stages)
            and not stale_calibrated_stages(folder, precision)]


def stale_calibrated_stages(folder: ModelFolder, precision: str) -> list[str]:
    """The stages whose `precision` engine was built from a calibrated graph other than the one the
    manifest pins now (the folder was recalibrated after `warpres build`)."""
    if precision not in ("int8", "mixed"):
        return []
    calibration = folder.manifest.calibrations.get(CALIBRATION_TARGET)
    stale = []
    for stage in folder.manifest.stages:
        path = engine_path(folder.path, stage.name, precision)
        if not path.is_file():
            continue
        built_from = read_engine_header(path)[0].calibration_sha256
        entry = calibration.stages.get(stage.name) if calibration is not None else None
        pinned = entry.file.sha256 if entry is not None else None
        if built_from != pinned:
            stale.append(stage.name)
    return stale


def check_engines(folder: ModelFolder, precision: str, running: EngineTarget, *,
                  allow_embedded_plugins: bool = False) -> dict[str, tuple[EngineHeader, int]]:
    """Each stage's engine header and plan offset, after refusing what cannot run: a missing
    engine, another TensorRT or GPU, another export (source hash), embedded plugin libraries
    without the opt-in. Reads headers only; TensorRT is not touched."""
    checked = {}
    for stage in folder.manifest.stages:
        path = engine_path(folder.path, stage.name, precision)
        if not path.is_file():
            raise BackendError(f"{path}: no {precision} engine for stage {stage.name}; "
                               f"build them with `warpres build {folder.path} --precision {precision}`")
        header, offset = read_engine_header(path)
        check_engine_header(header, running, path)
        if header.source_sha256 != folder.manifest.graphs[stage.name].sha256:
            raise BackendError(f"{path}: built from another export of {stage.name} (source hash differs); "
                               f"rebuild the engines with `warpres build {folder.path}`")
        if stage.name in stale_calibrated_stages(folder, precision):
            raise BackendError(f"{path}: built from an earlier calibration of {stage.name} (the folder was "
                               f"recalibrated since); rebuild with `warpres build {folder.path} "
                               f"--precision {precision}`")
        if header.embedded_plugins and not allow_embedded_plugins:
            raise BackendError(f"{path}: the engine embeds plugin libraries ({', '.join(header.embedded_plugins)}), "
                               f"which run as native code when it loads; pass allow_embedded_plugins=True "
                               f"(--allow-embedded-plugins) only for engines you built yourself")
        checked[stage.name] = (header, offset)
    return checked
