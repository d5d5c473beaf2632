"""`warpres selftest MODEL_DIR`: one command on a GPU machine that says whether the TensorRT path
computes what the exported graphs compute.

It builds small engines (batch profile 1..2) for a scratch copy of the model folder, then:
1. runs a full edit of two synthetic images on ONNX Runtime, recording every stage call;
2. replays each recorded call on TensorRT with the same inputs, and compares the outputs
   (error = max |TensorRT - ONNX Runtime| / max(1, max |ONNX Runtime|));
3. runs the same edit through a TensorRT session (device buffers, two pipelines, CUDA graphs)
   and compares the images (PSNR against ONNX Runtime's).
With the PyTorch model the folder was exported from (`reference_model`, e.g. from the
checkpoint), every recorded call also runs on it (the torch backend, FP32, on this GPU when
PyTorch has CUDA) and TensorRT is held to the same tolerance against PyTorch.
Per-stage times are TensorRT's CUDA events and ONNX Runtime's wall time on the same inputs.

Tolerances: FP32 engines may use TF32 (TensorRT's default for FP32 convolutions and matrix
products, ~1e-3 relative), FP16 engines carry FP16 activations (~1e-2).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warpres.benchmark import fixed_latent_shift, psnr, synthetic_images
from warpres.errors import WarpresError
from warpres.images import to_uint8
from warpres.runtime.device import HostDevice
from warpres.runtime.tensorrt.availability import tensorrt_availability
from warpres.runtime.tensorrt.engine_file import ENGINE_DIR
from warpres.stages import PORTABLE, Stage, open_model_folder

STAGE_TOLERANCE = {"fp32": 5e-3, "fp16": 5e-2}
MIN_IMAGE_PSNR = {"fp32": 40.0, "fp16": 30.0}
SELFTEST_PROFILES = ((1, 1, 2),)


@dataclass(frozen=True)
class StageCheck:
    precision: str
    stage: str
    batch: int
    error: float
    tensorrt_ms: float
    onnxruntime_ms: float
    pytorch_error: float | None = None  # max |TensorRT - PyTorch| / max(1, max |PyTorch|), with a reference model

    @property
    def passed(self) -> bool:
        tolerance = STAGE_TOLERANCE[self.precision]
        return self.error <= tolerance and (self.pytorch_error is None or self.pytorch_error <= tolerance)


@dataclass
class SelftestReport:
    problems: list[str] = field(default_factory=list)
    stages: list[StageCheck] = field(default_factory=list)
    image_psnr: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (not self.problems and bool(self.stages) and all(check.passed for check in self.stages)
                and all(value >= MIN_IMAGE_PSNR[precision] for precision, value in self.image_psnr.items()))

    def render(self) -> str:
        lines = [f"problem: {problem}" for problem in self.problems]
        if self.stages:
            lines += ["| precision | stage | B | error vs ORT | error vs PyTorch | tolerance | TensorRT (ms) "
                      "| ONNX Runtime (ms) | |", "|---|---|---|---|---|---|---|---|---|"]
            lines += [f"| {c.precision} | {c.stage} | {c.batch} | {c.error:.2e} "
                      f"| {'-' if c.pytorch_error is None else f'{c.pytorch_error:.2e}'} "
                      f"| {STAGE_TOLERANCE[c.precision]:.0e} | {c.tensorrt_ms:.2f} | {c.onnxruntime_ms:.2f} "
                      f"| {'ok' if c.passed else 'FAIL'} |" for c in self.stages]
        for precision, value in self.image_psnr.items():
            verdict = "ok" if value >= MIN_IMAGE_PSNR[precision] else "FAIL"
            lines.append(f"{precision} session edit vs ONNX Runtime: PSNR {value:.1f} dB "
                         f"(>= {MIN_IMAGE_PSNR[precision]:.0f}) {verdict}")
        lines.append("selftest " + ("passed" if self.passed else "FAILED"))
        return "\n".join(lines)


class _Recording(HostDevice):
    """A host device that keeps every stage call: (stage, inputs, outputs, seconds)."""

    def __init__(self, backend) -> None:
        super().__init__(backend)
        self.calls: list[tuple[Stage, dict[str, np.ndarray], dict[str, np.ndarray], float]] = []

    def run(self, stage, feeds, pipeline):
        start = time.perf_counter()
        outputs = super().run(stage, feeds, pipeline)
        seconds = time.perf_counter() - start
        self.calls.append((stage, {k: v.copy() for k, v in feeds.items()}, {k: v.copy() for k, v in outputs.items()},
                           seconds))
        return outputs


def _pytorch_backend(model, report: SelftestReport):
    """The torch backend on `model` (FP32; on the GPU when PyTorch has CUDA), or None with a problem noted."""
    from warpres.runtime.backends.pytorch import TorchBackend

    try:
        import torch

        return TorchBackend(model, precision="fp32", device="cuda" if torch.cuda.is_available() else "cpu")
    except (ImportError, WarpresError) as exc:
        report.problems.append(f"PyTorch reference: {exc}")
        return None


def _error(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(got[name] - value))) / max(1.0, float(np.max(np.abs(value))))
               for name, value in expected.items())


def run_selftest(model_dir: str | Path, *, build: Callable[..., object], precisions: Sequence[str] = ("fp32", "fp16"),
                 progress: bool = True, reference_model: object | None = None) -> SelftestReport:
    """Check TensorRT against ONNX Runtime (and PyTorch: `reference_model`, the EditingModel the
    folder was exported from) on this machine's GPU; see the module docstring.
    build: builds the engines of a model folder, `build(path, precision=, profiles=, progress=)`
    (warpres.export.engines.build_model_engines: the runtime does not import the exporter)."""
    from warpres.runtime.session import Session

    report = SelftestReport()
    status = tensorrt_availability()
    if not status.usable:
        report.problems.append(status.problem)
        return report
    folder = open_model_folder(model_dir)
    if folder.manifest.flavour != PORTABLE:
        report.problems.append(f"{folder.path}: {folder.manifest.flavour} graphs; the self-test compares TensorRT "
                               f"with ONNX Runtime, which runs portable graphs only: run it on the portable export")
        return report
    with tempfile.TemporaryDirectory(prefix="warpres-selftest-") as scratch:
        copy = Path(scratch) / folder.path.name
        shutil.copytree(folder.path, copy, ignore=shutil.ignore_patterns(ENGINE_DIR))
        reference = Session(copy, backend="onnxruntime", max_batch=2)
        recording = reference.device = _Recording(reference.backend)
        images = synthetic_images(2, reference.info.image_size)
        edit = fixed_latent_shift(reference.info.latent_shape[1])
        expected = to_uint8(reference.edit(reference.invert(images), edit))
        pytorch = _pytorch_backend(reference_model, report) if reference_model is not None else None
        for precision in precisions:
            try:
                build(copy, precision=precision, profiles=SELFTEST_PROFILES, progress=progress)
                session = Session(copy, backend="tensorrt", precision=precision, max_batch=2)
            except WarpresError as exc:
                report.problems.append(f"{precision}: {exc}")
                continue
            device = session.device
            for stage, feeds, outputs, seconds in recording.calls:
                device.start_timing()
                got = session.backend.run(stage, feeds)
                tensorrt_seconds = sum(device.stop_timing()[stage.name])
                report.stages.append(StageCheck(
                    precision, stage.name, len(next(iter(feeds.values()))), _error(got, outputs),
                    1e3 * tensorrt_seconds, 1e3 * seconds,
                    None if pytorch is None else _error(got, pytorch.run(stage, feeds))))
            report.image_psnr[precision] = psnr(to_uint8(session.edit(session.invert(images), edit)), expected)
    return report
