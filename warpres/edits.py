"""Edit directions in W+ (InterfaceGAN, GANSpace, raw) and the edit specs that name them.

Everything here (the directions and the `LatentSmoother` of video frames) is numpy arithmetic on ``wplus`` of shape (B, L, D) (D = 512; L = 18 for
FFHQ-1024, 16 for cars-512), so a runtime without PyTorch can edit. PyTorch is imported only
to read official ``.pt`` files, always with ``torch.load(weights_only=True)``.

Semantics (the official StyleRes / e4e editing code):

* linear (InterfaceGAN or raw): ``wplus + strength * vector``. A vector of shape (D,) moves
  every layer; one of shape (L, D) moves each layer by its own row.
* GANSpace: the current coordinate of component ``k`` is measured on W+ layer 0 only,
  ``c = <wplus[:, 0] - mean, comp[k]> / std[k]``; the delta ``(strength - c) * comp[k] * std[k]``
  is added to layers ``[start, end)`` only. The strength is an absolute target coordinate, not
  an increment: with ``start == 0`` a second application with the same strength changes
  (almost) nothing, but with ``start > 0`` layer 0 keeps its coordinate, so repeating the edit
  adds the same delta again.

Names. A linear direction is named after its file stem (``smile``, ``pose``). A GANSpace edit is
named ``ganspace:<pca>/<edit>``, where ``<pca>`` is the PCA file stem without ``_pca``
(``ffhq_pca.pt`` -> ``ffhq``) and ``<edit>`` the csv row name, e.g. ``ganspace:ffhq/overexposed``.
The short form ``ganspace:<edit>`` resolves when exactly one PCA in the library has that edit;
with several PCA files it is ambiguous and the error lists the qualified names.

A :class:`DirectionLibrary` is built from a folder laid out like the official edit data
(:meth:`DirectionLibrary.from_folder`) and saved with the exported model as
``directions.safetensors`` + ``directions.json`` (:meth:`DirectionLibrary.save`).
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from warpres.errors import EditError
from warpres.files import atomic_path

DIRECTIONS_TENSORS = "directions.safetensors"
DIRECTIONS_JSON = "directions.json"
GANSPACE_CONFIGS = "ganspace_configs.csv"
_PCA_SUFFIX = "_pca"
_FORMAT = "warpres.directions"
_VERSION = 1

# Written into directions.json so a runtime in another language can apply the edits.
SEMANTICS = {
    "linear": "wplus + strength * vector; vector (D,) moves every layer, (L, D) one row per layer",
    "ganspace": (
        "c = dot(wplus[:, 0] - mean, components[k]) / stds[k]; "
        "wplus[:, start:end] += (strength - c) * components[k] * stds[k]; "
        "strength is the absolute target coordinate"
    ),
}

# Direction, PCA and csv-row names: they become part of the edit-spec grammar.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_SPEC_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EditError(f"{what} name {name!r} is invalid: use letters, digits, '_', '.', '-'")


def _frozen_float32(array: np.ndarray) -> np.ndarray:
    """A read-only float32 copy, so frozen directions stay immutable."""
    out = np.array(array, dtype=np.float32)
    out.setflags(write=False)
    return out


def _check_wplus(wplus: np.ndarray, dim: int, edit: str) -> None:
    if not isinstance(wplus, np.ndarray):
        raise EditError(f"edit '{edit}': wplus must be a numpy array (B, L, {dim}), "
                        f"got {type(wplus).__name__}")
    if wplus.ndim != 3 or wplus.shape[-1] != dim:
        raise EditError(f"edit '{edit}': wplus must have shape (B, L, {dim}), got {wplus.shape}")
    if not np.issubdtype(wplus.dtype, np.floating):
        raise EditError(f"edit '{edit}': wplus must be a float array, got {wplus.dtype}")


@dataclass(frozen=True, eq=False)
class LinearDirection:
    """``wplus + strength * vector`` (InterfaceGAN and raw directions share this math).

    ``vector`` is given as (D,) or (1, D) to move every layer, or (L, D) / (1, L, D) to move
    each layer by its own row; it is stored as (D,) or (L, D) float32. ``source`` records
    where it came from (``"interfacegan"`` or ``"raw"``); it does not change the math.
    ``strength_range``: the strengths that make sense (where its fit holds), for sliders and
    listings; None where unknown (`edit_range` then gives the InterfaceGAN convention).
    """

    name: str
    vector: np.ndarray
    source: str = "raw"
    strength_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "direction")
        if self.source not in ("interfacegan", "raw"):
            raise EditError(f"direction '{self.name}': source must be 'interfacegan' or 'raw', "
                            f"got {self.source!r}")
        vector = np.asarray(self.vector)
        if vector.ndim == 3 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim == 2 and vector.shape[0] == 1:
            vector = vector[0]
        if vector.ndim not in (1, 2) or vector.size == 0:
            raise EditError(f"direction '{self.name}': expected shape (D,), (1, D), (L, D) or "
                            f"(1, L, D), got {np.shape(self.vector)}")
        if not np.issubdtype(vector.dtype, np.floating) or not np.all(np.isfinite(vector)):
            raise EditError(f"direction '{self.name}': expected finite float values, "
                            f"got dtype {vector.dtype}")
        object.__setattr__(self, "vector", _frozen_float32(vector))
        if self.strength_range is not None:
            low, high = (float(v) for v in self.strength_range)
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise EditError(f"direction '{self.name}': strength_range must be two finite numbers, low < high, "
                                f"got {self.strength_range!r}")
            object.__setattr__(self, "strength_range", (low, high))

    @property
    def dim(self) -> int:
        return int(self.vector.shape[-1])

    def apply(self, wplus: np.ndarray, strength: float | None = None) -> np.ndarray:
        """(B, L, D) -> (B, L, D) ``wplus + strength * vector`` in wplus' dtype."""
        if strength is None:
            raise EditError(f"edit '{self.name}' has no default strength: give one, "
                            f"e.g. {self.name}=2")
        _check_wplus(wplus, self.dim, self.name)
        if self.vector.ndim == 2 and self.vector.shape[0] != wplus.shape[1]:
            raise EditError(f"edit '{self.name}' has {self.vector.shape[0]} per-layer rows but "
                            f"wplus has {wplus.shape[1]} layers {wplus.shape}")
        step = wplus.dtype.type(strength) * self.vector.astype(wplus.dtype, copy=False)
        return wplus + step


@dataclass(frozen=True, eq=False)
class GanSpacePCA:
    """A GANSpace PCA of W: ``mean`` (D,), ``components`` (K, D), ``stds`` (K,)."""

    name: str
    mean: np.ndarray
    components: np.ndarray
    stds: np.ndarray

    def __post_init__(self) -> None:
        _check_name(self.name, "PCA")
        mean, components, stds = (np.asarray(a) for a in (self.mean, self.components, self.stds))
        if (mean.ndim != 1 or components.ndim != 2 or stds.ndim != 1
                or components.shape != (stds.shape[0], mean.shape[0]) or mean.size == 0):
            raise EditError(f"PCA '{self.name}': expected mean (D,), components (K, D), stds (K,); "
                            f"got {mean.shape}, {components.shape}, {stds.shape}")
        for key, array in (("mean", mean), ("components", components), ("stds", stds)):
            if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
                raise EditError(f"PCA '{self.name}': {key} must hold finite floats")
        if np.any(stds <= 0):
            raise EditError(f"PCA '{self.name}': stds must be positive")
        object.__setattr__(self, "mean", _frozen_float32(mean))
        object.__setattr__(self, "components", _frozen_float32(components))
        object.__setattr__(self, "stds", _frozen_float32(stds))


@dataclass(frozen=True)
class GanSpaceConfig:
    """One row of ``ganspace_configs.csv``: component ``component`` edits layers [start, end)."""

    name: str
    component: int
    start: int
    end: int
    strength: float

    def __post_init__(self) -> None:
        _check_name(self.name, "GANSpace edit")
        if not 0 <= self.start < self.end or self.component < 0:
            raise EditError(f"GANSpace edit '{self.name}': need component >= 0 and "
                            f"0 <= start < end, got component={self.component} "
                            f"layers [{self.start}, {self.end})")
        if not math.isfinite(self.strength):
            raise EditError(f"GANSpace edit '{self.name}': strength must be finite")


@dataclass(frozen=True, eq=False)
class GanSpaceDirection:
    """A GANSpace edit: ``config`` applied along a component of ``pca`` (see module doc)."""

    pca: GanSpacePCA
    config: GanSpaceConfig

    def __post_init__(self) -> None:
        if self.config.component >= self.pca.components.shape[0]:
            raise EditError(f"{self.name}: component {self.config.component} does not exist, "
                            f"PCA '{self.pca.name}' has {self.pca.components.shape[0]}")

    @property
    def name(self) -> str:
        return f"ganspace:{self.pca.name}/{self.config.name}"

    def coordinate(self, wplus: np.ndarray) -> np.ndarray:
        """(B, L, D) -> (B,) float64: the component's coordinate, measured on layer 0."""
        _check_wplus(wplus, self.pca.mean.shape[0], self.name)
        k = self.config.component
        # float64 so the target is reached to float32 precision however large the coordinate.
        centered = wplus[:, 0].astype(np.float64) - self.pca.mean
        return centered @ self.pca.components[k].astype(np.float64) / float(self.pca.stds[k])

    def apply(self, wplus: np.ndarray, strength: float | None = None) -> np.ndarray:
        """(B, L, D) -> (B, L, D): move layers [start, end) so the coordinate becomes
        ``strength`` (default: the csv strength)."""
        target = self.config.strength if strength is None else float(strength)
        coordinate = self.coordinate(wplus)
        start, end = self.config.start, self.config.end
        if end > wplus.shape[1]:
            raise EditError(f"{self.name} edits layers [{start}, {end}) but wplus has "
                            f"{wplus.shape[1]} layers {wplus.shape}")
        k = self.config.component
        std = float(self.pca.stds[k])
        delta = (target - coordinate)[:, None] * (self.pca.components[k].astype(np.float64) * std)
        edited = wplus.copy()
        edited[:, start:end] += delta[:, None, :].astype(wplus.dtype)
        return edited


AnyDirection = LinearDirection | GanSpaceDirection

DEFAULT_LINEAR_RANGE = (-3.0, 3.0)   # InterfaceGAN's editing scripts sweep about this far


def edit_range(direction: AnyDirection) -> tuple[float, float]:
    """The strengths a direction is meant for: a linear one's recorded range, else
    `DEFAULT_LINEAR_RANGE`; a GANSpace edit's target coordinate from -|csv strength| to
    +|csv strength| (its csv strength is where the official configs push it)."""
    if isinstance(direction, LinearDirection):
        return direction.strength_range or DEFAULT_LINEAR_RANGE
    reach = abs(direction.config.strength)
    return (-reach, reach) if reach > 0 else DEFAULT_LINEAR_RANGE


@dataclass(frozen=True)
class EditRequest:
    """One parsed edit: a direction name and a strength (``None``: the direction's default)."""

    name: str
    strength: float | None = None


def parse_edit_spec(spec: str | Sequence[str]) -> list[EditRequest]:
    """Parse CLI edit specs: ``"smile=2"``, ``"ganspace:overexposed=15"``, ``"pose=-3.5"``,
    ``"smile=2,age=-1"`` or a list of such strings (one per ``--edit``), in order.

    ``NAME`` alone asks for the direction's default strength (GANSpace csv strengths).
    Raises :class:`EditError` quoting the offending text on bad syntax or a non-finite strength.
    """
    specs = [spec] if isinstance(spec, str) else list(spec)
    requests = []
    for text in specs:
        if not isinstance(text, str):
            raise EditError(f"edit spec must be a string, got {type(text).__name__}: {text!r}")
        for item in text.split(","):
            requests.append(_parse_edit_item(item.strip(), text))
    return requests


def _parse_edit_item(item: str, text: str) -> EditRequest:
    name, has_value, value = (part.strip() for part in item.partition("="))
    if not _SPEC_NAME.fullmatch(name) or (has_value and not _NUMBER.fullmatch(value)):
        raise EditError(f"bad edit {item!r} in {text!r}: expected NAME=STRENGTH or NAME, "
                        f"e.g. smile=2 or ganspace:overexposed=15")
    if not has_value:
        return EditRequest(name)
    strength = float(value)
    if not math.isfinite(strength):
        raise EditError(f"bad edit {item!r} in {text!r}: strength must be a finite number")
    return EditRequest(name, strength)


def _load_torch_file(path: Path) -> Any:
    """Tensors (or dicts of tensors) from a ``.pt`` file, never arbitrary pickled objects."""
    try:
        import torch  # only here: the rest of the module must work without PyTorch
    except ImportError as exc:
        raise EditError(f"{path}: reading .pt edit files needs PyTorch; load the exported "
                        f"{DIRECTIONS_TENSORS} instead") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise EditError(f"{path}: refused by torch.load(weights_only=True): it holds pickled "
                        f"objects, not only tensors; it is not read") from exc
    # torch reports damaged files with assorted types (KeyError, RuntimeError, EOFError...).
    except Exception as exc:
        raise EditError(f"{path}: not a readable torch file ({type(exc).__name__}: {exc})") from exc


def _tensor_to_numpy(value: Any, path: Path, what: str) -> np.ndarray:
    import torch

    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise EditError(f"{path}: {what} must be a float tensor, got {type(value).__name__}"
                        + (f" {value.dtype}" if isinstance(value, torch.Tensor) else ""))
    return value.detach().float().numpy()


def load_interfacegan(path: str | os.PathLike[str]) -> LinearDirection:
    """An InterfaceGAN ``.pt`` tensor [1, D] or [1, L, D] -> direction named after the stem."""
    path = Path(path)
    vector = _tensor_to_numpy(_load_torch_file(path), path, "the direction")
    return _with_file_context(path, lambda: LinearDirection(path.stem, vector, "interfacegan"))


def load_raw(path: str | os.PathLike[str]) -> LinearDirection:
    """A raw direction from ``.npy`` (D,), (L, D) or (1, L, D), named after the file stem."""
    path = Path(path)
    try:
        vector = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise EditError(f"{path}: not a readable .npy array ({exc})") from exc
    return _with_file_context(path, lambda: LinearDirection(path.stem, vector, "raw"))


def load_ganspace_pca(path: str | os.PathLike[str]) -> GanSpacePCA:
    """``<name>_pca.pt`` with ``mean`` [1, D], ``comp`` [K, 1, D], ``std`` [K] -> PCA ``<name>``."""
    path = Path(path)
    data = _load_torch_file(path)
    if not isinstance(data, dict) or not {"mean", "comp", "std"} <= data.keys():
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise EditError(f"{path}: expected a dict with 'mean', 'comp', 'std', got {keys}")
    mean, comp, std = (_tensor_to_numpy(data[key], path, key) for key in ("mean", "comp", "std"))
    if mean.ndim != 2 or mean.shape[0] != 1 or comp.ndim != 3 or comp.shape[1] != 1:
        raise EditError(f"{path}: expected mean [1, D] and comp [K, 1, D], "
                        f"got {list(mean.shape)} and {list(comp.shape)}")
    name = path.stem.removesuffix(_PCA_SUFFIX)
    return _with_file_context(path, lambda: GanSpacePCA(name, mean[0], comp[:, 0], std))


def read_ganspace_configs(path: str | os.PathLike[str]) -> list[GanSpaceConfig]:
    """Rows of a tab-separated, header-less ``name pca_idx start end strength`` file."""
    path = Path(path)
    configs = []
    try:
        with path.open(newline="") as file:
            for line, row in enumerate(csv.reader(file, delimiter="\t"), start=1):
                if not any(field.strip() for field in row):
                    continue
                if len(row) != 5:
                    raise EditError(f"{path}:{line}: expected 5 tab-separated fields "
                                    f"(name, pca_idx, start, end, strength), got {row}")
                name, component, start, end, strength = (field.strip() for field in row)
                try:
                    numbers = int(component), int(start), int(end), float(strength)
                except ValueError:
                    raise EditError(f"{path}:{line}: expected integers for pca_idx, start, end "
                                    f"and a number for strength, got {row}") from None
                configs.append(_with_file_context(f"{path}:{line}",
                                                  lambda name=name, numbers=numbers: GanSpaceConfig(name, *numbers)))
    except OSError as exc:
        raise EditError(f"{path}: cannot read ({exc})") from exc
    names = [config.name for config in configs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise EditError(f"{path}: edit names appear more than once: {', '.join(duplicates)}")
    return configs


def _with_file_context(where: object, build: Callable[[], Any]) -> Any:
    try:
        return build()
    except EditError as exc:
        raise EditError(f"{where}: {exc}") from None


class DirectionLibrary:
    """Edit names -> directions; applies parsed edits in the order given (see module doc)."""

    def __init__(self, directions: Iterable[AnyDirection]) -> None:
        self._directions: dict[str, AnyDirection] = {}
        for direction in directions:
            if direction.name in self._directions:
                raise EditError(f"two directions are named '{direction.name}'")
            self._directions[direction.name] = direction

    def merged(self, other: DirectionLibrary) -> DirectionLibrary:
        """Both libraries' directions; a name in both raises :class:`EditError`."""
        return DirectionLibrary([*self._directions.values(), *other._directions.values()])

    def __len__(self) -> int:
        return len(self._directions)

    @property
    def names(self) -> list[str]:
        """Canonical names, sorted."""
        return sorted(self._directions)

    def resolve(self, name: str) -> AnyDirection:
        """The direction called ``name``; ``ganspace:<edit>`` finds a unique
        ``ganspace:<pca>/<edit>``. Unknown or ambiguous names raise :class:`EditError`."""
        if name in self._directions:
            return self._directions[name]
        prefix, _, edit = name.partition(":")
        if prefix == "ganspace" and "/" not in edit:
            matches = sorted(n for n in self._directions
                             if n.startswith("ganspace:") and n.endswith(f"/{edit}"))
            if len(matches) == 1:
                return self._directions[matches[0]]
            if matches:
                raise EditError(f"edit '{name}' is ambiguous: use one of {', '.join(matches)}")
        known = ", ".join(self.names) or "(none)"
        raise EditError(f"unknown edit '{name}'; known edits: {known}")

    def apply(self, wplus: np.ndarray, edits: Sequence[EditRequest]) -> np.ndarray:
        """(B, L, D) -> edited copy (B, L, D), applying ``edits`` one after another."""
        directions = [self.resolve(edit.name) for edit in edits]
        if not isinstance(wplus, np.ndarray):
            raise EditError(f"wplus must be a numpy array (B, L, D), got {type(wplus).__name__}")
        edited = wplus.copy()
        for direction, edit in zip(directions, edits, strict=True):
            edited = direction.apply(edited, edit.strength)
        return edited

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> DirectionLibrary:
        """Read a folder of directions in any layout we know: one written by :meth:`save` (it
        holds ``directions.json``; what `warpres export` writes and the demo ships), else one laid
        out like the official edit data.

        Official layout: every ``<name>.pt`` tensor -> InterfaceGAN direction ``<name>``; every ``<name>.npy`` ->
        raw direction ``<name>``; every ``<pca>_pca.pt`` combined with every row of
        ``ganspace_configs.csv`` -> ``ganspace:<pca>/<row name>``. Other files are ignored.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise EditError(f"{folder}: edit-direction folder not found")
        if (folder / DIRECTIONS_JSON).is_file():
            return cls.load(folder)
        files = sorted(p for p in folder.iterdir() if p.is_file())
        pca_files = [p for p in files if p.suffix == ".pt" and p.stem.endswith(_PCA_SUFFIX)]
        directions: list[AnyDirection] = [
            load_interfacegan(p) for p in files if p.suffix == ".pt" and p not in pca_files]
        directions += [load_raw(p) for p in files if p.suffix == ".npy"]
        csv_path = folder / GANSPACE_CONFIGS
        if pca_files and not csv_path.is_file():
            raise EditError(f"{folder}: found {pca_files[0].name} but no {GANSPACE_CONFIGS}")
        if csv_path.is_file() and not pca_files:
            raise EditError(f"{folder}: found {GANSPACE_CONFIGS} but no *{_PCA_SUFFIX}.pt file")
        if pca_files:
            configs = read_ganspace_configs(csv_path)
            for pca in map(load_ganspace_pca, pca_files):
                directions += [_with_file_context(csv_path, lambda pca=pca, c=c: GanSpaceDirection(pca, c))
                               for c in configs]
        return cls(directions)

    def description(self) -> dict[str, Any]:
        """The JSON side of :meth:`save`: each direction's kind, parameters and tensor keys."""
        entries: list[dict[str, Any]] = []
        pcas: dict[str, dict[str, str]] = {}
        for name, direction in self._directions.items():
            if isinstance(direction, LinearDirection):
                entries.append({"name": name, "kind": "linear", "source": direction.source,
                                "vector": f"linear/{name}",
                                **({"strength_range": list(direction.strength_range)}
                                   if direction.strength_range is not None else {})})
                continue
            pca, config = direction.pca, direction.config
            pcas[pca.name] = {key: f"ganspace/{pca.name}/{key}"
                              for key in ("mean", "components", "stds")}
            entries.append({"name": name, "kind": "ganspace", "pca": pca.name,
                            "edit": config.name, "component": config.component,
                            "start": config.start, "end": config.end,
                            "default_strength": config.strength})
        return {"format": _FORMAT, "version": _VERSION, "tensors": DIRECTIONS_TENSORS,
                "semantics": SEMANTICS, "pcas": pcas, "directions": entries}

    def _tensors(self) -> dict[str, np.ndarray]:
        tensors = {}
        for name, direction in self._directions.items():
            if isinstance(direction, LinearDirection):
                tensors[f"linear/{name}"] = direction.vector
            else:
                pca = direction.pca
                for key in ("mean", "components", "stds"):
                    tensors[f"ganspace/{pca.name}/{key}"] = getattr(pca, key)
        return tensors

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write ``directions.safetensors`` and ``directions.json`` into ``directory``,
        each atomically (temp file + rename); the JSON is written last."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {key: np.ascontiguousarray(value) for key, value in self._tensors().items()}
        with atomic_path(directory / DIRECTIONS_TENSORS) as tmp:
            save_file(tensors, str(tmp))
        with atomic_path(directory / DIRECTIONS_JSON) as tmp:
            tmp.write_text(json.dumps(self.description(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> DirectionLibrary:
        """Read what :meth:`save` wrote (numpy + safetensors only, no PyTorch)."""
        from safetensors.numpy import load_file

        directory = Path(directory)
        json_path, tensor_path = directory / DIRECTIONS_JSON, directory / DIRECTIONS_TENSORS
        try:
            description = json.loads(json_path.read_text())
            tensors = load_file(tensor_path)
        except (OSError, ValueError) as exc:
            raise EditError(f"{directory}: cannot read {DIRECTIONS_JSON} / "
                            f"{DIRECTIONS_TENSORS} ({exc})") from exc
        if (not isinstance(description, dict) or description.get("format") != _FORMAT
                or description.get("version") != _VERSION):
            raise EditError(f"{json_path}: expected format '{_FORMAT}' version {_VERSION}")

        def tensor(key: str) -> np.ndarray:
            if key not in tensors:
                raise EditError(f"{tensor_path}: tensor '{key}' is missing")
            return tensors[key]

        try:
            pcas = {name: GanSpacePCA(name, *(tensor(keys[k])
                                              for k in ("mean", "components", "stds")))
                    for name, keys in description["pcas"].items()}
            directions: list[AnyDirection] = []
            for entry in description["directions"]:
                if entry["kind"] == "linear":
                    directions.append(LinearDirection(entry["name"], tensor(entry["vector"]), entry["source"],
                                                      _range_entry(entry.get("strength_range"), json_path)))
                elif entry["kind"] == "ganspace":
                    config = GanSpaceConfig(entry["edit"], entry["component"], entry["start"],
                                            entry["end"], entry["default_strength"])
                    directions.append(GanSpaceDirection(pcas[entry["pca"]], config))
                else:
                    raise EditError(f"{json_path}: unknown direction kind {entry['kind']!r}")
        except (KeyError, TypeError) as exc:
            raise EditError(f"{json_path}: malformed direction description ({exc!r})") from exc
        return cls(directions)


def _range_entry(value: Any, where: Path) -> tuple[float, float] | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)):
        raise EditError(f"{where}: strength_range must be [low, high], got {value!r}")
    return float(value[0]), float(value[1])


class LatentSmoother:
    """Exponential moving average of W+ codes across frames, for `Session.invert(latent_filter=)`.

    Convention: ``new = alpha * current + (1 - alpha) * previous``, per frame, where `previous`
    is the smoothed code of the frame before. `alpha` is in (0, 1]: 1 passes codes through
    unchanged (bit for bit), smaller values smooth more (a step in the input closes the fraction
    `alpha` of the remaining gap every frame). The first frame after construction or `reset()`
    initializes the state and passes through, so there is no pull towards zero.

    A batch (B, L, D) is smoothed sequentially, frame 0 first: calling with a batch of B frames
    equals calling B times with one frame. The state is float32 (L, D).
    """

    def __init__(self, alpha: float) -> None:
        alpha = float(alpha)
        if not (0.0 < alpha <= 1.0):  # also rejects NaN
            raise EditError(f"smoothing alpha must be in (0, 1] (1 = no smoothing), got {alpha}")
        self.alpha = alpha
        self._state: np.ndarray | None = None

    @property
    def state(self) -> np.ndarray | None:
        """The smoothed code of the last frame, (L, D) float32, or None before the first frame."""
        return None if self._state is None else self._state.copy()

    def reset(self) -> None:
        """Forget the past: the next frame passes through (e.g. after a scene cut)."""
        self._state = None

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        """(B, L, D) W+ codes of consecutive frames -> their smoothed codes, (B, L, D) float32."""
        wplus = np.asarray(wplus, dtype=np.float32)
        if wplus.ndim != 3:
            raise ValueError(f"LatentSmoother expects W+ codes shaped (B, L, D), got {wplus.shape}")
        if self._state is not None and wplus.shape[1:] != self._state.shape:
            raise ValueError(f"LatentSmoother: W+ codes changed from (B, L, D) = (B, {self._state.shape[0]}, "
                             f"{self._state.shape[1]}) to {wplus.shape}; call reset() when switching models")
        smoothed = np.empty_like(wplus)
        state = self._state
        for index, current in enumerate(wplus):
            if state is None or self.alpha == 1.0:
                state = current.copy()
            else:
                state = self.alpha * current + (1.0 - self.alpha) * state
            smoothed[index] = state
        self._state = state
        return smoothed
