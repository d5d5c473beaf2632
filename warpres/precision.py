"""The one precision vocabulary (ARCHITECTURE §3): fp32, bf16, fp16, int8, mixed, and what each backend runs.

int8 and mixed run the graphs `warpres calibrate` wrote (warpres.calibration): int8 every stage
quantized, mixed the calibration's plan (INT8 where it met the bar, float elsewhere).

Library calls, the CLI and engine files all name precisions this way; `f32` is accepted as an
alias of `fp32` and normalised where a precision enters (Session, create_backend, a backend's
constructor, the CLI). Asking a backend for a precision it cannot run is one BackendError naming
what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping

from warpres.errors import BackendError

PRECISIONS = ("fp32", "bf16", "fp16", "int8", "mixed")
CALIBRATED = ("int8", "mixed")  # precisions that need a calibration
ALIASES = {"f32": "fp32"}
BACKEND_PRECISIONS = {
    "openvino": ("fp32", "bf16", "int8", "mixed"),  # bf16 on CPUs with AMX / AVX512-BF16 (else fp32, with a
                                                    # warning); int8 / mixed from a calibration
    "onnxruntime": ("fp32",),
    "torch": ("fp32", "bf16"),          # bf16: autocast convolutions, channels-last
    "tensorrt": ("fp32", "fp16", "int8", "mixed"),  # the engines `warpres build` makes (int8 / mixed from a
                                                    # tensorrt calibration), one engine set at a time
}

DEFAULT_PRECISIONS = {"openvino": "the calibration where it met its bar, else bf16 where the CPU has it, else fp32",
                      "tensorrt": "the best engines built (int8 / mixed where their calibration met its bar)"}


def precision_help(backend: str | None = None) -> str:
    """What --precision accepts, for `backend` or (None) for every backend."""
    if backend in BACKEND_PRECISIONS:
        return f"Precision [default: {DEFAULT_PRECISIONS.get(backend, 'fp32')}] (f32 is read as fp32)."
    defaults = "; ".join(f"{name} {text}" for name, text in DEFAULT_PRECISIONS.items())
    runs = "; ".join(f"{name} {', '.join(accepted)}" for name, accepted in BACKEND_PRECISIONS.items())
    return (f"Precision [default: the backend's; {defaults}]; each backend runs: " + runs
            + " (f32 is read as fp32).")


def normalize_precision(precision: str | None) -> str | None:
    """`precision` in the vocabulary (`f32` -> `fp32`); None stays None (the backend's default).
    Raises BackendError naming the vocabulary for anything else."""
    if precision is None:
        return None
    precision = ALIASES.get(precision, precision)
    if precision not in PRECISIONS:
        raise BackendError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def normalize_precisions(precision: str | Mapping[str, str] | None) -> str | dict[str, str] | None:
    """normalize_precision of one precision, or of each value of {stage name: precision}."""
    if isinstance(precision, Mapping):
        return {stage: normalize_precision(value) for stage, value in precision.items()}
    return normalize_precision(precision)


def check_backend_precision(backend: str, precision: str | Mapping[str, str] | None) -> None:
    """Raise BackendError when `backend` cannot run (normalised) `precision`: the message names what it accepts."""
    accepted = BACKEND_PRECISIONS[backend]
    if isinstance(precision, Mapping) and backend != "openvino":
        raise BackendError(f"{backend} runs one precision for all stages ({', '.join(accepted)}); "
                           f"per-stage precisions need openvino")
    asked = set(precision.values()) if isinstance(precision, Mapping) else {precision} - {None}
    refused = sorted(asked - set(accepted))
    if refused:
        raise BackendError(f"{backend} runs {' or '.join(accepted)}, not {', '.join(refused)}")
