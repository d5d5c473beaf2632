"""The shipped demo models: one safetensors bundle holding E0, the generator, both branches and
the attribute regressor `warpres evaluate` reads edits with (the build's reader stage).

Three full checkpoints (E0 only, StyleRes, WarpRes) would carry E0 and the generator three
times; the bundle stores them once, in float16 where float16 holds them (the package ships
them, so size matters), with each component's config in the header. On first use `materialize`
writes the three float32 checkpoints of our format into the cache (what the PyTorch reference
runs) and `exported` their ONNX model folders (what every other backend runs).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from warpres.checkpoints import save_model
from warpres.checkpoints.native import BRANCHES
from warpres.checkpoints.safe_load import load_state_strict, strip_prefix
from warpres.demo import ASSETS
from warpres.demo.regressor import AttributeRegressor
from warpres.errors import CheckpointError, WarpresError
from warpres.files import atomic_path, cache_root, sha256_file
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig
from warpres.stages import is_model_folder

BUNDLE = ASSETS / "models.safetensors"
FAMILIES = ("inversion", "styleres", "warpres")
_FORMAT = "warpres.demo-bundle"
_LATENT_AVG = "encoder_latent_avg"


def write_bundle(path: Path, generator: Generator, encoder: StyleEncoder, branches: dict,
                 regressor: AttributeRegressor) -> None:
    """Store generator, E0 (with its latent_avg), {family: branch} and the domain regressor (what
    `warpres evaluate` reads attributes with) in float16, atomically."""
    tensors = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    tensors |= {f"regressor.{k}": v for k, v in regressor.state_dict().items()}
    tensors |= {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    tensors[_LATENT_AVG] = encoder.latent_avg
    config = {"generator": generator.config.to_dict(), "encoder": encoder.config.to_dict(), "branches": {}}
    for family, branch in branches.items():
        tensors |= {f"{family}.{k}": v for k, v in branch.state_dict().items()}
        config["branches"][family] = branch.config.to_dict()
    tensors = {k: _stored(v).detach().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": _FORMAT, "config": json.dumps(config)})


_HALF_MAX = torch.finfo(torch.float16).max


def _stored(tensor: torch.Tensor) -> torch.Tensor:
    """float16, except what float16 cannot hold: E0's batch-norm running variances reach ~5e5."""
    if not tensor.is_floating_point() or tensor.abs().max() > _HALF_MAX:
        return tensor
    return tensor.half()


def read_bundle(path: Path = BUNDLE) -> dict[str, EditingModel]:
    """{family: EditingModel} in float32 for 'inversion' and each stored branch."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable demo bundle ({exc})") from None
    if metadata.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a demo bundle (format={metadata.get('format')!r})")
    config = json.loads(metadata["config"])
    tensors = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    generator = Generator(GeneratorConfig.from_dict(config["generator"]))
    load_state_strict(generator, strip_prefix(tensors, "generator."), f"{path}[generator]")
    encoder = StyleEncoder(EncoderConfig.from_dict(config["encoder"]))
    load_state_strict(encoder, strip_prefix(tensors, "encoder."), f"{path}[encoder]")
    encoder.set_latent_avg(tensors[_LATENT_AVG])
    models = {"inversion": EditingModel(generator, encoder).eval()}
    for family, branch_config in config["branches"].items():
        branch_type, config_type = BRANCHES[family]
        branch = branch_type(config_type.from_dict(branch_config))
        load_state_strict(branch, strip_prefix(tensors, f"{family}."), f"{path}[{family}]")
        models[family] = EditingModel(generator, encoder, branch).eval()
    return models


def read_regressor(path: Path = BUNDLE) -> AttributeRegressor:
    """The bundle's attribute regressor, in float32 and eval mode."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable demo bundle ({exc})") from None
    regressor = AttributeRegressor()
    load_state_strict(regressor, {k: v.float() for k, v in strip_prefix(tensors, "regressor.").items()},
                      f"{path}[regressor]")
    return regressor.eval()


def _cache_folder(bundle: Path, cache: Path | None) -> Path:
    if not bundle.is_file():
        raise WarpresError(f"{bundle}: the demo models are not part of this installation; build them with "
                           "python -m warpres.demo.build (see its --help)")
    return (cache or cache_root() / "demo") / sha256_file(bundle)[:24]


def materialize(bundle: Path = BUNDLE, cache: Path | None = None) -> dict[str, Path]:
    """{family: checkpoint path} of the bundle's models in our format, written once into the cache
    (a folder keyed by the bundle's SHA-256)."""
    folder = _cache_folder(bundle, cache)
    paths = {family: folder / f"{family}.safetensors" for family in FAMILIES}
    if all(path.exists() for path in paths.values()):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    for family, model in read_bundle(bundle).items():
        with torch.no_grad():
            save_model(model, paths[family])
    return paths


def exported(bundle: Path = BUNDLE, cache: Path | None = None, progress: bool = True) -> dict[str, Path]:
    """{family: exported model folder} of the bundle's models, exported once into the cache. The
    export skips its per-stage comparison with PyTorch (a third of a first demo's minute): the
    shipped bundle's graphs are compared with PyTorch by the test suite instead."""
    from warpres.export import export_model

    folder = _cache_folder(bundle, cache)
    paths = {family: folder / family for family in FAMILIES}
    if all(is_model_folder(path) for path in paths.values()):
        return paths
    traced = {}  # E0 and G are shared: their stages are traced once for the three families
    for family, model in read_bundle(bundle).items():
        if not is_model_folder(paths[family]):
            export_model(model, paths[family], validate=False, progress=progress, traced=traced)
    return paths


def demo_models(backend: str, bundle: Path = BUNDLE, cache: Path | None = None) -> dict[str, Path]:
    """What a Session on `backend` opens for each family: checkpoints for the PyTorch reference,
    exported model folders for everything else."""
    return materialize(bundle, cache) if backend == "torch" else exported(bundle, cache)
