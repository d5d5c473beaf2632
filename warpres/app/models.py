"""What a `--model` names: a path (checkpoint or exported folder), or a built-in model.

Built-in names are the shipped demo models (`warpres.demo`): ``demo`` (= ``demo:warpres``),
``demo:styleres`` and ``demo:e0`` (E0 only), each with the shipped edit directions attached and
aligned with the demo's framing. They need PyTorch the first time (the bundle is exported into
the cache); later runs open the cached folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from warpres.demo import DIRECTIONS
from warpres.edits import DirectionLibrary
from warpres.errors import WarpresError
from warpres.files import cache_root
from warpres.media.faces import DEMO, FFHQ, Framing

DEMO_MODELS = {"demo": "warpres", "demo:warpres": "warpres", "demo:styleres": "styleres", "demo:e0": "inversion"}
DEMO_DESCRIPTIONS = {"warpres": "WarpRes: E0 + warped residuals (the paper's model)",
                     "styleres": "StyleRes: E0 + residual features, unwarped",
                     "inversion": "E0 only (e4e-style encoder, no residual branch)"}


@dataclass(frozen=True)
class ModelChoice:
    """A resolved --model: what to open, the directions it carries beyond its own folder's, and
    the framing its faces are aligned with."""

    path: Path
    directions: DirectionLibrary | None
    framing: Framing
    name: str


def is_builtin(spec: str) -> bool:
    return spec in DEMO_MODELS


def resolve_model(spec: str | Path, backend: str = "auto", extra_directions: Path | None = None) -> ModelChoice:
    """A built-in name or a path -> the `ModelChoice` to open on ``backend`` (the PyTorch
    reference opens checkpoints, the other backends exported folders)."""
    extra = DirectionLibrary.from_folder(extra_directions) if extra_directions is not None else None
    text = str(spec)
    if is_builtin(text):
        family = DEMO_MODELS[text]
        path = _demo_paths(backend)[family]
        shipped = DirectionLibrary.from_folder(DIRECTIONS)
        return ModelChoice(path, shipped if extra is None else shipped.merged(extra), DEMO, text)
    path = Path(spec)
    if not path.exists():
        raise WarpresError(f"{path}: no such model file or folder (built-in models: {', '.join(DEMO_MODELS)})")
    framing = DEMO if _inside(path, demo_cache()) else FFHQ
    return ModelChoice(path, extra, framing, str(path))


def demo_cache() -> Path:
    return cache_root() / "demo"


def _demo_paths(backend: str) -> dict[str, Path]:
    try:
        from warpres.demo.bundle import demo_models
    except ImportError as exc:
        raise WarpresError(f"the demo models are exported from the shipped bundle on first use, which needs PyTorch "
                           f"({exc}); pip install 'warpres[export,cpu]'") from None
    return demo_models(backend)


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def model_listing() -> list[str]:
    """Lines for `warpres models`: the built-in names, and what the cache holds."""
    lines = ["built-in models (--model NAME):"]
    for name, family in DEMO_MODELS.items():
        alias = " (= demo:warpres)" if name == "demo" else ""
        lines.append(f"  {name:<15} {DEMO_DESCRIPTIONS[family]}{alias}")
    cached = sorted(path for path in demo_cache().glob("*/*") if (path / "manifest.json").is_file())
    lines.append(f"exported demo models in the cache ({demo_cache()}):" if cached
                 else f"no demo model exported yet (the first run exports them into {demo_cache()})")
    lines += [f"  {path}" for path in cached]
    return lines
