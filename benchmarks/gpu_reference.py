"""The GPU reference, in one run on an NVIDIA GPU: PyTorch eager on CUDA, and the plugins' CUDA kernels.

1. Full edit (invert + edit) and cached re-edit of the FFHQ-1024 WarpRes and StyleRes
   architectures (random weights in the official layout) through `Session(..., "torch")` on CUDA:
   FP32 (TF32 off), TF32 (PyTorch's default for convolutions) and BF16 autocast, at batch 1, 4 and
   16. Batch 1 FP32 is the reference the speed-ups and PSNRs are against. This is the baseline a
   TensorRT engine has to beat.
2. The plugin kernels (libwarpres_plugin_kernels, built with CMake, see plugins/README.md)
   against PyTorch on the FFHQ-1024 synthesis shapes, timed with CUDA events on PyTorch's
   stream: modulated convolution (FP32 and FP16 tensors) and the flow warp, with their errors.

    cmake -S . -B build -DCMAKE_CUDA_ARCHITECTURES=90 && cmake --build build --target warpres_plugin_kernels
    python benchmarks/gpu_reference.py --kernels build/libwarpres_plugin_kernels.so

Results go to stdout and to benchmarks/results/gpu_reference.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
from cpu_backends import build  # noqa: E402  (the same FFHQ-1024 architectures the CPU benchmark measures)
from tests.plugin_libraries import KernelLibrary  # noqa: E402  (the launchers' ctypes signatures)

from warpres.benchmark import fixed_latent_shift, measure_sessions, publish, synthetic_images, table  # noqa: E402
from warpres.models.flow import warp  # noqa: E402
from warpres.models.modulated_conv import modulated_conv2d  # noqa: E402
from warpres.models.resample import setup_filter  # noqa: E402
from warpres.runtime.session import Session  # noqa: E402

RESULTS = Path(__file__).with_name("results") / "gpu_reference.md"
FLOAT32, FLOAT16 = 0, 1  # the launchers' dtype flag (plugins/common/kernelApi.h)

# (in channels, out channels, input size, kernel, up, demodulate): the FFHQ-1024 synthesis layers
# that dominate its cost, from the 64x64 block to the 1024x1024 to-RGB.
SYNTHESIS_LAYERS = [(512, 512, 64, 3, 1, 1), (512, 256, 64, 3, 2, 1), (256, 128, 128, 3, 2, 1),
                    (128, 64, 256, 3, 2, 1), (64, 32, 512, 3, 2, 1), (32, 32, 1024, 3, 1, 1),
                    (32, 3, 1024, 1, 1, 0)]
# (channels, size): the warped residual features.
WARPS = [(512, 64), (128, 256)]


def session_rows(arch: str, batches: list[int], iterations: int, work: Path) -> str:
    model = build(arch)
    size, dim = model.encoder.config.input_size, model.generator.config.w_dim
    variants = [("fp32", False), ("fp32", True), ("bf16", False)]
    sessions, names = [], []
    for precision, tf32 in variants:
        sessions.append(Session(model, "torch", precision=precision, max_batch=max(batches),
                                backend_options={"device": "cuda"}))
        names.append(f"torch {precision}{' TF32' if tf32 else ''} CUDA")
    rows = []
    for (precision, tf32), session, name in zip(variants, sessions, names):
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
        measured, reference = measure_sessions([session], batches, lambda b: synthetic_images(b, size, seed=b),
                                               fixed_latent_shift(dim), iterations=iterations, label=arch,
                                               report=lambda line: print(line, flush=True))
        for row in measured:
            row.backend = name
        rows += measured
        if not tf32 and precision == "fp32":
            fp32_reference = reference
    return f"### {arch}\n\n{table(rows, fp32_reference)}\n"


def cuda_ms(run, repeats: int = 20) -> float:
    """Median milliseconds of `run()` on the current stream, by CUDA events, after two warm-ups."""
    for _ in range(2):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max(1, max |expected|), as the plugin tests measure it."""
    expected = expected.float()
    return float((actual.float() - expected).abs().max() / expected.abs().max().clamp(min=1))


def kernel_rows(kernels: KernelLibrary, batches: list[int]) -> str:
    stream = torch.cuda.current_stream().cuda_stream
    taps = setup_filter().cuda()
    lines = ["| op | B | shape | PyTorch FP32 (ms) | kernel FP32 (ms) | error FP32 | PyTorch FP16 (ms) "
             "| kernel FP16 (ms) | error FP16 |", "|---|---|---|---|---|---|---|---|---|"]
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for batch in batches:
        for in_ch, out_ch, size, kernel, up, demodulate in SYNTHESIS_LAYERS:
            generator = torch.Generator(device="cuda").manual_seed(0)
            x = torch.randn(batch, in_ch, size, size, device="cuda", generator=generator)
            weight = torch.randn(out_ch, in_ch, kernel, kernel, device="cuda", generator=generator)
            styles = torch.randn(batch, in_ch, device="cuda", generator=generator)
            workspace_size = kernels.workspace_size(batch, out_ch, size, size, kernel, up)
            workspace = torch.empty(max(workspace_size, 1), dtype=torch.uint8, device="cuda")
            cells = []
            for dtype, flag in ((torch.float32, FLOAT32), (torch.float16, FLOAT16)):
                xs, ws, ss = (t.to(dtype) for t in (x, weight, styles))
                out = torch.empty(batch, out_ch, size * up, size * up, dtype=dtype, device="cuda")

                def reference(xs=xs, ws=ws, ss=ss):
                    return modulated_conv2d(xs, ws, ss, demodulate=bool(demodulate), up=up, padding=kernel // 2,
                                            resample_filter=taps)

                def launch(xs=xs, ws=ws, ss=ss, out=out):
                    status = kernels.modulated_conv(
                        xs.data_ptr(), ws.data_ptr(), ss.data_ptr(), out.data_ptr(), workspace.data_ptr(),
                        workspace_size, batch, in_ch, out_ch, size, size, kernel, up, kernel // 2, demodulate, flag,
                        stream)
                    if status != 0:
                        raise RuntimeError(f"warpres_modulated_conv_launch returned {status}")

                with torch.inference_mode():
                    torch_ms = cuda_ms(reference)
                    kernel_ms = cuda_ms(launch)
                    expected = modulated_conv2d(*(t.double() for t in (xs, ws, ss)), demodulate=bool(demodulate),
                                                up=up, padding=kernel // 2, resample_filter=taps.double())
                    launch()
                    torch.cuda.synchronize()
                cells += [f"{torch_ms:.3f}", f"{kernel_ms:.3f}", f"{relative_error(out, expected):.1e}"]
            shape = f"{in_ch}->{out_ch} {size}^2 k{kernel}" + (" up2" if up == 2 else "") + ("" if demodulate else
                                                                                           " no demod")
            lines.append(f"| modulated conv | {batch} | {shape} | " + " | ".join(cells) + " |")
        for channels, size in WARPS:
            generator = torch.Generator(device="cuda").manual_seed(1)
            features = torch.randn(batch, channels, size, size, device="cuda", generator=generator)
            flow = 3 * torch.randn(batch, 2, size, size, device="cuda", generator=generator)
            cells = []
            for dtype, flag in ((torch.float32, FLOAT32), (torch.float16, FLOAT16)):
                fs, fl = features.to(dtype), flow.to(dtype)
                out = torch.empty_like(fs)

                def launch(fs=fs, fl=fl, out=out):
                    status = kernels.flow_warp(fs.data_ptr(), fl.data_ptr(), out.data_ptr(), batch,
                                                          channels, size, size, flag, stream)
                    if status != 0:
                        raise RuntimeError(f"warpres_flow_warp_launch returned {status}")

                with torch.inference_mode():
                    torch_ms = cuda_ms(lambda fs=fs, fl=fl: warp(fs, fl))
                    kernel_ms = cuda_ms(launch)
                    expected = warp(fs.double(), fl.double())
                    launch()
                    torch.cuda.synchronize()
                cells += [f"{torch_ms:.3f}", f"{kernel_ms:.3f}", f"{relative_error(out, expected):.1e}"]
            lines.append(f"| flow warp | {batch} | {channels} ch {size}^2 | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="ffhq-warpres,ffhq-styleres")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--kernels", type=Path, help="libwarpres_plugin_kernels.so; without it the kernels are skipped")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_reference: PyTorch sees no CUDA GPU")
    batches = [int(b) for b in args.batches.split(",")]
    properties = torch.cuda.get_device_properties(0)
    text = (f"# GPU reference\n\n{properties.name}, {properties.total_memory / 2 ** 30:.0f} GiB, compute capability "
            f"{properties.major}.{properties.minor}; PyTorch {torch.__version__} (CUDA {torch.version.cuda}); "
            f"{args.iterations} timed iterations after a warm-up, medians.\n\n")
    if args.kernels:
        kernels = kernel_rows(KernelLibrary(args.kernels), [1, 4])
        text += f"## The plugin kernels against PyTorch (TF32 off)\n\n{kernels}\n"
        print(text, flush=True)
    text += "## PyTorch eager on CUDA: full edit and cached re-edit\n\n"
    with tempfile.TemporaryDirectory() as work:
        for arch in args.archs.split(","):
            text += session_rows(arch, batches, args.iterations, Path(work)) + "\n"
    publish(text, RESULTS)


if __name__ == "__main__":
    main()
