"""FFHQ-1024 WarpRes (random weights in the official layout) on OpenVINO: FP32, BF16 and INT8 at
batch 1, after `calibrate(..., precision="int8")` on eight real photos, in one run.

The photos: scikit-image's astronaut (and its mirror image) and cat, the two halves of the
insightface group photo (`pip install --no-deps insightface`) and the demo's four samples, at
256 px; three of them are held out by the calibration. A random model has no edit directions, so
two random unit directions stand in for them (`random_edits=2`). The calibration takes ~15 min
and ~10 GB on 2 cores. Results go to stdout and to benchmarks/results/ffhq_int8.md.

    python benchmarks/ffhq_int8.py [--work /tmp/ffhq_int8]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_backends import build  # noqa: E402  (the same FFHQ-1024 architecture the CPU benchmark measures)

from warpres.benchmark import (  # noqa: E402
    cpu_description, fixed_latent_shift, measure_sessions, publish, stage_table, synthetic_images, table)
from warpres.calibration.calibrate import calibrate  # noqa: E402
from warpres.demo import SAMPLES  # noqa: E402
from warpres.edits import DirectionLibrary, LinearDirection  # noqa: E402
from warpres.export import export_model  # noqa: E402
from warpres.runtime.session import Session  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "ffhq_int8.md"


def write_photos(folder: Path) -> None:
    import insightface
    from skimage import data

    group = cv2.imread(os.path.join(os.path.dirname(insightface.__file__), "data/images/t1.jpg"))[..., ::-1]
    samples = [cv2.imread(str(path))[..., ::-1] for path in sorted(SAMPLES.glob("*.png"))]
    photos = [data.astronaut(), data.astronaut()[:, ::-1], group[:, :group.shape[1] // 2],
              group[:, group.shape[1] // 2:], *samples, data.chelsea()]
    folder.mkdir(parents=True, exist_ok=True)
    for index, photo in enumerate(photos):
        cv2.imwrite(str(folder / f"p{index}.png"), cv2.resize(np.ascontiguousarray(photo), (256, 256))[..., ::-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/ffhq_int8"))
    args = parser.parse_args()
    write_photos(args.work / "photos")
    model = build("ffhq-warpres")
    folder = args.work / "model"
    if not (folder / "manifest.json").exists():
        export_model(model, folder, progress=False)
    rng = np.random.default_rng(0)
    dim = model.generator.config.w_dim
    directions = DirectionLibrary([LinearDirection(name, (rng.standard_normal((1, dim)) / np.sqrt(dim)).astype(
        np.float32)) for name in ("a", "b")])
    lines = []
    calibrate(folder, args.work / "photos", precision="int8", target="openvino", random_edits=2,
              directions=directions, progress=False, emit=lambda line: (print(line, flush=True), lines.append(line)))
    size = model.encoder.config.input_size
    del model
    sessions = [Session(folder, "openvino", precision=precision, max_batch=1) for precision in ("fp32", "bf16", "int8")]
    rows, reference = measure_sessions(sessions, [1], lambda batch: synthetic_images(batch, size, seed=batch),
                                       fixed_latent_shift(dim), iterations=3, label="ffhq-warpres")
    report = "\n".join(lines)
    publish(f"# FFHQ-1024 WarpRes, OpenVINO FP32 / BF16 / INT8\n\n{cpu_description()}; batch 1, medians of 3.\n\n"
            f"Calibration report:\n\n```\n{report}\n```\n\n{table(rows, reference)}\n\nPer-stage time within one full "
            f"edit (ms):\n\n{stage_table(rows)}\n", RESULTS)


if __name__ == "__main__":
    main()
