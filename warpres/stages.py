"""The stage table and the exported-model manifest: the contract export and runtime share.

Nothing else hard-codes stage order or tensor names (ARCHITECTURE §2). This module imports
neither torch nor the exporter, so a serving image can read a model folder with numpy alone.

A model folder holds one ONNX graph per stage, ``manifest.json`` and, when the model has edit
directions, ``directions.safetensors`` + ``directions.json``. The manifest pins every file by
SHA-256 and names the model (``model_id``, a hash of its weights), so a runtime refuses a graph
that was changed after export or that was copied in from another model's folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from warpres.errors import ModelFolderError, WarpresError
from warpres.files import atomic_path, sha256_file

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "warpres-model"
MANIFEST_VERSION = 1
BATCH_AXIS = "batch"
PORTABLE = "portable"  # standard ONNX ops only
PLUGIN = "plugin"  # modulated convs and warps as TensorRT plugin nodes (plugins/): TensorRT only
FLAVOURS = (PORTABLE, PLUGIN)
DIRECTION_FILES = {"tensors": "directions.safetensors", "description": "directions.json"}
T = TypeVar("T")  # a tensor of any kind: numpy array, torch tensor, device buffer


@dataclass(frozen=True)
class Stage:
    """One subgraph: its file stem, tensor names (batch first in every tensor), and whether
    its outputs depend only on the image (cached per image) or change with each edit."""

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    per_image: bool

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"


ENCODER = Stage("encoder", ("image",), ("wplus", "enc_feat"), per_image=True)
# Runs on the original latent once per image, then on every edited latent.
SYNTHESIS_HEAD = Stage("synthesis_head", ("wplus",), ("feat", "tap_quarter", "tap_half", "rgb"), per_image=False)
RESIDUAL_ENCODER = Stage("residual_encoder", ("enc_feat", "feat"), ("residual",), per_image=True)
FLOW = Stage("flow", ("tap_quarter", "tap_half", "feat", "tap_quarter_edit", "tap_half_edit", "feat_edit"),
             ("flow",), per_image=False)
FUSE_STYLERES = Stage("fuse", ("residual", "feat_edit"), ("feat_fused",), per_image=False)
FUSE_WARPRES = Stage("fuse", ("residual", "feat_edit", "flow"), ("feat_fused",), per_image=False)
SYNTHESIS_TAIL = Stage("synthesis_tail", ("feat_fused", "rgb", "wplus"), ("image",), per_image=False)

# In execution order. "inversion" is E0 + generator without a residual branch: the tail takes
# the edited head's feat as feat_fused.
FAMILY_STAGES: dict[str, tuple[Stage, ...]] = {
    "inversion": (ENCODER, SYNTHESIS_HEAD, SYNTHESIS_TAIL),
    "styleres": (ENCODER, SYNTHESIS_HEAD, RESIDUAL_ENCODER, FUSE_STYLERES, SYNTHESIS_TAIL),
    "warpres": (ENCODER, SYNTHESIS_HEAD, RESIDUAL_ENCODER, FLOW, FUSE_WARPRES, SYNTHESIS_TAIL),
}


def stages_for(family: str) -> tuple[Stage, ...]:
    """The stages a model family exports and runs, in execution order."""
    try:
        return FAMILY_STAGES[family]
    except KeyError:
        raise WarpresError(f"model family {family!r} has no deployable stages; an exported model needs an "
                           f"encoder to invert images (families: {sorted(FAMILY_STAGES)})") from None


# -- the dataflow (ARCHITECTURE §1, §3) --------------------------------------------------------
#
# Dataflow tensors are named as stage tensors, with an `_edit` suffix for the synthesis head's
# outputs on the edited latent: image, wplus, enc_feat, feat, tap_quarter, tap_half, rgb, residual
# (original branch; per image), wplus_edit, feat_edit, tap_quarter_edit, tap_half_edit, rgb_edit,
# flow, feat_fused, output (edited branch; per edit). `image` and `wplus_edit` come from outside
# (the user's pixels, the host-side edit of W+); every other tensor is one stage call's output.
EDITED_SUFFIX = "_edit"
OUTPUT = "output"  # the tail's `image` on the edited branch


@dataclass(frozen=True)
class Step:
    """One stage call in a family's dataflow: the dataflow tensor that feeds each stage input
    (`feeds`, in stage input order) and the names its outputs take there (`produces`).
    per_image: the outputs depend on the image alone (the original branch), so they can be
    cached and reused by every edit of that image."""

    stage: Stage
    feeds: tuple[tuple[str, str], ...]
    produces: tuple[tuple[str, str], ...]
    per_image: bool

    def inputs(self, tensors: Mapping[str, T]) -> dict[str, T]:
        """The stage's feeds picked out of the dataflow tensors, named as the stage names them."""
        return {name: tensors[source] for name, source in self.feeds}

    def outputs(self, results: Mapping[str, T]) -> dict[str, T]:
        """The stage's outputs renamed into the dataflow."""
        return {target: results[name] for name, target in self.produces}


def _step(stage: Stage, per_image: bool, feeds: Mapping[str, str] | None = None,
          produces: Mapping[str, str] | None = None) -> Step:
    """A call of `stage` reading and writing the same-named dataflow tensors, except those that
    `feeds` (stage input -> dataflow tensor) and `produces` (stage output -> dataflow tensor) rename."""
    sources = {name: name for name in stage.inputs} | dict(feeds or {})
    targets = {name: name for name in stage.outputs} | dict(produces or {})
    return Step(stage, tuple((name, sources[name]) for name in stage.inputs),
                tuple((name, targets[name]) for name in stage.outputs), per_image)


def _edited(names: Sequence[str]) -> dict[str, str]:
    return {name: name + EDITED_SUFFIX for name in names}


def _dataflow(stages: tuple[Stage, ...]) -> tuple[Step, ...]:
    fuse = next((stage for stage in stages if stage.name == FUSE_STYLERES.name), None)
    steps = [_step(ENCODER, per_image=True), _step(SYNTHESIS_HEAD, per_image=True)]
    if RESIDUAL_ENCODER in stages:
        steps.append(_step(RESIDUAL_ENCODER, per_image=True))
    steps.append(_step(SYNTHESIS_HEAD, per_image=False, feeds=_edited(SYNTHESIS_HEAD.inputs),
                       produces=_edited(SYNTHESIS_HEAD.outputs)))
    if FLOW in stages:
        steps.append(_step(FLOW, per_image=False))  # its input names already say which branch they read
    if fuse is not None:
        steps.append(_step(fuse, per_image=False))
    # without a residual branch the tail renders the edited head's features as they are
    tail_feeds = _edited(("rgb", "wplus")) | ({} if fuse is not None else {"feat_fused": "feat" + EDITED_SUFFIX})
    steps.append(_step(SYNTHESIS_TAIL, per_image=False, feeds=tail_feeds, produces={"image": OUTPUT}))
    return tuple(steps)


DATAFLOW: dict[str, tuple[Step, ...]] = {family: _dataflow(stages) for family, stages in FAMILY_STAGES.items()}


def dataflow(family: str) -> tuple[Step, ...]:
    """Every stage call of a full edit of `family`, in execution order."""
    stages_for(family)  # the error for an unknown family
    return DATAFLOW[family]


def walk(family: str, have: Collection[str], want: Collection[str]) -> tuple[Step, ...]:
    """The stage calls, in execution order, that compute the dataflow tensors `want` from those
    held (`have`): e.g. an inversion (have image, want `cached_tensors`), an edit from the cache
    (have the cache and wplus_edit, want output), or an edit with a flow given from outside
    (have flow: the flow head is skipped)."""
    steps = dataflow(family)
    producer = {target: step for step in steps for _, target in step.produces}
    needed: set[Step] = set()

    def need(tensor: str) -> None:
        if tensor in have:
            return
        step = producer.get(tensor)
        if step is None:
            raise WarpresError(f"{family}: no stage computes {tensor!r} from {sorted(have)}")
        if step not in needed:
            needed.add(step)
            for _, source in step.feeds:
                need(source)

    for tensor in want:
        need(tensor)
    return tuple(step for step in steps if step in needed)


def cached_tensors(family: str) -> tuple[str, ...]:
    """The per-image tensors an edit reads: what a session caches per inverted image (besides
    the W+ the edits start from). E.g. warpres: feat, tap_quarter, tap_half, residual."""
    per_image = {target for step in dataflow(family) if step.per_image for _, target in step.produces}
    read = [source for step in dataflow(family) if not step.per_image for _, source in step.feeds]
    return tuple(dict.fromkeys(tensor for tensor in read if tensor in per_image))


def run_steps(steps: Sequence[Step], tensors: dict[str, T], run: Callable[[Step, dict[str, T]], Mapping[str, T]]
              ) -> dict[str, T]:
    """Execute `steps` over the dataflow `tensors` (updated in place and returned): `run(step,
    inputs)` computes one stage call and returns its outputs named as the stage names them.
    A tensor already held is never replaced (a filtered W+, a flow given from outside)."""
    for step in steps:
        for target, value in step.outputs(run(step, step.inputs(tensors))).items():
            tensors.setdefault(target, value)
    return tensors


def stage_feeds(family: str, stage: Stage, tensors: Mapping[str, T]) -> dict[str, T]:
    """The inputs of `stage` picked out of a full run of the dataflow (`tensors`); a stage called
    on both branches (the synthesis head) is fed from its last call, the edited one."""
    calls = [step for step in dataflow(family) if step.stage == stage]
    if not calls:
        raise WarpresError(f"a {family} model has no {stage.name} stage with inputs {stage.inputs}")
    return calls[-1].inputs(tensors)


@dataclass(frozen=True)
class TensorSpec:
    """Shape with the batch axis named ``"batch"``, e.g. ``("batch", 512, 64, 64)``; dtype name."""

    shape: tuple[int | str, ...]
    dtype: str = "float32"

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(tuple(data["shape"]), data["dtype"])


@dataclass(frozen=True)
class FileEntry:
    """A file in the model folder, pinned by its SHA-256."""

    file: str
    sha256: str


@dataclass(frozen=True)
class CalibratedStage:
    """A stage's reduced-precision graph and the SHA-256 of the FP32 graph it was calibrated from:
    a folder whose FP32 graph changed since has its calibrated graph refused."""

    file: FileEntry
    source_sha256: str
    weights: FileEntry | None = None  # an OpenVINO IR's .bin beside its .xml

    @property
    def files(self) -> tuple[FileEntry, ...]:
        return (self.file,) if self.weights is None else (self.file, self.weights)


@dataclass(frozen=True)
class Calibration:
    """One target's calibrated graphs (``warpres calibrate``), as the manifest records them.

    target: "openvino" (the CPU runtimes) or "tensorrt". precision: "int8" (every stage
    quantized, with measured exclusions inside) or "mixed" (the stages whose INT8 missed the bar
    run in float). stages: the quantized stages. meets_bar: whether the held-out accuracy met
    `plan["bar_db"]`; `auto` never picks a calibration that did not. plan: method, images' hash,
    exclusions and per-stage precision (informative). report: the accuracy report's file name.
    """

    target: str
    precision: str
    stages: dict[str, CalibratedStage]
    meets_bar: bool
    plan: dict[str, Any] = field(default_factory=dict)
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "meets_bar": self.meets_bar, "report": self.report, "plan": self.plan,
                "stages": {name: {"file": entry.file.file, "sha256": entry.file.sha256,
                                  "source_sha256": entry.source_sha256,
                                  **({"weights": {"file": entry.weights.file, "sha256": entry.weights.sha256}}
                                     if entry.weights else {})} for name, entry in self.stages.items()}}

    @classmethod
    def from_dict(cls, target: str, data: dict[str, Any]) -> Calibration:
        return cls(target=target, precision=data["precision"], meets_bar=bool(data["meets_bar"]),
                   report=data.get("report"), plan=dict(data.get("plan", {})),
                   stages={name: CalibratedStage(FileEntry(entry["file"], entry["sha256"]), entry["source_sha256"],
                                                 FileEntry(entry["weights"]["file"], entry["weights"]["sha256"])
                                                 if "weights" in entry else None)
                           for name, entry in data["stages"].items()})


@dataclass(frozen=True)
class Manifest:
    """What `manifest.json` says about an exported model folder.

    family: "inversion" | "styleres" | "warpres". config: the model's component configs as JSON
    (generator / encoder / branch). model_id: SHA-256 over the model's weights, written into
    each graph's metadata too. io: per stage, each input and output tensor's spec (the
    encoder's input `image` and the tail's output `image` share a name, not a shape).
    graphs: stage name -> file. directions: the two direction files, if the model has edit directions. versions: the
    package versions that exported it (informative). calibrations: target -> its calibrated
    graphs (`warpres calibrate`), absent until a calibration.
    """

    family: str
    config: dict[str, Any]
    model_id: str
    flavour: str
    opset: int
    io: dict[str, dict[str, TensorSpec]]
    graphs: dict[str, FileEntry]
    directions: dict[str, FileEntry] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    calibrations: dict[str, Calibration] = field(default_factory=dict)

    @property
    def stages(self) -> tuple[Stage, ...]:
        return stages_for(self.family)

    @property
    def image_size(self) -> int:
        """Senc: the encoder's input size."""
        return int(self.io[ENCODER.name]["image"].shape[-1])

    @property
    def resolution(self) -> int:
        """R: the size of the images the tail renders."""
        return int(self.io[SYNTHESIS_TAIL.name]["image"].shape[-1])

    @property
    def latent_shape(self) -> tuple[int, int]:
        """(L, w_dim) of W+."""
        _, layers, dim = self.io[ENCODER.name]["wplus"].shape
        return int(layers), int(dim)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "family": self.family,
            "model_id": self.model_id,
            "flavour": self.flavour,
            "opset": self.opset,
            "dynamic_axes": {"0": BATCH_AXIS},
            "config": self.config,
            "stages": {stage.name: {"inputs": list(stage.inputs), "outputs": list(stage.outputs),
                                    "per_image": stage.per_image, "file": self.graphs[stage.name].file,
                                    "sha256": self.graphs[stage.name].sha256,
                                    "tensors": {name: spec.to_dict() for name, spec in self.io[stage.name].items()}}
                       for stage in self.stages},
            "directions": {role: {"file": e.file, "sha256": e.sha256} for role, e in self.directions.items()},
            "versions": self.versions,
            **({"calibration": {target: c.to_dict() for target, c in self.calibrations.items()}}
               if self.calibrations else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = MANIFEST_NAME) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
            raise ModelFolderError(f"{source}: not a warpres model manifest (format={_get(data, 'format')!r})")
        if data.get("format_version") != MANIFEST_VERSION:
            raise ModelFolderError(f"{source}: manifest version {data.get('format_version')!r}; "
                                   f"this version reads {MANIFEST_VERSION}")
        try:
            family = data["family"]
            if family not in FAMILY_STAGES:
                raise ModelFolderError(f"{source}: unknown model family {family!r} (known: {sorted(FAMILY_STAGES)})")
            stages = stages_for(family)
            recorded = data["stages"]
            for stage in stages:
                entry = recorded[stage.name]
                if (tuple(entry["inputs"]), tuple(entry["outputs"])) != (stage.inputs, stage.outputs):
                    raise ModelFolderError(f"{source}: stage {stage.name} has tensors {entry['inputs']} -> "
                                           f"{entry['outputs']}; this version expects {list(stage.inputs)} -> "
                                           f"{list(stage.outputs)}")
            directions = data.get("directions", {})
            files = [recorded[s.name]["file"] for s in stages] + [e["file"] for e in directions.values()]
            files += [file for calibration in data.get("calibration", {}).values()
                      for entry in calibration["stages"].values()
                      for file in (entry["file"], *([entry["weights"]["file"]] if "weights" in entry else []))]
            if not all(isinstance(file, str) for file in files):
                raise ModelFolderError(f"{source}: file names must be strings, got {files}")
            if directions and {role: e["file"] for role, e in directions.items()} != DIRECTION_FILES:
                raise ModelFolderError(f"{source}: directions must be {DIRECTION_FILES}, got {directions}")
            return cls(
                family=family,
                config=data["config"],
                model_id=data["model_id"],
                flavour=data["flavour"],
                opset=int(data["opset"]),
                io={s.name: {name: TensorSpec.from_dict(recorded[s.name]["tensors"][name])
                             for name in (*s.inputs, *s.outputs)} for s in stages},
                graphs={s.name: FileEntry(recorded[s.name]["file"], recorded[s.name]["sha256"]) for s in stages},
                directions={role: FileEntry(e["file"], e["sha256"]) for role, e in data.get("directions", {}).items()},
                versions=dict(data.get("versions", {})),
                calibrations={target: Calibration.from_dict(target, entry)
                              for target, entry in data.get("calibration", {}).items()},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFolderError(f"{source}: malformed manifest ({type(exc).__name__}: {exc})") from None


def _get(data: object, key: str) -> object:
    return data.get(key) if isinstance(data, dict) else None


@dataclass(frozen=True)
class ModelFolder:
    """An exported model folder whose manifest was read and whose files were verified."""

    path: Path
    manifest: Manifest

    def graph_path(self, stage: Stage) -> Path:
        return self.path / self.manifest.graphs[stage.name].file

    def calibrated_graph_path(self, target: str, stage: Stage) -> Path:
        """The stage's calibrated graph for `target`; ModelFolderError when there is none, or when
        the stage's FP32 graph changed after calibration (recalibrate)."""
        calibration = self.manifest.calibrations.get(target)
        if calibration is None or stage.name not in calibration.stages:
            raise ModelFolderError(f"{self.path}: no {target} calibrated graph for stage {stage.name}; run "
                                   f"`warpres calibrate {self.path} --images DIR --target {target}`")
        entry = calibration.stages[stage.name]
        if entry.source_sha256 != self.manifest.graphs[stage.name].sha256:
            raise ModelFolderError(f"{self.path}: the {stage.name} graph changed after calibration; its "
                                   f"{target} calibrated graph is refused; recalibrate (`warpres calibrate "
                                   f"{self.path} --images DIR --target {target}`)")
        return _inside(self.path, entry.file.file, self.path / MANIFEST_NAME)

    @property
    def directions_path(self) -> Path | None:
        """The folder holding directions.{safetensors,json}, or None when the model has none."""
        return self.path if self.manifest.directions else None


def is_model_folder(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / MANIFEST_NAME).is_file()


def _inside(folder: Path, name: str, source: Path) -> Path:
    """`folder / name`, refusing names that would leave the folder (absolute, `..`, links out)."""
    candidate = (folder / name).resolve()
    if Path(name).is_absolute() or not candidate.is_relative_to(folder.resolve()):
        raise ModelFolderError(f"{source}: file {name!r} points outside the model folder")
    return candidate


def open_model_folder(path: str | os.PathLike[str], verify: bool = True) -> ModelFolder:
    """Read `path/manifest.json` and check that every file it pins exists, stays inside the
    folder and (with `verify`) has the recorded SHA-256."""
    folder = Path(path)
    manifest_path = folder / MANIFEST_NAME
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(f"{folder}: no {MANIFEST_NAME}; not an exported model folder "
                               f"(run `warpres export CHECKPOINT -o {folder}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{manifest_path}: unreadable ({exc})") from None
    manifest = Manifest.from_dict(data, str(manifest_path))
    calibrated = [(f"{target} {name} calibrated graph", file) for target, calibration in
                  manifest.calibrations.items() for name, entry in calibration.stages.items() for file in entry.files]
    for role, entry in [*manifest.graphs.items(), *manifest.directions.items(), *calibrated]:
        file = _inside(folder, entry.file, manifest_path)
        if not file.is_file():
            raise ModelFolderError(f"{file}: missing ({role} in {manifest_path}); re-export the model")
        if verify and sha256_file(file) != entry.sha256:
            raise ModelFolderError(f"{file}: SHA-256 differs from {manifest_path}; the file was changed after "
                                   f"export or belongs to another model; re-export it")
    return ModelFolder(folder, manifest)


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (last, after the files it pins)."""
    path = Path(folder) / MANIFEST_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path
