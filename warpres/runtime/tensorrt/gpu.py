"""What CUDA can see here, asked through cuda-python before anything touches TensorRT.

Creating a TensorRT Runtime on a machine without a usable GPU returns an object that crashes
the process later (see the toolchain notes), so every TensorRT path asks
`warpres.runtime.tensorrt.availability.tensorrt_availability`, which lists the devices here first.
`nvidia_gpu_present` asks the kernel only, for ONNX Runtime's CUDA provider.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: tuple[int, int]
    memory_bytes: int

    @property
    def sm(self) -> str:
        """'sm_90' style name of the compute capability (engines are built for one)."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"


@dataclass(frozen=True)
class CudaReport:
    """devices (empty without a usable GPU), the driver / runtime versions CUDA reports
    ('12.8' style, None when unknown), and why there are no devices."""

    devices: tuple[CudaDevice, ...]
    driver_version: str | None
    runtime_version: str | None
    problem: str | None


def _version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}"


def cuda_devices() -> CudaReport:
    """The CUDA devices cuda-python's runtime API can open; never raises."""
    try:
        from cuda.bindings import runtime
    except ImportError as exc:
        return CudaReport((), None, None, f"cuda-python is not installed ({exc}); pip install cuda-python")
    success = runtime.cudaError_t.cudaSuccess
    err, runtime_code = runtime.cudaRuntimeGetVersion()
    runtime_version = _version(runtime_code) if err == success else None
    err, driver_code = runtime.cudaDriverGetVersion()
    driver_version = _version(driver_code) if err == success and driver_code else None
    err, count = runtime.cudaGetDeviceCount()
    if err != success:
        name = runtime.cudaGetErrorName(err)[1].decode()
        return CudaReport((), driver_version, runtime_version, f"no usable CUDA device ({name})")
    devices = []
    for index in range(count):
        err, props = runtime.cudaGetDeviceProperties(index)
        if err == success:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            devices.append(CudaDevice(index, name.rstrip("\x00"), (props.major, props.minor), props.totalGlobalMem))
    problem = None if devices else "CUDA reports no devices"
    return CudaReport(tuple(devices), driver_version, runtime_version, problem)


def nvidia_gpu_present() -> bool:
    """Whether the NVIDIA driver exposes a GPU, asked of the kernel (no CUDA library loaded)."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or any(Path("/dev").glob("nvidia[0-9]*"))
