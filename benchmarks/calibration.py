"""INT8 and mixed precision on the CPU runtimes vs PyTorch eager FP32, in one run.

For each demo model (the shipped StyleRes and WarpRes) this calibrates the exported folder for
OpenVINO (`warpres calibrate`, int8 and mixed, on rendered faces of the demo domain; a second
set of renders is the benchmark's input), then times a full edit, a cached re-edit and each
stage at batch 1 and 4 for PyTorch eager FP32 (the reference), OpenVINO FP32 / BF16 (where the
CPU has it) / INT8 / mixed and ONNX Runtime FP32, with the final image's PSNR against the
reference. The CPU is named with whether it has AMX, AVX512-BF16 and VNNI. Results go to stdout
and to benchmarks/results/calibration.md.

    python benchmarks/calibration.py [--families warpres,styleres] [--iterations 3]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from warpres.benchmark import cpu_description, measure_sessions, stage_table, table
from warpres.calibration.calibrate import calibrate
from warpres.demo.bundle import exported, read_bundle
from warpres.demo.prior import sample_params
from warpres.demo.renderer import render
from warpres.demo.showcase import DIRECTIONS
from warpres.files import atomic_path
from warpres.images import to_model_input
from warpres.media.imageio import write_image
from warpres.runtime.backends.openvino import cpu_capabilities, import_openvino
from warpres.runtime.session import Session

RESULTS = Path(__file__).with_name("results") / "calibration.md"
CALIBRATION_IMAGES = 24
EDIT = "smile=2"


def renders(count: int, seed: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [render(sample_params(rng), size) for _ in range(count)]


def bench_family(family: str, folder: Path, batches: list[int], iterations: int, work: Path) -> str:
    model = read_bundle()[family]
    size = model.encoder.config.input_size
    photos = work / f"{family}-photos"
    photos.mkdir()
    for index, image in enumerate(renders(CALIBRATION_IMAGES, 1, size)):
        write_image(photos / f"face-{index:02d}.png", image)
    lines = []
    calibrated = {}
    for precision in ("int8", "mixed"):
        copy = work / f"{family}-{precision}"
        shutil.copytree(folder, copy)
        result = calibrate(copy, photos, precision=precision, directions=DIRECTIONS, progress=False,
                           emit=lambda line: None)
        calibrated[precision] = copy
        lines += [f"`warpres calibrate --precision {precision}`: " + result.report.summary()
                  + f" ({'met' if result.report.meets_bar else 'missed'}); INT8 stages: "
                  + ", ".join(n for n, p in result.report.stage_precisions.items() if p == "int8"), ""]
    has_bf16 = "BF16" in cpu_capabilities(import_openvino().Core())
    sessions = [Session(model, "torch", precision="fp32", directions=DIRECTIONS),
                Session(folder, "openvino", precision="fp32", directions=DIRECTIONS)]
    if has_bf16:
        sessions.append(Session(folder, "openvino", precision="bf16", directions=DIRECTIONS))
    sessions += [Session(calibrated[p], "openvino", precision=p, directions=DIRECTIONS) for p in ("int8", "mixed")]
    sessions.append(Session(folder, "onnxruntime", precision="fp32", directions=DIRECTIONS))
    rows, reference = measure_sessions(sessions, batches,
                                       lambda batch: to_model_input(renders(batch, 100 + batch, size), size),
                                       EDIT, iterations=iterations, label=family,
                                       report=lambda line: print(line, flush=True))
    return (f"### demo {family}\n\n" + "\n".join(lines) + f"\n{table(rows, reference)}\n\n"
            f"Per-stage time within one full edit (ms):\n\n{stage_table(rows)}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default="warpres,styleres")
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    folders = exported(progress=False)
    sections = [f"# INT8 / mixed on the CPU runtimes vs PyTorch eager FP32\n\nCPU: {cpu_description()}; "
                f"torch {torch.__version__}, {torch.get_num_threads()} threads. Edit `{EDIT}` on demo-domain renders "
                f"the calibration did not see; medians of {args.iterations} iterations after one warm-up; speed-ups "
                f"and PSNR against torch FP32 on the same inputs.\n"]
    with tempfile.TemporaryDirectory() as scratch:
        for family in args.families.split(","):
            print(f"{family}:", flush=True)
            sections.append(bench_family(family, folders[family], batches, args.iterations, Path(scratch)))
            with atomic_path(RESULTS) as partial:
                partial.write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
