"""`warpres bench` as a library: which sessions to compare on one model (the measured backend,
TensorRT without CUDA graphs and ONNX Runtime CUDA beside it on a GPU, PyTorch eager FP32 as the
reference) and the tables of their measurements."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path

from warpres.app.sessions import open_session as open_with_exporter
from warpres.benchmark import fixed_latent_shift, measure, stage_table, synthetic_images, table
from warpres.runtime.backends import available
from warpres.stages import is_model_folder


def bench_report(model: Path, backend: str, precision: str | None, sizes: Sequence[int], *, iterations: int = 3,
                 edit_spec: str | None = None, directions: Path | None = None, reference: bool = True,
                 checkpoint: Path | None = None, warn: Callable[[str], None] = print,
                 status: Callable[[str], None] = print) -> str:
    """Measure every session at every batch size; the speed-up/PSNR table and the per-stage table.
    The reference runs the checkpoint (`model` itself, or `checkpoint` for an exported folder)."""
    gpu = backend == "tensorrt"
    open_session = functools.partial(open_with_exporter, directions=directions, max_batch=max(sizes))
    sessions = [open_session(model, backend, precision=precision)]
    if gpu:
        sessions.append(open_session(model, backend, precision=precision, backend_options={"cuda_graphs": False}))
        ort_cuda = available()["onnxruntime"]
        if "CUDA: yes" in ort_cuda.detail:
            sessions.append(open_session(model, "onnxruntime", backend_options={"device": "cuda"}))
        else:
            warn(f"no ONNX Runtime CUDA to compare with ({ort_cuda.detail})")
    source = checkpoint or (None if is_model_folder(model) else model)
    compare = reference and source is not None and (backend, precision or "fp32") != ("torch", "fp32")
    if compare:
        sessions.insert(0, open_session(source, "torch", precision="fp32",
                                        backend_options={"device": "cuda"} if gpu else None))
    elif reference and source is None:
        warn("no PyTorch reference for an exported folder; give --checkpoint for speed-ups and PSNR")
    info = sessions[-1].info
    edits = edit_spec or fixed_latent_shift(info.latent_shape[1])
    rows, references = [], {}
    for session in sessions:
        status(f"measuring {session.device.name}")
        for size in sizes:
            row = measure(session, synthetic_images(size, info.image_size), edits, iterations=iterations)
            rows.append(row)
            if compare and session is sessions[0]:
                references[size] = row
    return table(rows, references or None) + "\n\n" + stage_table(rows)
