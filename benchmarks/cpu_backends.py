"""CPU backends vs PyTorch eager FP32, in one run: latency, throughput, cached re-edits, accuracy.

For each architecture (a tiny config and the FFHQ-1024 StyleRes / WarpRes one, random weights)
this exports the model once, then measures every CPU backend and precision on the same inputs
at batch 1, 4 and 16 against the torch FP32 reference: full edit (invert + edit), cached
re-edit, per-stage time, and the final image's PSNR against the reference. It ends with the
frames per second of `warpres video` on a generated clip. Results go to stdout and to
benchmarks/results/cpu_backends.md.

    python benchmarks/cpu_backends.py [--archs tiny,ffhq-warpres,ffhq-styleres] [--iterations 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from warpres.benchmark import fixed_latent_shift, measure_sessions, stage_table, synthetic_images, table
from warpres.export import export_model
from warpres.files import atomic_path
from warpres.media.video.pipeline import run_video
from warpres.media.video.source import open_source
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan
from warpres.models.styleres import StyleResBranch, StyleResConfig
from warpres.models.warpres import WarpResBranch, WarpResConfig
from warpres.runtime.session import Session

# The latest run; runs cited in the README are kept under their own names beside it.
RESULTS = Path(__file__).with_name("results") / "cpu_backends.md"
CANDIDATES = [("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "fp32")]
# Batches above this run in chunks, so FFHQ-1024 activations (B x 64 x 1024^2 floats) fit in 24 GB.
FFHQ_CHUNK = 4


def build(arch: str) -> EditingModel:
    torch.manual_seed(0)
    if arch == "tiny":
        generator = Generator(GeneratorConfig(resolution=64, channels=channel_plan(64, channel_base=512,
                                                                                   channel_max=32),
                                              z_dim=32, w_dim=32, mapping_layers=2, embed_res=16))
        encoder = StyleEncoder(EncoderConfig(num_ws=10, w_dim=32, input_size=64, stage_widths=(8, 8, 16, 16),
                                             se_reduction=4))
        branch = (WarpResBranch(WarpResConfig(enc_channels=8, feat_channels=32, tap_quarter_channels=32,
                                              tap_half_channels=32, width=16, adapter_channels=8)))
    else:
        generator, encoder = Generator(GeneratorConfig()), StyleEncoder(EncoderConfig())
        branch = WarpResBranch() if arch == "ffhq-warpres" else StyleResBranch(StyleResConfig())
    encoder.set_latent_avg(0.1 * torch.randn(generator.num_ws, generator.config.w_dim))
    with torch.no_grad():  # trained residual branches have non-zero output layers
        for param in branch.parameters():
            if not param.abs().sum():
                param.normal_(0, 0.01)
    return EditingModel(generator, encoder, branch).eval()


def bench_arch(arch: str, batches: list[int], iterations: int, work: Path) -> tuple[str, dict]:
    model = build(arch)
    chunk = FFHQ_CHUNK if arch.startswith("ffhq") else max(batches)
    start = time.perf_counter()
    folder = export_model(model, work / arch, progress=False)
    export_seconds = time.perf_counter() - start
    info_size, dim = model.encoder.config.input_size, model.generator.config.w_dim
    edit = fixed_latent_shift(dim)
    sessions = [Session(model, "torch", precision="fp32", max_batch=chunk)]
    sessions += [Session(model, "torch", precision=p, max_batch=chunk) if b == "torch"
                 else Session(folder.path, b, precision=p, max_batch=chunk) for b, p in CANDIDATES]
    rows, reference = measure_sessions(sessions, batches, lambda batch: synthetic_images(batch, info_size, seed=batch),
                                       edit, iterations=iterations, label=arch,
                                       report=lambda line: print(line, flush=True))
    best = min((r for r in rows if r.batch == 1 and r.backend != rows[0].backend), key=lambda r: r.full_edit)
    best_session = next(s for s in sessions if s.backend.name == best.backend)
    fps = video_fps(best_session, info_size, edit, work)
    text = (f"### {arch}\n\nexport + validation: {export_seconds:.0f} s\n\n{table(rows, reference)}\n\n"
            f"Per-stage time within one full edit (ms):\n\n{stage_table(rows)}\n\n"
            f"Video (run_video on a {info_size}x{info_size} clip, file mode, every frame inverted and edited) with "
            f"{best.backend}: {fps:.2f} frames/s\n")
    return text, {"best": best, "reference": reference[1]}


def video_fps(session: Session, size: int, edit, work: Path, frames: int = 12) -> float:
    clip = work / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    for index in range(frames):
        frame = np.full((size, size, 3), 60, np.uint8)
        cv2.circle(frame, (size // 4 + index * size // (2 * frames), size // 2), size // 6, (180, 140, 120), -1)
        writer.write(frame)
    writer.release()
    stats = run_video(open_source(path=clip), lambda batch: list(session.edit(session.invert(batch), edit)),
                      output=work / "edited.mp4", overlay=True)
    return stats.fps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="tiny,ffhq-warpres,ffhq-styleres")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--iterations", type=int, default=2)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if 1 not in batches:
        parser.error("--batches must include 1 (the video run and the summary use batch 1)")
    sections = [f"# CPU backends vs PyTorch eager FP32\n\nMachine: {platform.processor() or platform.machine()}, "
                f"{torch.get_num_threads()} threads; torch {torch.__version__}. Medians of {args.iterations} "
                f"iterations after one warm-up; speed-ups and PSNR against torch FP32 on the same inputs.\n"]
    with tempfile.TemporaryDirectory() as scratch:  # exported models (GBs at 1024): never under benchmarks/
        for arch in args.archs.split(","):
            print(f"{arch}:", flush=True)
            text, _ = bench_arch(arch, batches, args.iterations, Path(scratch))
            sections.append(text)
            with atomic_path(RESULTS) as partial:
                partial.write_text("\n".join(sections))
    print("\n".join(sections))


if __name__ == "__main__":
    main()
