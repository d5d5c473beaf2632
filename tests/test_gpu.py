"""CUDA discovery never raises and says why there is no device."""

from __future__ import annotations

import sys

import pytest

from warpres.runtime.tensorrt.gpu import CudaDevice, cuda_devices


def test_without_a_gpu_the_report_is_empty_and_explains_why():
    pytest.importorskip("cuda.bindings.runtime", reason="cuda-python not installed")
    report = cuda_devices()
    if report.devices:
        pytest.skip("a CUDA device is present")
    assert "no usable CUDA device" in report.problem or "no devices" in report.problem


@pytest.mark.gpu
def test_a_gpu_is_listed_with_its_compute_capability():
    report = cuda_devices()
    if not report.devices:
        pytest.skip(f"no GPU: {report.problem}")
    device = report.devices[0]
    assert device.compute_capability[0] >= 5 and device.memory_bytes > 2**30 and device.sm.startswith("sm_")


def test_the_sm_name_joins_major_and_minor():
    assert CudaDevice(0, "H100", (9, 0), 80 * 2**30).sm == "sm_90"


def test_without_cuda_python_the_report_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)
    report = cuda_devices()
    assert report.devices == () and "pip install cuda-python" in report.problem
