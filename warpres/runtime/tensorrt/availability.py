"""Whether TensorRT can run here: the one check every TensorRT path asks first.

A GPU must be visible to CUDA before TensorRT is even imported: a TensorRT Runtime created on a
machine without a usable GPU returns an object that crashes the process later (see the toolchain
notes). `tensorrt_availability` asks cuda-python (warpres.runtime.tensorrt.gpu) first and imports
TensorRT only when CUDA lists the device.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from warpres.errors import BackendError
from warpres.runtime.tensorrt.gpu import CudaDevice, CudaReport, cuda_devices

_INSTALL_HINT = ("pip install tensorrt-cu13 (TensorRT, needs an NVIDIA GPU to build) or "
                 "pip install 'warpres[tensorrt-test]' (TensorRT-RTX, builds without a GPU)")


@dataclass(frozen=True)
class TensorRTInfo:
    """Which TensorRT is importable: flavour "tensorrt" | "tensorrt-rtx", version "10.16.1.11", major 10."""

    flavour: str
    version: str
    major: int


def import_tensorrt() -> tuple[ModuleType, TensorRTInfo]:
    """The TensorRT module (`tensorrt`, else `tensorrt_rtx`) and what it is.
    Raises BackendError with the pip command when neither imports."""
    failures = []
    for module_name, flavour in (("tensorrt", "tensorrt"), ("tensorrt_rtx", "tensorrt-rtx")):
        try:
            trt = importlib.import_module(module_name)
        except ImportError as exc:  # also the shim whose libraries are missing (libnvonnxparser.so.11)
            failures.append(f"{module_name}: {exc}")
            continue
        return trt, TensorRTInfo(flavour, trt.__version__, int(trt.__version__.split(".")[0]))
    raise BackendError(f"TensorRT is not importable ({'; '.join(failures)}); {_INSTALL_HINT}")


@dataclass(frozen=True)
class TensorRTAvailability:
    """What `tensorrt_availability` found: the CUDA report, the GPU asked for (None: not there),
    the TensorRT module and what it is (None: not imported), and why it is not usable."""

    cuda: CudaReport
    gpu: CudaDevice | None
    module: ModuleType | None
    info: TensorRTInfo | None
    problem: str | None

    @property
    def usable(self) -> bool:
        return self.problem is None


def tensorrt_availability(device_index: int = 0) -> TensorRTAvailability:
    """Whether TensorRT and CUDA device `device_index` are usable here, and why not; never raises.
    TensorRT is imported only once CUDA lists the device (see the module docstring)."""
    report = cuda_devices()
    if len(report.devices) <= device_index:
        problem = report.problem if not report.devices else f"no CUDA device {device_index}"
        return TensorRTAvailability(report, None, None, None, f"no GPU ({problem})")
    gpu = report.devices[device_index]
    try:
        trt, info = import_tensorrt()
    except BackendError as exc:
        return TensorRTAvailability(report, gpu, None, None, str(exc))
    return TensorRTAvailability(report, gpu, trt, info, None)
