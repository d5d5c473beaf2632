"""`calibrate`: INT8 / mixed stage graphs for a model folder, chosen and checked by measurement.

1. The user's images are read (unreadable ones skipped); a quarter is held out.
2. Every stage's inputs are recorded from an FP32 Session inverting and editing the other
   images (warpres.calibration.data), cached on disk by graph hashes, images and edits.
3. Each stage is quantized with every recipe of the target's quantizer and measured alone (the
   other stages FP32) on final images of some calibration images under some edits; the recipe
   with the best lowest PSNR is kept.
4. int8 keeps every stage quantized. mixed starts there and returns the stage that measured worst
   alone to float until the stages together meet the bar (plus a margin) on those images.
5. The plan is measured on the held-out images (every edit set): final-image PSNR / SSIM per
   edit and each stage's output errors (warpres.calibration.accuracy), saved as JSON beside the
   graphs; the calibration is marked as meeting the bar or not.
6. The graphs and report go into a new folder under `calibration/`; the manifest, rewritten last,
   pins them with the FP32 graph hashes they came from. An error or Ctrl-C before that removes
   the new folder, leaving the model folder as it was; the previous calibration of the target is
   removed only after the manifest no longer names it.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from warpres.calibration.accuracy import AccuracyReport, EditProbe, output_accuracy
from warpres.calibration.data import (
    activation_key,
    cached_stage_inputs,
    collect_stage_inputs,
    default_edit_sets,
    random_edit_sets,
    read_calibration_images,
    rotating_edits,
)
from warpres.errors import CalibrationError
from warpres.files import sha256_file
from warpres.stages import PORTABLE, CalibratedStage, Calibration, FileEntry, open_model_folder, write_manifest

logger = logging.getLogger(__name__)

TARGETS = ("openvino", "tensorrt")
CALIBRATION_DIR = "calibration"
REPORT_NAME = "accuracy.json"
DEFAULT_BAR_DB = 35.0
VALIDATION_IMAGES = 4  # calibration images the recipes and the mixed plan are measured on
VALIDATION_EDITS = 6  # edit sets they are measured under (spread over all), besides the inversion
PIXELS_PER_BATCH = 8 * 256**2  # output pixels per measured run: batches of 8 at 256 px, 1 at 512 and above
PLAN_MARGIN_DB = 1.0  # the mixed plan aims this far above the bar: the held-out images are other images


@dataclass(frozen=True)
class CalibrationResult:
    target: str
    report: AccuracyReport
    path: Path  # the calibration's folder
    reused: bool  # an identical calibration was already in place


def _spread(items: Sequence, count: int) -> list:
    if len(items) <= count:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, count).round().astype(int)]


def _quantizer(target: str, folder, float_precision: str):
    if target == "openvino":
        from warpres.calibration.openvino import OpenVinoQuantizer

        return OpenVinoQuantizer(folder, float_precision)
    from warpres.calibration.tensorrt import TensorRTQuantizer

    return TensorRTQuantizer(folder)


def _float_precision(target: str) -> str:
    """The precision the float part of a calibrated stage runs in where it is measured."""
    if target != "openvino":
        return "fp32"
    from warpres.runtime.backends.openvino import cpu_capabilities, import_openvino, resolve_precision

    return resolve_precision(None, cpu_capabilities(import_openvino().Core()))[0]


def _check_folder(folder, target: str) -> None:
    if folder.manifest.flavour != PORTABLE:
        raise CalibrationError(
            f"{folder.path}: a {folder.manifest.flavour}-flavour folder cannot be calibrated: its plugin nodes "
            f"(ModulatedConv, FlowWarp) run only inside TensorRT, while calibration runs the graphs on the CPU "
            f"(NNCF on OpenVINO, ModelOpt on ONNX Runtime). Export the portable flavour and calibrate that; its "
            f"INT8 graphs build for {target} as well")


def calibrate(model_dir: str | os.PathLike[str], images_dir: str | os.PathLike[str], *, target: str = "openvino",
              precision: str = "mixed", method: str = "max", edit_sets: Sequence | None = None,
              random_edits: int | None = None,
              directions=None, bar_db: float = DEFAULT_BAR_DB, progress: bool = True,
              emit: Callable[[str], None] | None = None) -> CalibrationResult:
    """Calibrate the model folder `model_dir` for `target` ("openvino" or "tensorrt") on the images
    in `images_dir`: `precision` "int8" or "mixed", `method` "max" or "entropy", under
    `edit_sets` (default: every direction at the strengths users apply, both signs; with
    `random_edits`, that many random edit sets), with the
    folder's directions and `directions` (as Session takes them). Returns what
    was measured; raises CalibrationError when it cannot calibrate."""
    from warpres.runtime.session import Session

    if target not in TARGETS:
        raise CalibrationError(f"target {target!r}: choose one of {', '.join(TARGETS)}")
    if precision not in ("int8", "mixed"):
        raise CalibrationError(f"precision {precision!r}: calibrate makes int8 or mixed")
    emit = emit or (tqdm.write if progress else logger.info)
    folder = open_model_folder(model_dir)
    _check_folder(folder, target)
    images = read_calibration_images(images_dir)
    # Images per call bounded by the output size: every measured run holds activations of its
    # whole batch at full resolution (at 1024 px, 64 channels are 268 MB per image and layer), in
    # the FP32 session and in each compiled INT8 stage; batches of 8 ran 24 GB out of memory.
    resolution = folder.manifest.resolution
    session = Session(folder.path, "openvino", precision="fp32", directions=directions,
                      max_batch=max(1, min(8, PIXELS_PER_BATCH // resolution**2)))
    if edit_sets is not None:
        sets = list(edit_sets)
    elif random_edits:
        sets = random_edit_sets(session.directions, random_edits)
    else:
        sets = default_edit_sets(session.directions)
    session.check_edits(sets)
    float_precision = _float_precision(target)
    graph_hashes = {name: entry.sha256 for name, entry in folder.manifest.graphs.items()}
    key = activation_key(graph_hashes, images.sha256, sets)
    plan_key = hashlib.sha256(json.dumps([key, target, precision, method, bar_db, float_precision]).encode()
                              ).hexdigest()[:32]
    previous = folder.manifest.calibrations.get(target)
    if previous is not None and previous.plan.get("key") == plan_key and previous.report:
        report = AccuracyReport.from_dict(json.loads((folder.path / previous.report).read_text(encoding="utf-8")))
        emit(f"{target}: this calibration is already in place ({previous.report}); nothing to do")
        return CalibrationResult(target, report, (folder.path / previous.report).parent, True)

    stages = folder.manifest.stages
    with tqdm(total=len(images.calibration), desc="calibration data", unit="image", disable=not progress) as bar:
        feeds, cached = cached_stage_inputs(key, lambda: collect_stage_inputs(
            session, images.calibration, rotating_edits(sets), progress=bar.update))
        if cached:
            bar.update(len(images.calibration) - bar.n)
    quantizer = _quantizer(target, folder, float_precision)
    validation = EditProbe(session, images.calibration[:VALIDATION_IMAGES], _spread(sets, VALIDATION_EDITS))
    quantized, compiled, alone, recipes = {}, {}, {}, {}
    with tqdm(total=len(stages) * len(quantizer.recipes), desc=f"quantize ({target})", unit="recipe",
              disable=not progress) as bar:
        for stage in stages:
            best = None
            for recipe in quantizer.recipes:
                bar.set_postfix_str(stage.name)
                model = quantizer.quantize(stage, feeds[stage.name], recipe, method)
                runner = quantizer.runner(model)
                score = min(validation.psnr({stage.name: runner}))
                if best is None or score > best[0]:
                    best = (score, recipe, model, runner)
                del model, runner   # a losing recipe's compiled model goes now, not at the next one
                gc.collect()
                bar.update()
            alone[stage.name], recipes[stage.name], quantized[stage.name], compiled[stage.name] = \
                best[0], best[1].name, best[2], best[3]

    chosen = [stage.name for stage in stages]
    if precision == "mixed":
        by_accuracy = sorted(chosen, key=lambda name: alone[name])
        while chosen and min(validation.psnr({n: compiled[n] for n in chosen})) < bar_db + PLAN_MARGIN_DB:
            chosen.remove(by_accuracy.pop(0))
        if not chosen:
            raise CalibrationError(f"no stage meets {bar_db:g} dB in INT8 even alone (best: "
                                   f"{max(alone, key=alone.get)} at {max(alone.values()):.1f} dB); keep float, "
                                   f"or lower the bar")
    # What the report needs is reloaded from the saved files: free the compiled plan and the
    # calibration activations first (at FFHQ-1024 each compiled synthesis stage holds GBs of
    # buffers, and two sets of them alive at once ran a 24 GB machine out of memory).
    compiled.clear()
    del feeds, best
    gc.collect()
    root = folder.path / CALIBRATION_DIR
    root.mkdir(exist_ok=True)
    staging = root / f".{target}-{secrets.token_hex(4)}.partial"
    staging.mkdir()
    try:
        files = {stage.name: quantizer.save(quantized[stage.name], staging / f"{stage.name}.int8{quantizer.suffix}")
                 for stage in stages if stage.name in chosen}
        # measured as the runtime will load them: from the files
        runners = {name: quantizer.runner(quantizer.load(paths[0])) for name, paths in files.items()}
        held_out = EditProbe(session, images.held_out, sets)
        held_feeds = collect_stage_inputs(session, images.held_out, rotating_edits(sets))
        outputs = []
        for stage in stages:
            if stage.name in runners:
                reference = quantizer.runner(quantizer.source_model(stage))
                outputs += output_accuracy(stage, held_feeds[stage.name], reference, runners[stage.name])
                del reference
        float_name = quantizer.float_stage_precision if precision == "mixed" else float_precision
        report = AccuracyReport(
            target=target, precision=precision, bar_db=bar_db, float_precision=float_precision,
            held_out_images=len(images.held_out),
            stage_precisions={stage.name: "int8" if stage.name in runners else float_name for stage in stages},
            edits=held_out.measure(runners), outputs=outputs, stage_psnr_db={n: round(v, 2) for n, v in alone.items()})
        report.save(staging / REPORT_NAME)
        path = _publish(folder, target, staging, files, report, plan={
            "key": plan_key, "method": method, "bar_db": bar_db, "images_sha256": images.sha256,
            "images": len(images.names), "held_out": len(images.held_out), "edit_sets": [repr(e) for e in sets],
            "recipes": {n: recipes[n] for n in chosen}, "stage_precisions": report.stage_precisions,
            "summary": report.summary()})
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when published
    for line in report.table():
        emit(line)
    return CalibrationResult(target, report, path, False)


def _publish(folder, target: str, staging: Path, files: dict[str, tuple[Path, ...]], report: AccuracyReport,
             plan: dict) -> Path:
    """Move `staging` into place and pin its files in the manifest (module docstring, step 6)."""
    final = staging.with_name(staging.name[1:].removesuffix(".partial"))
    os.replace(staging, final)
    relative = final.relative_to(folder.path)
    try:
        def entry(path: Path) -> FileEntry:
            return FileEntry(str(relative / path.name), sha256_file(final / path.name))

        stages = {name: CalibratedStage(entry(paths[0]), folder.manifest.graphs[name].sha256,
                                        entry(paths[1]) if len(paths) > 1 else None)
                  for name, paths in files.items()}
        calibration = Calibration(target, report.precision, stages, report.meets_bar, plan,
                                  str(relative / REPORT_NAME))
        write_manifest(folder.path, dataclasses.replace(
            folder.manifest, calibrations={**folder.manifest.calibrations, target: calibration}))
    except BaseException:
        shutil.rmtree(final, ignore_errors=True)
        raise
    previous = folder.manifest.calibrations.get(target)
    if previous is not None and previous.report:
        old = (folder.path / previous.report).parent
        if old != final and old.parent == final.parent:
            shutil.rmtree(old, ignore_errors=True)
    return final
