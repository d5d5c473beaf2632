"""What `warpres doctor` and `warpres info` report, as lines of text."""

from __future__ import annotations

import os
from pathlib import Path

from warpres.errors import WarpresError


def doctor_report(model_dir: Path | None) -> list[str]:
    """What this machine offers (GPU, driver, CUDA, TensorRT, the backends, the plugin library) and,
    with `model_dir`, its TensorRT engines and whether they run here."""
    from warpres.runtime.backends import available
    from warpres.runtime.tensorrt.availability import import_tensorrt
    from warpres.runtime.tensorrt.engine_file import EngineTarget
    from warpres.runtime.tensorrt.gpu import cuda_devices

    cuda = cuda_devices()
    lines = [f"CUDA driver     {cuda.driver_version or 'none'}, runtime {cuda.runtime_version or 'none'}"]
    lines += [f"GPU {d.index}           {d.name} ({d.sm}, {d.memory_bytes / 2**30:.0f} GiB)" for d in cuda.devices]
    if not cuda.devices:
        lines.append(f"GPU             none: {cuda.problem}")
    running = None
    try:
        _, trt = import_tensorrt()
        lines.append(f"TensorRT        {trt.flavour} {trt.version}")
        running = EngineTarget.current(trt)
    except WarpresError as exc:
        lines.append(f"TensorRT        not importable: {exc}")
    for name, availability in available().items():
        lines.append(f"{name:<15} {'yes' if availability.usable else 'no'}: {availability.detail}")
    lines.append(f"plugins         {plugin_report(running)}")
    if model_dir is not None:
        lines += engine_report(model_dir, running)
    return lines


def plugin_report(running) -> str:
    """Where the warpres plugin library is ($WARPRES_PLUGIN_LIBRARY) and, under TensorRT proper,
    whether it registers the ModulatedConv and FlowWarp creators."""
    from warpres.runtime.tensorrt.availability import import_tensorrt
    from warpres.runtime.tensorrt.plugin_library import (
        PLUGIN_BUILD_HINT,
        PLUGIN_LIBRARY_ENV,
        PLUGIN_NAMES,
        load_plugin_library,
        registered_plugins,
    )

    path = os.environ.get(PLUGIN_LIBRARY_ENV)
    if not path:
        return f"{PLUGIN_LIBRARY_ENV} not set (only plugin-flavour builds need it; {PLUGIN_BUILD_HINT})"
    if not Path(path).is_file():
        return f"{PLUGIN_LIBRARY_ENV}={path}: no such file"
    if running is None or running.flavour != "tensorrt":
        return f"{path} (not loaded: it is built for TensorRT proper, which is not importable here)"
    try:
        trt, _ = import_tensorrt()
        load_plugin_library(trt, path)
        found = registered_plugins(trt)
    except WarpresError as exc:
        return f"{path}: {exc}"
    missing = [name for name in PLUGIN_NAMES if name not in found]
    return f"{path}: registers {', '.join(found) or 'nothing'}" + (f"; missing {', '.join(missing)}" if missing else "")


def engine_report(model_dir: Path, running) -> list[str]:
    from warpres.runtime.tensorrt.engine_file import ENGINE_PRECISIONS, check_engines, engine_path, read_engine_header
    from warpres.stages import open_model_folder

    folder = open_model_folder(model_dir)
    lines = []
    for precision in ENGINE_PRECISIONS:
        paths = [engine_path(folder.path, stage.name, precision) for stage in folder.manifest.stages]
        present = [path for path in paths if path.is_file()]
        if not present:
            continue
        headers = [read_engine_header(path)[0] for path in present]
        header, target = headers[0], headers[0].target
        plugins = sorted({name for each in headers for name in each.embedded_plugins})
        lines.append(f"engines {precision:<7} {len(present)} of {len(paths)} stages; "
                     f"{target.flavour} {target.version}, "
                     f"{target.compute_capability or 'any GPU'}; batch profiles {list(header.profiles)}; "
                     f"embedded plugins: {', '.join(plugins) or 'none'}")
        if running is None:
            lines.append("                not checked: TensorRT is not importable here")
            continue
        try:
            check_engines(folder, precision, running, allow_embedded_plugins=True)
            lines.append("                match this TensorRT, this GPU and the exported graphs")
        except WarpresError as exc:
            lines.append(f"                cannot run here: {exc}")
    return lines or [f"engines         none in {folder.path}/engines (build them: warpres build {folder.path})"]


def info_report(model: Path) -> list[str]:
    """Describe `model`: an exported model folder or a checkpoint."""
    from warpres.media.imageio import IMAGE_EXTENSIONS
    from warpres.stages import is_model_folder

    if model.is_file() and model.suffix.lower() in IMAGE_EXTENSIONS:
        raise WarpresError(f"{model} is an image, not a model: give a checkpoint or an exported model folder")
    return folder_info(model) if is_model_folder(model) else checkpoint_info(model)


def folder_info(path: Path) -> list[str]:
    from warpres.edits import DirectionLibrary
    from warpres.stages import open_model_folder

    folder = open_model_folder(path)
    manifest = folder.manifest
    lines = [f"{path}: exported {manifest.family} model (files verified against manifest.json)",
             f"  model id    {manifest.model_id[:16]}",
             f"  flavour     {manifest.flavour}, ONNX opset {manifest.opset}",
             f"  images      {manifest.image_size}x{manifest.image_size} in -> "
             f"{manifest.resolution}x{manifest.resolution} out, W+ {manifest.latent_shape}"]
    for stage in manifest.stages:
        file = folder.graph_path(stage)
        shapes = ", ".join(f"{name} {tuple(manifest.io[stage.name][name].shape)}" for name in stage.outputs)
        lines.append(f"  {stage.name:<17} {file.stat().st_size / 2**20:7.1f} MiB  -> {shapes}")
    if folder.directions_path:
        lines.append(f"  edits       {', '.join(DirectionLibrary.load(folder.directions_path).names)}")
    if manifest.versions:
        lines.append("  exported by " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())))
    for target, calibration in manifest.calibrations.items():
        lines += calibration_info(folder, target, calibration)
    return lines


def calibration_info(folder, target: str, calibration) -> list[str]:
    """A calibration's verdict and its accuracy report (`warpres calibrate`), as `info` shows them."""
    import json

    from warpres.calibration.accuracy import AccuracyReport

    verdict = "met its bar, used by auto" if calibration.meets_bar else "MISSED its bar, never picked by auto"
    lines = [f"  calibrated  {target} {calibration.precision} ({verdict}): INT8 {', '.join(calibration.stages)}"]
    try:
        data = json.loads((folder.path / calibration.report).read_text(encoding="utf-8"))
        return lines + ["    " + line for line in AccuracyReport.from_dict(data).table()]
    except (OSError, TypeError, ValueError, KeyError) as exc:
        return lines + [f"    accuracy report unreadable ({type(exc).__name__}: {exc})"]


def checkpoint_info(path: Path) -> list[str]:
    from warpres.checkpoints import load_checkpoint

    model = load_checkpoint(path)
    gen = model.generator.config
    lines = [f"{path}: {model.family} checkpoint",
             f"  generator   {gen.resolution}x{gen.resolution}, W+ ({gen.num_ws}, {gen.w_dim}), "
             f"residuals injected at {gen.embed_res}x{gen.embed_res}, "
             f"{sum(p.numel() for p in model.generator.parameters()):,} parameters"]
    if model.encoder is not None:
        enc = model.encoder.config
        lines.append(f"  encoder     {enc.kind} IR{'-SE' if enc.mode == 'ir_se' else ''}-{enc.num_layers}, "
                     f"{enc.input_size}x{enc.input_size} in, "
                     f"{sum(p.numel() for p in model.encoder.parameters()):,} parameters")
    if model.branch is not None:
        lines.append(f"  branch      {model.branch.family}, "
                     f"{sum(p.numel() for p in model.branch.parameters()):,} parameters")
    return lines


def edits_report(choice) -> list[str]:
    """The edits a resolved --model carries: its folder's own directions and those given with it
    (a built-in model's shipped ones, --directions), each with its kind and strength range."""
    from warpres.edits import DirectionLibrary, GanSpaceDirection, edit_range
    from warpres.stages import is_model_folder, open_model_folder

    library = None
    if is_model_folder(choice.path):
        folder = open_model_folder(choice.path)
        if folder.directions_path:
            library = DirectionLibrary.load(folder.directions_path)
    if choice.directions is not None:
        library = choice.directions if library is None else library.merged(choice.directions)
    if library is None or not len(library):
        return [f"{choice.name}: no edit directions (give a folder with --directions)"]
    lines = [f"{choice.name}: {len(library)} edits (use as --edit NAME=STRENGTH)",
             f"  {'name':<28} {'kind':<13} {'strengths':>15}"]
    for name in library.names:
        direction = library.resolve(name)
        low, high = edit_range(direction)
        kind = "ganspace" if isinstance(direction, GanSpaceDirection) else direction.source
        lines.append(f"  {name:<28} {kind:<13} {f'{low:+.2f}..{high:+.2f}':>15}")
    return lines
