"""The plugins' CMake project (plugins/) for tests: configure, build a library, load the CPU
reference and the CUDA kernels' launchers (`KernelLibrary`, also used by benchmarks/gpu_reference.py).

`ReferenceLibrary` is libwarpres_plugin_reference through ctypes: the __host__ __device__ math the
CUDA kernels run, on the CPU; it serves as warpres.export.plugin_graph.PluginKernels too.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def cxx_compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return name
    return None


def configure(build_dir: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["cmake", "-S", str(REPO), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release", *options],
                          capture_output=True, text=True, env=env)


def require_build_tools() -> None:
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    if cxx_compiler() is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH")


@dataclass
class CMakeBuild:
    directory: Path
    configure_log: str

    def cache(self, name: str) -> str | None:
        for line in (self.directory / "CMakeCache.txt").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.split(":")[0] == name:
                return value
        return None

    @property
    def has_cuda(self) -> bool:
        compiler = self.cache("CMAKE_CUDA_COMPILER")
        return bool(compiler) and not compiler.endswith("NOTFOUND")

    def build(self, target: str) -> Path:
        """Build the shared library `target`; its path."""
        return self._build(target, f"lib{target}.so")

    def build_program(self, target: str) -> Path:
        """Build the executable `target`; its path."""
        return self._build(target, target)

    def _build(self, target: str, file_name: str) -> Path:
        result = subprocess.run(["cmake", "--build", str(self.directory), "--target", target, "-j2"],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.fail(f"building {target} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        built = self.directory / file_name
        assert built.is_file(), f"the build reported success but {built} is missing"
        return built


def configure_plugins(build_dir: Path) -> CMakeBuild:
    """Configure the repository's CMake project (plugins/) into `build_dir`; skip without the tools."""
    require_build_tools()
    result = configure(build_dir)
    assert result.returncode == 0, f"cmake configure failed:\n{result.stdout}\n{result.stderr}"
    return CMakeBuild(build_dir, result.stdout)


FLOAT_P = ctypes.POINTER(ctypes.c_float)


def float_pointer(array: np.ndarray):
    assert array.dtype == np.float32 and array.flags.c_contiguous
    return array.ctypes.data_as(FLOAT_P)


class ReferenceLibrary:
    """libwarpres_plugin_reference through ctypes, on float32 numpy arrays."""

    def __init__(self, path: Path) -> None:
        self._lib = ctypes.CDLL(str(path))
        self._lib.warpres_modulated_conv_reference.argtypes = [FLOAT_P] * 4 + [ctypes.c_int] * 9
        self._lib.warpres_modulated_conv_reference.restype = ctypes.c_int
        self._lib.warpres_flow_warp_reference.argtypes = [FLOAT_P] * 3 + [ctypes.c_int] * 4
        self._lib.warpres_flow_warp_reference.restype = ctypes.c_int

    def modulated_conv_status(self, x, weight, styles, out, *, kernel, up, padding, demodulate) -> int:
        batch, in_channels, height, width = x.shape
        return self._lib.warpres_modulated_conv_reference(
            float_pointer(x), float_pointer(weight), float_pointer(styles), float_pointer(out),
            batch, in_channels, weight.shape[0], height, width, kernel, up, padding, demodulate)

    def modulated_conv(self, x, weight, styles, *, up, demodulate, padding=None) -> np.ndarray:
        """As warpres.export.plugin_graph.PluginKernels (padding defaults to k // 2)."""
        x, weight, styles = (np.ascontiguousarray(a, dtype=np.float32) for a in (x, weight, styles))
        batch, _, height, width = x.shape
        kernel = weight.shape[-1]
        out = np.full((batch, weight.shape[0], height * up, width * up), np.nan, dtype=np.float32)
        status = self.modulated_conv_status(x, weight, styles, out, kernel=kernel, up=up,
                                            padding=kernel // 2 if padding is None else padding,
                                            demodulate=demodulate)
        assert status == 0, f"warpres_modulated_conv_reference returned {status}"
        return out

    def flow_warp_status(self, features, flow, out, shape) -> int:
        return self._lib.warpres_flow_warp_reference(float_pointer(features), float_pointer(flow),
                                                     float_pointer(out), *shape)

    def flow_warp(self, features: np.ndarray, flow: np.ndarray) -> np.ndarray:
        features, flow = (np.ascontiguousarray(a, dtype=np.float32) for a in (features, flow))
        out = np.full(features.shape, np.nan, dtype=np.float32)
        status = self.flow_warp_status(features, flow, out, features.shape)
        assert status == 0, f"warpres_flow_warp_reference returned {status}"
        return out


class KernelLibrary:
    """libwarpres_plugin_kernels through ctypes: the launchers the TensorRT plugins call."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        pointer, integer = ctypes.c_void_p, ctypes.c_int
        lib.warpres_modulated_conv_workspace_size.argtypes = [integer] * 6
        lib.warpres_modulated_conv_workspace_size.restype = ctypes.c_size_t
        lib.warpres_modulated_conv_launch.argtypes = [pointer] * 5 + [ctypes.c_size_t] + [integer] * 10 + [pointer]
        lib.warpres_modulated_conv_launch.restype = integer
        lib.warpres_flow_warp_launch.argtypes = [pointer] * 3 + [integer] * 5 + [pointer]
        lib.warpres_flow_warp_launch.restype = integer
        self.workspace_size = lib.warpres_modulated_conv_workspace_size
        self.modulated_conv = lib.warpres_modulated_conv_launch
        self.flow_warp = lib.warpres_flow_warp_launch
