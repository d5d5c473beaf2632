"""The training configuration: typed sections read from YAML, every key checked.

A run is described by one YAML file (`warpres train CONFIG.yaml`); relative paths in it are
relative to the file's folder. Unknown keys and wrong types are refused with the dotted key
named, so a typo never silently trains with a default.

Loss weights default to the StyleRes training recipe (L2 1, VGG 1e-3, identity 0.1,
adversarial 0.1, feature regulariser 5; the cycle output is compared with the input through
L2, VGG and identity at one tenth of those). The flow weight is ours: the paper supervises the
flow head with a teacher, its weight is not published.
"""

from __future__ import annotations

import json
import math
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from warpres.errors import ConfigError

FAMILIES = ("warpres", "styleres")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class DataConfig:
    """train: folder of images; eval: held-out folder (None: no evaluation); hflip: mirror
    half of the training images; eval_images: how many held-out images to score (0: all)."""

    train: Path
    eval: Path | None = None
    hflip: bool = True
    eval_images: int = 0


@dataclass(frozen=True)
class OptimConfig:
    """Adam for the branch (E1, flow head, E2); lr multiplied by `gamma` at each milestone step."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    milestones: tuple[int, ...] = (5000, 10000, 15000)
    gamma: float = 0.5


@dataclass(frozen=True)
class EditConfig:
    """probability: share of steps on the cycle path (the rest are no-edit steps);
    alpha: the range of alpha in W_alpha = W + alpha (M(z) - W).
    Directed edits (the official recipe's 'interface' mode, off there): each cycle sample moves,
    with probability `directed_share`, along one of the linear directions `along` of the library
    folder `directions` (picked uniformly), by a strength uniform in [-strength, strength],
    instead of towards M(z). Random interpolations rarely turn a head as far as a pose edit does."""

    probability: float = 0.5
    alpha: tuple[float, float] = (0.4, 0.5)
    directions: Path | None = None
    along: tuple[str, ...] = ()
    strength: float = 1.0
    directed_share: float = 0.0


@dataclass(frozen=True)
class LossWeights:
    """Lambda of every term; the no-edit path compares its reconstruction with the input, the
    cycle path its round trip x'' with the input. `flow` is the teacher term (WarpRes only)."""

    l2: float = 1.0
    perceptual: float = 1e-3
    identity: float = 0.1
    adversarial: float = 0.1
    feature_regularizer: float = 5.0
    flow: float = 1.0
    cycle_l2: float = 0.1
    cycle_perceptual: float = 1e-4
    cycle_identity: float = 0.01


@dataclass(frozen=True)
class PerceptualConfig:
    """network: 'vgg16' (torchvision-format ImageNet weights) or 'domain' (a domain's own
    `warpres.training.domain.DomainNetwork`, e.g. the demo's attribute regressor); weights: its file (None: perceptual loss off,
    with a warning)."""

    network: str = "vgg16"
    weights: Path | None = None


@dataclass(frozen=True)
class IdentityConfig:
    """ArcFace weights in pSp's `model_ir_se50.pth` layout (None: identity loss off, with a warning);
    backbone: ArcFaceBackbone arguments for another recogniser; crop: the FFHQ face box or none."""

    weights: Path | None = None
    backbone: dict[str, Any] = field(default_factory=dict)
    crop: bool = True


@dataclass(frozen=True)
class DiscriminatorConfigSection:
    """checkpoint: an NVlabs `D` state dict to fine-tune (None: a fresh StyleGAN2 discriminator at
    `resolution`, default the encoder input size); R1 every `r1_interval` steps (lazy, scaled)."""

    checkpoint: Path | None = None
    resolution: int | None = None
    channel_base: int = 16384
    channel_max: int = 512
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    r1_gamma: float = 10.0
    r1_interval: int = 16


@dataclass(frozen=True)
class TeacherConfig:
    """kind: 'opencv' (method DIS or Farneback on the generated RGB pair, no weights; with
    still_threshold, zero flow where the pair agrees, see OpenCVFlowTeacher) or 'raft'
    (torchvision-format RAFT weights at `checkpoint`, `iterations` refinement steps). The teacher
    sees both images at `size`. flow_head_init: a checkpoint whose flow-head tensors initialise
    ours where names and shapes match."""

    kind: str = "opencv"
    method: str = "dis"
    preset: str = "medium"
    still_threshold: float | None = None
    still_margin: float = 0.07
    checkpoint: Path | None = None
    iterations: int = 12
    size: int = 256
    flow_head_init: Path | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """Every how many steps to log, write a sample grid, evaluate and checkpoint (0: never;
    a checkpoint is always written at the end). keep_every: also keep ckpt-STEP copies."""

    log_every: int = 10
    sample_every: int = 500
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_every: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One training run. `model`: the checkpoint that provides E0 and the generator (any format
    `load_checkpoint` reads); its branch is trained further when it has one of `family`, else
    a new branch with `branch` widths is created. `channels_last` runs every network in that
    memory format (oneDNN's fast bf16 convolutions on CPUs; tensor cores on GPUs)."""

    model: Path
    output: Path
    data: DataConfig
    family: str = "warpres"
    branch: dict[str, Any] = field(default_factory=dict)
    steps: int = 20000
    batch_size: int = 1
    seed: int = 0
    amp: str = "auto"
    channels_last: bool = False
    workers: int = 2
    perceptual: PerceptualConfig = field(default_factory=PerceptualConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    edits: EditConfig = field(default_factory=EditConfig)
    losses: LossWeights = field(default_factory=LossWeights)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    discriminator: DiscriminatorConfigSection = field(default_factory=DiscriminatorConfigSection)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.family not in FAMILIES:
            problems.append(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.amp not in AMP_MODES:
            problems.append(f"amp must be one of {AMP_MODES}, got {self.amp!r}")
        if self.steps < 1 or self.batch_size < 1 or self.workers < 0 or self.seed < 0:
            problems.append("steps and batch_size must be >= 1, workers and seed >= 0")
        schedule = {f.name: getattr(self.schedule, f.name) for f in fields(self.schedule)}
        if min(schedule.values()) < 0 or self.data.eval_images < 0:
            problems.append("schedule.* and data.eval_images must be >= 0")
        keep, every = schedule["keep_every"], schedule["checkpoint_every"]
        if keep and every and keep % every:
            problems.append("schedule.keep_every must be a multiple of schedule.checkpoint_every")
        if self.teacher.size < 8 or self.teacher.iterations < 1:
            problems.append("teacher.size must be >= 8 and teacher.iterations >= 1")
        d = self.discriminator
        if d.r1_gamma < 0 or d.lr <= 0 or not all(0 <= b < 1 for b in (*d.betas, *self.optim.betas)):
            problems.append("discriminator.r1_gamma must be >= 0, learning rates > 0 and betas in [0, 1)")
        low, high = self.edits.alpha
        if not 0.0 <= low <= high <= 1.0:
            problems.append(f"edits.alpha must be an interval inside [0, 1], got {self.edits.alpha}")
        if not 0.0 <= self.edits.probability <= 1.0:
            problems.append(f"edits.probability must be in [0, 1], got {self.edits.probability}")
        edits = self.edits
        if not 0.0 <= edits.directed_share <= 1.0 or edits.strength <= 0:
            problems.append(f"edits.directed_share must be in [0, 1] and edits.strength > 0, got "
                            f"{edits.directed_share} and {edits.strength}")
        if edits.directed_share > 0 and (edits.directions is None or not edits.along):
            problems.append("edits.directed_share > 0 needs edits.directions and the names in edits.along")
        negative = [f.name for f in fields(self.losses) if getattr(self.losses, f.name) < 0]
        if negative:
            problems.append(f"loss weights must be >= 0: {negative}")
        if self.perceptual.network not in ("vgg16", "domain"):
            problems.append(f"perceptual.network must be 'vgg16' or 'domain', got {self.perceptual.network!r}")
        if self.teacher.kind not in ("opencv", "raft"):
            problems.append(f"teacher.kind must be 'opencv' or 'raft', got {self.teacher.kind!r}")
        if self.teacher.kind == "raft" and self.teacher.checkpoint is None:
            problems.append("teacher.kind 'raft' needs teacher.checkpoint")
        if self.discriminator.r1_interval < 1:
            problems.append("discriminator.r1_interval must be >= 1")
        if self.optim.lr <= 0 or self.optim.gamma <= 0 or list(self.optim.milestones) != sorted(self.optim.milestones):
            problems.append("optim.lr and optim.gamma must be > 0 and optim.milestones increasing")
        if problems:
            raise ConfigError("invalid training config: " + "; ".join(problems))

    def to_json(self) -> str:
        """The config as JSON (paths as strings): stored in every checkpoint of the run."""
        return json.dumps(asdict(self), default=str, sort_keys=True)


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Command-line overrides, KEY=VALUE with a dotted key and a YAML value (losses.flow=2)."""
    import yaml

    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. schedule.eval_every=500), got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML training config; `overrides` maps dotted keys ("schedule.eval_every") to values."""
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for depth, key in enumerate(parents):
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: cannot set {dotted}: {'.'.join(parents[:depth + 1])} is not a section")
        node[leaf] = value
    return config_from_mapping(raw, base=path.parent, source=str(path))


def config_from_mapping(raw: dict[str, Any], base: Path, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from plain data; relative paths are resolved against `base`."""
    return _build(TrainConfig, raw, base, source, prefix="")


def _build(cls, raw: Any, base: Path, source: str, prefix: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{source}: unknown key {prefix}{unknown[0]}; known keys: {sorted(known)}")
    values = {}
    for name, spec in known.items():
        key = prefix + name
        if name not in raw:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise ConfigError(f"{source}: missing required key {key}")
            continue
        values[name] = _convert(hints[name], raw[name], base, source, key)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'}: {exc}") from None


def _convert(hint, value: Any, base: Path, source: str, key: str):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (hint,) = [a for a in args if a is not type(None)]
        return _convert(hint, value, base, source, key)
    if is_dataclass(hint):
        return _build(hint, value, base, source, key + ".")
    if hint is Path:
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{source}: {key} must be a path, got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else base / path
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        item = args[0]
        if args[-1] is not Ellipsis and len(value) != len(args):
            raise ConfigError(f"{source}: {key} must have {len(args)} values, got {len(value)}")
        return tuple(_convert(item, v, base, source, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        return _float(value, source, key)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise ConfigError(f"{source}: {key} must be {hint.__name__}, got {value!r}")


def _float(value: Any, source: str, key: str) -> float:
    """Numbers, and the strings YAML 1.1 leaves unparsed such as 1e-4 (it wants 1.0e-4)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{source}: {key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise ConfigError(f"{source}: {key} must be finite, got {value!r}")
    return number
