"""Claims about the C++/CUDA plugin side (plugins/): its math equals the PyTorch references, the
CUDA kernels compile, and the TensorRT plugin library exports what TensorRT loads.

The CMake project is configured once per session into a temporary folder and each library is
built when a test first needs it. libwarpres_plugin_reference runs on the CPU the very
__host__ __device__ functions the CUDA kernels run, so its agreement with PyTorch checks the kernel
math without a GPU; the GPU tests run the kernels themselves through cuda-python and skip
cleanly without a device.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from tests.plugin_libraries import CMakeBuild, KernelLibrary, configure, require_build_tools
from warpres.models.flow import warp
from warpres.models.modulated_conv import modulated_conv2d
from warpres.models.resample import setup_filter

DEFAULT_CUDA_ARCHITECTURES = "75;80;86;89;90"
UNSUPPORTED = -1  # WARPRES_UNSUPPORTED_ARGUMENTS, plugins/common/status.h
WORKSPACE_TOO_SMALL = -2  # WARPRES_WORKSPACE_TOO_SMALL
FLOAT32, FLOAT16 = 0, 1  # the launchers' dtype flag

# float32 on both sides: the C++ and PyTorch sums differ only in rounding and summation order.
REFERENCE_TOLERANCE = 1e-5
# The CUDA kernels against PyTorch: float32 tensors, and float16 tensors with float32 arithmetic.
GPU_FLOAT32_TOLERANCE = 1e-4
GPU_FLOAT16_TOLERANCE = 2e-2

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the plugin libraries are built and loaded as Linux shared objects")


def assert_close_scaled(actual: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    """max |actual - expected| <= tolerance * max(1, max |expected|)."""
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    error = float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0))
    assert error <= tolerance * scale, f"max abs error {error:.3g} > {tolerance:g} * {scale:.3g}"


def _modulated_conv_inputs(seed, batch, in_channels, out_channels, height, width, kernel):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, in_channels, height, width, generator=generator),
            torch.randn(out_channels, in_channels, kernel, kernel, generator=generator),
            torch.randn(batch, in_channels, generator=generator))


def _torch_modulated_conv(x, weight, styles, *, up, demodulate) -> np.ndarray:
    return modulated_conv2d(x, weight, styles, demodulate=bool(demodulate), up=up, padding=weight.shape[-1] // 2,
                            resample_filter=setup_filter()).numpy()


def _numpy(*tensors: torch.Tensor) -> list[np.ndarray]:
    return [np.ascontiguousarray(t.numpy(), dtype=np.float32) for t in tensors]


# ----------------------------------------------------------------------------------------------
# The CPU reference equals PyTorch

SIZES = [(4, 4), (5, 7), (8, 6)]
KERNEL_AND_UP = [(1, 1), (3, 1), (3, 2)]  # up = 2 exists only for the 3x3 kernel


@pytest.mark.parametrize("demodulate", [0, 1])
@pytest.mark.parametrize(("kernel", "up"), KERNEL_AND_UP)
@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("in_channels", "out_channels"), list(itertools.product([1, 4, 5], repeat=2)))
@pytest.mark.parametrize("batch", [1, 3])
def test_reference_modulated_conv_equals_pytorch(reference, batch, in_channels, out_channels, height, width, kernel,
                                                  up, demodulate):
    x, weight, styles = _modulated_conv_inputs(0, batch, in_channels, out_channels, height, width, kernel)
    expected = _torch_modulated_conv(x, weight, styles, up=up, demodulate=demodulate)
    actual = reference.modulated_conv(*_numpy(x, weight, styles), up=up, demodulate=demodulate)
    assert_close_scaled(actual, expected, REFERENCE_TOLERANCE)


@pytest.mark.parametrize(("kernel", "up", "padding", "demodulate"), [
    (3, 3, 1, 1),  # up = 3
    (1, 2, 0, 1),  # up = 2 without the 3x3 kernel
    (5, 2, 2, 1),
    (2, 1, 1, 1),  # even kernel
    (4, 1, 2, 0),
    (3, 1, 0, 1),  # padding != k // 2
    (3, 2, 2, 0),
    (3, 1, 1, 2),  # demodulate is a flag
])
def test_reference_modulated_conv_rejects_unsupported_arguments(reference, kernel, up, padding, demodulate):
    x, weight, styles = _numpy(*_modulated_conv_inputs(0, 1, 2, 2, 4, 4, kernel))
    out = np.zeros((1, 2, 4 * up, 4 * up), dtype=np.float32)
    status = reference.modulated_conv_status(x, weight, styles, out, kernel=kernel, up=up, padding=padding,
                                             demodulate=demodulate)
    assert status == UNSUPPORTED
    assert not out.any(), "an unsupported call must not write its output"


def test_reference_flow_warp_rejects_empty_shapes(reference):
    features, flow, out = (np.zeros((1, 1, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32),
                           np.zeros((1, 1, 4, 4), np.float32))
    assert reference.flow_warp_status(features, flow, out, (0, 1, 4, 4)) == UNSUPPORTED
    assert reference.flow_warp_status(features, flow, out, (1, 1, 4, 0)) == UNSUPPORTED


def _warp_inputs(seed, batch, channels, height, width, flow_scale):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height, width, generator=generator)
    flow = flow_scale * torch.randn(batch, 2, height, width, generator=generator)
    return features, flow


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_reference_warp_by_zero_flow_reproduces_the_features_exactly(reference, height, width):
    """Exact in pixel coordinates (PyTorch's normalised grid is only ~1e-5 close, see flow.warp)."""
    features, _ = _numpy(*_warp_inputs(0, 2, 3, height, width, 1.0))
    np.testing.assert_array_equal(reference.flow_warp(features, np.zeros((2, 2, height, width), np.float32)),
                                  features)


@pytest.mark.parametrize(("shift_x", "shift_y"), [(1, 0), (0, -2), (-3, 1), (2, 2)])
@pytest.mark.parametrize(("height", "width"), SIZES)
def test_reference_warp_by_an_integer_shift_moves_pixels_and_zero_fills(reference, height, width, shift_x, shift_y):
    """out[y, x] = features[y + dy, x + dx] where that exists, else 0."""
    features, _ = _numpy(*_warp_inputs(1, 1, 2, height, width, 1.0))
    flow = np.zeros((1, 2, height, width), np.float32)
    flow[:, 0], flow[:, 1] = shift_x, shift_y
    expected = np.zeros_like(features)
    ys, xs = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    inside = (ys + shift_y >= 0) & (ys + shift_y < height) & (xs + shift_x >= 0) & (xs + shift_x < width)
    expected[:, :, inside] = features[:, :, (ys + shift_y)[inside], (xs + shift_x)[inside]]
    actual = reference.flow_warp(features, flow)
    np.testing.assert_array_equal(actual, expected)
    assert_close_scaled(actual, warp(torch.from_numpy(features), torch.from_numpy(flow)).numpy(), REFERENCE_TOLERANCE)


@pytest.mark.parametrize("flow_scale", [0.5, 2.0])
@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize(("batch", "channels"), [(1, 1), (3, 4)])
def test_reference_warp_by_a_fractional_flow_equals_pytorch(reference, batch, channels, height, width, flow_scale):
    features, flow = _warp_inputs(2, batch, channels, height, width, flow_scale)
    expected = warp(features, flow).numpy()
    assert_close_scaled(reference.flow_warp(*_numpy(features, flow)), expected, REFERENCE_TOLERANCE)


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_reference_warp_outside_the_grid_equals_pytorch_zero_padding(reference, height, width):
    """Samples half outside blend with zeros; samples a pixel or more outside are exactly 0."""
    features, flow = _warp_inputs(3, 2, 3, height, width, 1.0)
    flow[0] = 3.0 * max(height, width) * torch.sign(flow[0])  # far outside, both directions
    flow[1, 0], flow[1, 1] = -width + 0.5, height - 1.5  # straddling the left / bottom borders
    expected = warp(features, flow).numpy()
    actual = reference.flow_warp(*_numpy(features, flow))
    assert_close_scaled(actual, expected, REFERENCE_TOLERANCE)
    assert not actual[0].any()


# ----------------------------------------------------------------------------------------------
# The CUDA kernels


@pytest.fixture(scope="session")
def kernels(cmake_build) -> KernelLibrary:
    if not cmake_build.has_cuda:
        pytest.skip("CMake found no CUDA compiler, so the CUDA kernels were not built")
    return KernelLibrary(cmake_build.build("warpres_plugin_kernels"))


def test_the_cuda_kernels_compile_for_the_default_architectures(cmake_build, kernels):
    """The build produced libwarpres_plugin_kernels for sm_75..sm_90 (it loads and has the launchers)."""
    if "CUDAARCHS" not in os.environ:
        assert cmake_build.cache("CMAKE_CUDA_ARCHITECTURES") == DEFAULT_CUDA_ARCHITECTURES
    assert (cmake_build.directory / "libwarpres_plugin_kernels.so").is_file()


def test_the_workspace_holds_the_coefficients_and_the_transposed_convolution(kernels):
    """up = 2: (B, O) coefficients padded to 256 bytes, then the (B, O, 2H+1, 2W+1) float32 buffer."""
    batch, out_channels, height, width = 2, 4, 5, 7
    coefficients = 256
    assert kernels.workspace_size(batch, out_channels, height, width, 3, 1) == coefficients
    assert kernels.workspace_size(batch, out_channels, height, width, 3, 2) == (
        coefficients + 4 * batch * out_channels * (2 * height + 1) * (2 * width + 1))
    assert kernels.workspace_size(batch, out_channels, height, width, 1, 2) == 0  # unsupported: no size


def _launch_arguments(**overrides) -> tuple:
    """warpres_modulated_conv_launch's arguments in order: null pointers, a valid 3x3 call, `overrides`."""
    arguments = dict(x=None, weight=None, styles=None, out=None, workspace=None, workspace_size=1 << 20, batch=2,
                     in_channels=3, out_channels=4, height=4, width=4, kernel=3, up=1, padding=1, demodulate=1,
                     dtype=FLOAT32, stream=None)
    assert overrides.keys() <= arguments.keys()
    return tuple({**arguments, **overrides}.values())


def test_the_launchers_reject_bad_arguments_before_touching_the_gpu(kernels):
    """Argument checks come first, so these return without a device (and without dereferencing
    the null pointers)."""
    assert kernels.modulated_conv(*_launch_arguments(up=3)) == UNSUPPORTED
    assert kernels.modulated_conv(*_launch_arguments(kernel=4, padding=2)) == UNSUPPORTED
    assert kernels.modulated_conv(*_launch_arguments(dtype=2)) == UNSUPPORTED
    assert kernels.modulated_conv(*_launch_arguments(up=2, workspace_size=16)) == WORKSPACE_TOO_SMALL
    assert kernels.flow_warp(None, None, None, 1, 1, 4, 4, 2, None) == UNSUPPORTED
    assert kernels.flow_warp(None, None, None, 1, 0, 4, 4, FLOAT32, None) == UNSUPPORTED


@pytest.fixture(scope="session")
def cuda_device():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    from warpres.runtime.tensorrt.gpu import cuda_devices

    report = cuda_devices()
    if not report.devices:
        pytest.skip(f"no GPU: {report.problem}")
    return report.devices[0]


class DeviceArrays:
    """Device copies of host arrays and device outputs for one test, freed at the end."""

    def __init__(self) -> None:
        from cuda.bindings import runtime

        from warpres.runtime.tensorrt.cuda import Stream, check

        self._runtime, self._check = runtime, check
        self.stream = Stream()
        self._addresses: list[int] = []

    def empty(self, nbytes: int) -> int:
        address = int(self._check(self._runtime.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
        self._addresses.append(address)
        return address

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        address = self.empty(array.nbytes)
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._runtime.cudaMemcpy(address, array.ctypes.data, array.nbytes, kind), "cudaMemcpy h2d")
        return address

    def download(self, address: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        self.stream.synchronize()
        out = np.empty(shape, dtype=dtype)
        kind = self._runtime.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._runtime.cudaMemcpy(out.ctypes.data, address, out.nbytes, kind), "cudaMemcpy d2h")
        return out

    def free(self) -> None:
        self.stream.synchronize()
        for address in self._addresses:
            self._runtime.cudaFree(address)


@pytest.fixture
def device_arrays(cuda_device):
    arrays = DeviceArrays()
    yield arrays
    arrays.free()


DTYPES = [(FLOAT32, np.float32, GPU_FLOAT32_TOLERANCE), (FLOAT16, np.float16, GPU_FLOAT16_TOLERANCE)]


@dataclass
class ModulatedConvCall:
    """A launch on device copies of the inputs: `arguments` is all the launcher takes but the stream."""

    arguments: tuple
    out: int
    out_shape: tuple[int, ...]


def _prepare_modulated_conv(kernels, arrays, x, weight, styles, *, up, demodulate, dtype_flag, dtype):
    batch, in_channels, height, width = x.shape
    out_channels, kernel = weight.shape[0], weight.shape[-1]
    out_shape = (batch, out_channels, height * up, width * up)
    workspace_size = kernels.workspace_size(batch, out_channels, height, width, kernel, up)
    out = arrays.empty(int(np.prod(out_shape)) * np.dtype(dtype).itemsize)
    arguments = (arrays.upload(x.astype(dtype)), arrays.upload(weight.astype(dtype)),
                 arrays.upload(styles.astype(dtype)), out, arrays.empty(workspace_size), workspace_size, batch,
                 in_channels, out_channels, height, width, kernel, up, kernel // 2, demodulate, dtype_flag)
    return ModulatedConvCall(arguments, out, out_shape)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype_flag", "dtype", "tolerance"), DTYPES)
@pytest.mark.parametrize("demodulate", [0, 1])
@pytest.mark.parametrize(("kernel", "up"), KERNEL_AND_UP)
@pytest.mark.parametrize(("batch", "in_channels", "out_channels", "height", "width"),
                         [(1, 4, 5, 5, 7), (3, 5, 4, 8, 6), (2, 32, 16, 16, 16)])
def test_cuda_modulated_conv_equals_pytorch(kernels, device_arrays, batch, in_channels, out_channels, height, width,
                                            kernel, up, demodulate, dtype_flag, dtype, tolerance):
    """float16 runs compare with PyTorch on the float16-rounded inputs: the claim is the kernel's
    arithmetic, not the rounding of its inputs."""
    x, weight, styles = [t.astype(dtype).astype(np.float32) for t in _numpy(
        *_modulated_conv_inputs(4, batch, in_channels, out_channels, height, width, kernel))]
    expected = _torch_modulated_conv(*map(torch.from_numpy, (x, weight, styles)), up=up, demodulate=demodulate)
    call = _prepare_modulated_conv(kernels, device_arrays, x, weight, styles, up=up, demodulate=demodulate,
                                   dtype_flag=dtype_flag, dtype=dtype)
    status = kernels.modulated_conv(*call.arguments, device_arrays.stream.address)
    assert status == 0, f"warpres_modulated_conv_launch returned {status}"
    assert_close_scaled(device_arrays.download(call.out, call.out_shape, dtype), expected, tolerance)


@pytest.mark.gpu
@pytest.mark.parametrize(("dtype_flag", "dtype", "tolerance"), DTYPES)
@pytest.mark.parametrize(("batch", "channels", "height", "width"), [(1, 1, 5, 7), (3, 4, 8, 6), (2, 16, 32, 32)])
def test_cuda_flow_warp_equals_pytorch(kernels, device_arrays, batch, channels, height, width, dtype_flag, dtype,
                                       tolerance):
    features, flow = [t.astype(dtype).astype(np.float32) for t in _numpy(
        *_warp_inputs(5, batch, channels, height, width, 2.0))]
    expected = warp(torch.from_numpy(features), torch.from_numpy(flow)).numpy()
    out = device_arrays.empty(features.size * np.dtype(dtype).itemsize)
    status = kernels.flow_warp(device_arrays.upload(features.astype(dtype)), device_arrays.upload(flow.astype(dtype)),
                               out, batch, channels, height, width, dtype_flag, device_arrays.stream.address)
    assert status == 0, f"warpres_flow_warp_launch returned {status}"
    assert_close_scaled(device_arrays.download(out, features.shape, dtype), expected, tolerance)


@pytest.mark.gpu
def test_cuda_modulated_conv_can_be_captured_into_a_cuda_graph(kernels, device_arrays):
    """No allocation or synchronisation inside the launcher: it records into a graph and replays."""
    from warpres.runtime.tensorrt.cuda import capture

    x, weight, styles = _numpy(*_modulated_conv_inputs(6, 2, 4, 3, 6, 5, 3))
    expected = _torch_modulated_conv(*map(torch.from_numpy, (x, weight, styles)), up=2, demodulate=1)
    call = _prepare_modulated_conv(kernels, device_arrays, x, weight, styles, up=2, demodulate=1, dtype_flag=FLOAT32,
                                   dtype=np.float32)
    statuses = []

    def enqueue() -> bool:
        statuses.append(kernels.modulated_conv(*call.arguments, device_arrays.stream.address))
        return statuses[-1] == 0

    graph = capture(device_arrays.stream, enqueue)
    assert graph is not None, f"capture failed (launcher returned {statuses})"
    graph.launch(device_arrays.stream)
    assert_close_scaled(device_arrays.download(call.out, call.out_shape, np.float32), expected, GPU_FLOAT32_TOLERANCE)


# ----------------------------------------------------------------------------------------------
# The TensorRT plugin library


def test_without_tensorrt_headers_configuration_succeeds_and_says_the_plugins_are_skipped(tmp_path):
    require_build_tools()
    env = {key: value for key, value in os.environ.items() if key != "TENSORRT_ROOT"}
    no_headers = tmp_path / "no_tensorrt"
    no_headers.mkdir()
    result = configure(tmp_path / "build", f"-DTENSORRT_INCLUDE_DIR={no_headers}", env=env)
    assert result.returncode == 0, f"cmake configure failed:\n{result.stdout}\n{result.stderr}"
    skipped = [line for line in result.stdout.splitlines() if "warpres_plugins: skipped" in line]
    assert len(skipped) == 1, result.stdout
    assert "TensorRT headers" in skipped[0] or "no CUDA compiler" in skipped[0]


@pytest.fixture(scope="module")
def tensorrt_plugin_build(tmp_path_factory) -> CMakeBuild:
    """The project configured against $WARPRES_TENSORRT_INCLUDE with warnings as errors; built
    once for the tests below (the CUDA kernels take minutes)."""
    include = os.environ.get("WARPRES_TENSORRT_INCLUDE")
    if not include:
        pytest.skip("set WARPRES_TENSORRT_INCLUDE to a TensorRT include directory to build the plugins")
    require_build_tools()
    build_dir = tmp_path_factory.mktemp("tensorrt_plugins_build")
    configured = configure(build_dir, f"-DTENSORRT_INCLUDE_DIR={include}", "-DCMAKE_COMPILE_WARNING_AS_ERROR=ON")
    assert configured.returncode == 0, f"cmake configure failed:\n{configured.stdout}\n{configured.stderr}"
    build = CMakeBuild(build_dir, configured.stdout)
    if not build.has_cuda:
        pytest.skip("CMake found no CUDA compiler, which the plugin library needs")
    return build


def test_the_plugin_library_builds_warning_free_and_exports_only_the_tensorrt_entry_points(tensorrt_plugin_build):
    """Against $WARPRES_TENSORRT_INCLUDE: -Wall -Wextra as errors, no libnvinfer needed
    (linked with --no-undefined), and exactly getCreators and setLoggerFinder exported."""
    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    library = tensorrt_plugin_build.build("warpres_plugins")
    defined = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    assert {line.split()[-1] for line in defined.stdout.splitlines() if line.strip()} == {
        "getCreators", "setLoggerFinder"}
    undefined = subprocess.run(["nm", "-D", "--undefined-only", str(library)], capture_output=True, text=True,
                               check=True)
    assert "nvinfer" not in undefined.stdout.lower()


def test_the_plugin_library_passes_the_host_check_of_its_tensorrt_interfaces(tensorrt_plugin_build):
    """warpres_plugin_host_check (plugins/tests/pluginHostCheck.cpp) loads the library as
    loadLibrary does and drives both plugins' IPluginV3 interfaces on the CPU: creators,
    attributes, serialisation, shapes, formats, configure, workspace, and a failing enqueue."""
    library = tensorrt_plugin_build.build("warpres_plugins")
    host_check = tensorrt_plugin_build.build_program("warpres_plugin_host_check")
    result = subprocess.run([str(host_check), str(library)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (f"warpres_plugin_host_check exited with {result.returncode}:\n"
                                    f"{result.stdout}\n{result.stderr}")
