"""Measuring a Session: per-stage and end-to-end latency, cached re-edits, accuracy.

Numbers are only meaningful as ratios taken in one run on one machine (the reference is the
PyTorch eager FP32 backend on the same inputs), so this module measures and compares; it
never judges a bare time. `warpres bench` and benchmarks/ are built on it.
"""

from __future__ import annotations

import platform
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warpres.files import atomic_path
from warpres.images import to_uint8


@dataclass
class Measurement:
    """Medians over the timed iterations, in seconds, for one batch size.

    full_edit: invert + one edit of a fresh batch (what a new image costs), warm.
    cold_edit: the first full edit at this batch size (buffer allocation, engine contexts, lazy
    initialisation); a single run, not a median.
    cached_edit: one more edit of the same batch (the per-image cache at work).
    stages: per stage, the median summed time of its calls within one full edit.
    images: the last full edit's output, uint8 (B, R, R, 3), for accuracy against a reference.
    """

    backend: str
    batch: int
    full_edit: float
    cold_edit: float
    cached_edit: float
    stages: dict[str, float]
    images: np.ndarray = field(repr=False)

    @property
    def images_per_second(self) -> float:
        return self.batch / self.full_edit


def synthetic_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth random images (B, 3, S, S) in [-1, 1]: 8x8 random blocks, like photos at 8x8."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(-1, 1, (batch, 3, 8, 8)).astype(np.float32)
    block = -(-size // 8)
    return np.ascontiguousarray(coarse.repeat(block, axis=2).repeat(block, axis=3)[:, :, :size, :size])


def fixed_latent_shift(dim: int, norm: float = 3.0, seed: int = 0):
    """An edit for timing: W+ plus one seeded random direction of the given norm on every layer."""
    direction = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    direction *= norm / np.linalg.norm(direction)
    return lambda wplus: wplus + direction


def measure(session, images: np.ndarray, edits, *, iterations: int = 3, warmup: int = 1) -> Measurement:
    """Time `iterations` full edits and cached re-edits of `images` (float model input). Stage
    times come from the session's device: wall time on the CPU, CUDA events on the GPU."""
    device = session.device
    start = time.perf_counter()
    session.edit(session.invert(images), edits)
    cold = time.perf_counter() - start
    for _ in range(warmup):
        session.edit(session.invert(images), edits)
    full, cached, per_stage = [], [], defaultdict(list)
    for _ in range(iterations):
        session.cache.clear()
        device.start_timing()
        start = time.perf_counter()
        inversion = session.invert(images)
        output = session.edit(inversion, edits)
        full.append(time.perf_counter() - start)
        for name, times in device.stop_timing().items():
            per_stage[name].append(sum(times))
        start = time.perf_counter()
        session.edit(inversion, edits)
        cached.append(time.perf_counter() - start)
    return Measurement(device.name, len(images), float(np.median(full)), cold, float(np.median(cached)),
                       {name: float(np.median(times)) for name, times in per_stage.items()}, to_uint8(output))


def psnr(images: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of uint8 images against a reference of the same shape (inf when equal)."""
    if images.shape != reference.shape:
        raise ValueError(f"shapes differ: {images.shape} vs {reference.shape}")
    mse = float(np.mean((images.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def cpu_description() -> str:
    """`lscpu`'s model name and CPU count, and which of AMX / AVX512-BF16 / VNNI it has: what every
    reported number names beside it."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    has = [name for name, flag in (("AMX", "amx_tile"), ("AVX512-BF16", "avx512_bf16"), ("AVX512-VNNI", "avx512_vnni"),
                                   ("AVX-VNNI", "avx_vnni")) if flag in flags]
    return f"{fields.get('Model name', '?').strip()}, {fields.get('CPU(s)', '?').strip()} CPUs; " \
           f"{', '.join(has) if has else 'no AMX, no BF16, no VNNI'}"


def publish(text: str, path: Path) -> None:
    """Print a benchmark's results and write them to `path` (atomically)."""
    print(text)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def measure_sessions(sessions: Sequence, batches: Sequence[int], images_for: Callable[[int], np.ndarray], edits,
                     *, iterations: int = 3, label: str = "", report: Callable[[str], None] = print
                     ) -> tuple[list[Measurement], dict[int, Measurement]]:
    """`measure` every session at every batch size on ``images_for(batch)``; the first session is
    the reference. Returns the rows and the reference row per batch size. A warm-up per batch
    size: OpenVINO and oneDNN compile kernels for each new input shape."""
    rows, reference = [], {}
    for session in sessions:
        for batch in batches:
            row = measure(session, images_for(batch), edits, iterations=iterations, warmup=1)
            report(f"  {label} {row.backend} B={batch}: full {row.full_edit:.3f}s cached {row.cached_edit:.3f}s")
            rows.append(row)
            if session is sessions[0]:
                reference[batch] = row
    return rows, reference


def table(rows: Sequence[Measurement], reference: Mapping[int, Measurement] | None = None) -> str:
    """A markdown table; with a reference per batch size, speed-ups and PSNR against it."""
    header = ["backend", "B", "cold full edit (s)", "full edit (s)", "img/s", "cached re-edit (s)", "full / cached"]
    if reference:
        header += ["speed-up vs ref", "PSNR vs ref (dB)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.backend, str(row.batch), f"{row.cold_edit:.3f}", f"{row.full_edit:.3f}",
                 f"{row.images_per_second:.2f}", f"{row.cached_edit:.3f}", f"{row.full_edit / row.cached_edit:.2f}x"]
        if reference:
            ref = reference[row.batch]
            cells += [f"{ref.full_edit / row.full_edit:.2f}x", f"{psnr(row.images, ref.images):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def stage_table(rows: Sequence[Measurement]) -> str:
    """Per-stage time (ms) within one full edit, one row per measurement."""
    stages = list(dict.fromkeys(name for row in rows for name in row.stages))
    lines = ["| backend | B | " + " | ".join(stages) + " |", "|---|---|" + "---|" * len(stages)]
    for row in rows:
        cells = [f"{1000 * row.stages.get(name, 0.0):.0f}" for name in stages]
        lines.append(f"| {row.backend} | {row.batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
