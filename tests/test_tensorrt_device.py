"""The TensorRT backend's CUDA device layer, driven on the CPU through fakes of exactly the two
APIs it calls: cuda-python's runtime (its "GPU memory" is host memory, so every copy is a real
memmove and a wrong address or size corrupts the image) and TensorRT's engine / context (each
engine runs its stage's exported ONNX graph with ONNX Runtime). Stream capture records the
enqueues instead of running them, so a replayed graph that was captured wrongly renders wrongly.

On a GPU, `warpres selftest` checks the same code against the real libraries.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import shutil
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import copy_of, tiny_editing_model

pytest.importorskip("onnxruntime")

from warpres.errors import BackendError  # noqa: E402
from warpres.export import export_model, model_id  # noqa: E402
from warpres.runtime.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from warpres.runtime.tensorrt import availability, cuda, engine_file, selftest  # noqa: E402
from warpres.runtime.tensorrt import backend as trt_backend  # noqa: E402
from warpres.runtime.tensorrt.engine_file import EngineHeader, EngineTarget, encode_header, engine_path  # noqa: E402
from warpres.runtime.tensorrt.gpu import CudaDevice, CudaReport  # noqa: E402
from warpres.runtime.session import Session  # noqa: E402
from warpres.stages import MANIFEST_NAME, ModelFolder, open_model_folder  # noqa: E402

FAKE_TRT = EngineTarget("tensorrt", "11.4.0.106", "sm_90")
PROFILES = ((1, 1, 1), (2, 2, 4))


class FakeCudaRuntime:
    """cuda.bindings.runtime, as far as warpres.runtime.tensorrt.cuda uses it."""

    cudaError_t = SimpleNamespace(cudaSuccess=0, cudaErrorStreamCaptureInvalidated=901)
    cudaStreamNonBlocking = 1
    cudaEventDefault, cudaEventDisableTiming = 0, 2
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)
    cudaStreamCaptureMode = SimpleNamespace(cudaStreamCaptureModeThreadLocal=1)

    def __init__(self) -> None:
        self.memory: dict[int, ctypes.Array] = {}
        self.capturing: dict[int, list] = {}
        self.handles = itertools.count(1)
        self.copies = Counter()
        self.graph_launches = 0

    def _alloc(self, size):
        block = ctypes.create_string_buffer(size)
        self.memory[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaGetErrorName(self, err):
        return 0, b"cudaErrorFake"

    def cudaSetDevice(self, index):
        return (0,)

    def cudaStreamCreateWithFlags(self, flags):
        return 0, next(self.handles)

    def cudaEventCreateWithFlags(self, flags):
        return 0, next(self.handles)

    def cudaStreamDestroy(self, *args):
        return (0,)

    cudaEventDestroy = cudaEventRecord = cudaEventSynchronize = cudaStreamWaitEvent = cudaStreamSynchronize = \
        cudaGraphDestroy = cudaGraphExecDestroy = cudaGetLastError = cudaStreamDestroy

    def cudaEventElapsedTime(self, start, end):
        return 0, 0.25

    def cudaMalloc(self, size):
        return self._alloc(size)

    def cudaMallocAsync(self, size, stream):
        return self._alloc(size)

    def cudaMallocHost(self, size):
        return self._alloc(size)

    def cudaFree(self, address, *stream):
        self.memory.pop(address, None)
        return (0,)

    cudaFreeAsync = cudaFreeHost = cudaFree

    def cudaMemcpyAsync(self, destination, source, nbytes, kind, stream):
        self.copies[kind] += 1
        ctypes.memmove(destination, source, nbytes)
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing[stream] = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        return 0, self.capturing.pop(stream)

    def cudaGraphInstantiate(self, graph, flags):
        return 0, list(graph)

    def cudaGraphLaunch(self, graph_exec, stream):
        self.graph_launches += 1
        for work in graph_exec:
            work()
        return (0,)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple] = {}
        self.addresses: dict[str, int] = {}
        self.scratch = None

    def set_device_memory(self, address, size):
        self.scratch = (address, size)

    def set_optimization_profile_async(self, index, stream):
        self.profile = index
        return True

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        batch = next(iter(self.shapes.values()))[0]
        return (batch, *self.engine.folder.manifest.io[self.engine.stage.name][name].shape[1:])

    def set_tensor_address(self, name, address):
        self.addresses[name] = address

    def execute_async_v3(self, stream):
        work = self._work()
        capture = self.engine.cudart.capturing.get(stream)
        if capture is not None:
            if self.engine.refuse_capture:
                return False
            capture.append(work)
        else:
            self.engine.plain_runs += 1
            work()
        return True

    def _work(self):
        """The stage run as it is bound now (capture freezes the binding, as on a GPU)."""
        stage, shapes, addresses = self.engine.stage, dict(self.shapes), dict(self.addresses)

        def work():
            feeds = {}
            for name in stage.inputs:
                array = np.empty(shapes[name], np.float32)
                ctypes.memmove(array.ctypes.data, addresses[name], array.nbytes)
                feeds[name] = array
            for name, value in self.engine.ort.run(stage, feeds).items():
                value = np.ascontiguousarray(value, np.float32)
                ctypes.memmove(addresses[name], value.ctypes.data, value.nbytes)

        return work


class FakeEngine:
    def __init__(self, folder: ModelFolder, stage, cudart, ort) -> None:
        self.folder, self.stage, self.cudart, self.ort = folder, stage, cudart, ort
        self.names = [*stage.inputs, *stage.outputs]
        self.num_io_tensors = len(self.names)
        self.device_memory_size_v2 = 4096
        self.plain_runs = 0
        self.refuse_capture = False

    def get_tensor_name(self, index):
        return self.names[index]

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if name in self.stage.inputs else FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return FakeTensorRT.DataType.FLOAT

    def create_execution_context(self, strategy):
        assert strategy == FakeTensorRT.ExecutionContextAllocationStrategy.USER_MANAGED
        return FakeContext(self)


class FakeTensorRT:
    """tensorrt, as far as the backend uses it: a plan is the stage name."""

    TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    DataType = SimpleNamespace(FLOAT="float")
    ExecutionContextAllocationStrategy = SimpleNamespace(USER_MANAGED="user")

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    def __init__(self, folder, cudart, ort) -> None:
        self.engines: dict[str, FakeEngine] = {}
        self.ort = ort
        outer = self

        class Runtime:
            def __init__(self, logger):
                self.engine_host_code_allowed = None
                outer.runtime = self

            def deserialize_cuda_engine(self, plan):
                stage = next(s for s in folder.manifest.stages if s.name == bytes(plan).decode())
                engine = outer.engines[stage.name] = FakeEngine(folder, stage, cudart, ort)
                return engine

        self.Runtime = Runtime



@pytest.fixture(scope="module")
def folder(exports, tmp_path_factory) -> ModelFolder:
    """The shared export, copied: this module writes engines into it."""
    return copy_of(exports("warpres").folder, tmp_path_factory.mktemp("trt") / "model")


def write_engines(folder: ModelFolder, precision: str = "fp16", target: EngineTarget = FAKE_TRT,
                  **header_fields) -> None:
    for stage in folder.manifest.stages:
        header = EngineHeader(stage=stage.name, precision=precision, target=target,
                              source_sha256=folder.manifest.graphs[stage.name].sha256, profiles=PROFILES,
                              refittable=False, **header_fields)
        path = engine_path(folder.path, stage.name, precision)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(encode_header(header) + stage.name.encode())


@pytest.fixture
def gpu(folder, monkeypatch):
    """A fake H100 with fake TensorRT 11; fp16 engines of the folder's stages."""
    cudart = FakeCudaRuntime()
    trt = FakeTensorRT(folder, cudart, OnnxRuntimeBackend(folder))
    monkeypatch.setattr(cuda, "_runtime", lambda: cudart)
    report = CudaReport((CudaDevice(0, "NVIDIA H100 (fake)", (9, 0), 80 << 30),), "13.0", "13.0", None)
    info = SimpleNamespace(flavour=FAKE_TRT.flavour, version=FAKE_TRT.version, major=11)
    monkeypatch.setattr(availability, "cuda_devices", lambda: report)  # the one check every TensorRT path asks
    monkeypatch.setattr(availability, "import_tensorrt", lambda: (trt, info))
    monkeypatch.setattr(engine_file, "cuda_devices", lambda: report)  # the compute capability engines are built for
    write_engines(folder)
    return SimpleNamespace(cudart=cudart, trt=trt)


def _sessions(folder, max_batch: int = 1, **options):
    reference = Session(folder.path, backend="onnxruntime", max_batch=max_batch)
    session = Session(folder.path, backend="tensorrt", max_batch=max_batch, backend_options=options)
    return reference, session


@pytest.mark.parametrize("max_batch", [1, 2], ids=["two pipelines", "batch profile 2..4"])
def test_sessions_on_the_cuda_device_render_what_onnx_runtime_renders(gpu, folder, images, max_batch):
    reference, session = _sessions(folder, max_batch)
    edit = lambda wplus: wplus + 0.5  # noqa: E731
    inversion = session.invert(images.numpy())
    np.testing.assert_array_equal(session.edit(inversion, edit),
                                  reference.edit(reference.invert(images.numpy()), edit))
    assert session.device.name == "tensorrt (fp16, NVIDIA H100 (fake))"


def test_bindings_are_replayed_as_cuda_graphs_after_one_plain_run(gpu, folder, images):
    reference, session = _sessions(folder)
    inversion = session.invert(images.numpy())
    first = session.edit(inversion)
    plain = {name: engine.plain_runs for name, engine in gpu.trt.engines.items()}
    launches = gpu.cudart.graph_launches
    for _ in range(2):
        np.testing.assert_array_equal(session.edit(inversion), first)
    assert {name: engine.plain_runs for name, engine in gpu.trt.engines.items()} == plain
    assert gpu.cudart.graph_launches > launches


def test_a_failed_capture_falls_back_to_plain_runs_and_is_not_retried(gpu, folder, images):
    reference, session = _sessions(folder)
    for engine in gpu.trt.engines.values():
        engine.refuse_capture = True
    inversion = session.invert(images.numpy())
    expected = reference.edit(reference.invert(images.numpy()))
    for _ in range(3):
        np.testing.assert_array_equal(session.edit(inversion), expected)
    assert gpu.cudart.graph_launches == 0
    lanes = session.device._lanes
    assert all(graph is None for lane in lanes for graph in lane.graphs.values()) and lanes[0].graphs


def test_without_cuda_graphs_every_run_is_a_plain_enqueue(gpu, folder, images):
    _, session = _sessions(folder, cuda_graphs=False)
    inversion = session.invert(images.numpy())
    session.edit(inversion)
    session.edit(inversion)
    assert gpu.cudart.graph_launches == 0


def test_each_pipeline_shares_one_scratch_buffer_between_its_contexts(gpu, folder, images):
    _, session = _sessions(folder)
    session.edit(session.invert(images.numpy()))
    assert all(lane.contexts for lane in session.device._lanes)
    for lane in session.device._lanes:
        assert {context.scratch for context in lane.contexts.values()} == {(lane.scratch.address, lane.scratch.nbytes)}


def test_a_batch_outside_every_profile_asks_for_a_rebuild(gpu, folder, images):
    backend = trt_backend.TensorRTBackend(folder)
    with pytest.raises(BackendError, match="batches 1..1, 2..4, not 5.*warpres build --batch"):
        backend.run(folder.manifest.stages[0], {"image": np.zeros((5, *images.shape[1:]), np.float32)})


def test_stage_timings_come_from_cuda_events(gpu, folder, images):
    _, session = _sessions(folder)
    session.device.start_timing()
    session.edit(session.invert(images.numpy()))
    times = session.device.stop_timing()
    assert set(times) == {stage.name for stage in folder.manifest.stages}
    assert all(t == 0.25e-3 for runs in times.values() for t in runs)


def test_engines_for_another_gpu_or_export_or_with_plugins_are_refused(gpu, folder):
    write_engines(folder, target=EngineTarget("tensorrt", FAKE_TRT.version, "sm_89"))
    with pytest.raises(BackendError, match="compute capability sm_89.*rebuild"):
        trt_backend.TensorRTBackend(folder)
    write_engines(folder, embedded_plugins=("libwarpres_plugins.so",))
    with pytest.raises(BackendError, match="embeds plugin libraries.*allow-embedded-plugins"):
        trt_backend.TensorRTBackend(folder)
    trt_backend.TensorRTBackend(folder, allow_embedded_plugins=True)
    assert gpu.trt.runtime.engine_host_code_allowed is True


def test_without_a_gpu_tensorrt_is_never_imported(folder, monkeypatch):
    monkeypatch.setattr(availability, "cuda_devices", lambda: CudaReport((), None, "13.0", "no usable CUDA device"))
    monkeypatch.setattr(availability, "import_tensorrt", lambda: pytest.fail("TensorRT imported without a GPU"))
    with pytest.raises(BackendError, match=r"needs an NVIDIA GPU: no GPU \(no usable CUDA device\)"):
        trt_backend.TensorRTBackend(folder)


def _fake_build(path, precision, profiles, progress):
    write_engines(open_model_folder(path), precision)


def test_selftest_passes_when_every_stage_and_the_edit_match(gpu, folder):
    report = selftest.run_selftest(folder.path, build=_fake_build, progress=False)
    assert report.passed, report.render()
    checked = {(check.precision, check.stage) for check in report.stages}
    assert checked == {(p, stage.name) for p in ("fp32", "fp16") for stage in folder.manifest.stages}
    assert report.image_psnr == {"fp32": float("inf"), "fp16": float("inf")}


def test_selftest_fails_naming_the_stage_that_differs(gpu, folder, monkeypatch):
    run = OnnxRuntimeBackend.run

    def off_in_flow(self, stage, feeds):
        outputs = run(self, stage, feeds)
        return {name: value + 0.1 for name, value in outputs.items()} if stage.name == "flow" else outputs

    monkeypatch.setattr(gpu.trt.ort, "run", off_in_flow.__get__(gpu.trt.ort))
    report = selftest.run_selftest(folder.path, precisions=("fp16",), build=_fake_build, progress=False)
    assert not report.passed
    assert {check.stage for check in report.stages if not check.passed} == {"flow"}
    assert "flow" in report.render() and "selftest FAILED" in report.render()


def test_selftest_without_a_gpu_reports_it_and_fails(folder, monkeypatch):
    no_cuda = CudaReport((), None, None, "cuda-python is not installed")
    monkeypatch.setattr(availability, "cuda_devices", lambda: no_cuda)
    report = selftest.run_selftest(folder.path, build=_fake_build, progress=False)
    assert not report.passed and report.problems == ["no GPU (cuda-python is not installed)"]


def test_selftest_with_the_pytorch_model_checks_every_stage_against_it_too(gpu, folder):
    torch.manual_seed(0)
    model = tiny_editing_model("warpres")
    assert model_id(model) == folder.manifest.model_id  # the model the folder was exported from
    report = selftest.run_selftest(folder.path, precisions=("fp32",), build=_fake_build, progress=False,
                                   reference_model=model)
    assert report.passed, report.render()
    assert all(check.pytorch_error is not None and check.pytorch_error < 1e-4 for check in report.stages)
    with torch.no_grad():
        model.branch.refiner.out_layer.bias.add_(0.5)  # a model that is not what the engines were built from
    report = selftest.run_selftest(folder.path, precisions=("fp32",), build=_fake_build, progress=False,
                                   reference_model=model)
    assert not report.passed
    assert {check.stage for check in report.stages if not check.passed} == {"fuse"}
    assert "error vs PyTorch" in report.render()


def test_selftest_refuses_plugin_graphs_which_onnx_runtime_cannot_be_compared_on(gpu, folder, tmp_path):
    copy = tmp_path / "plugin"
    shutil.copytree(folder.path, copy)
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest | {"flavour": "plugin"}))
    report = selftest.run_selftest(copy, build=_fake_build, progress=False)
    assert not report.passed
    assert "plugin graphs; the self-test compares TensorRT with ONNX Runtime" in report.problems[0]


def test_bench_measures_tensorrt_with_and_without_cuda_graphs(gpu, folder):
    from click.testing import CliRunner

    from warpres.cli import main

    result = CliRunner().invoke(main, ["bench", str(folder.path), "--backend", "tensorrt", "--batch", "1,2",
                                       "--iterations", "1", "--no-reference"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| tensorrt")]
    graphs = [row for row in rows if "no CUDA graphs" not in row]
    assert len(graphs) == 4 and len(rows) == 8  # two batch sizes, run and stage tables
    assert "no ONNX Runtime CUDA to compare with" in result.output


def test_doctor_reports_a_folders_engines_and_whether_they_run_here(gpu, folder):
    from click.testing import CliRunner

    from warpres.cli import main

    write_engines(folder, embedded_plugins=("libwarpres_plugins.so",))
    result = CliRunner().invoke(main, ["doctor", str(folder.path)])
    assert result.exit_code == 0, result.output
    assert "engines fp16    6 of 6 stages; tensorrt 11.4.0.106, sm_90; batch profiles [(1, 1, 1), (2, 2, 4)]; " \
           "embedded plugins: libwarpres_plugins.so" in result.output
    assert "match this TensorRT, this GPU and the exported graphs" in result.output
    write_engines(folder, target=EngineTarget("tensorrt", "10.16.1.11", "sm_90"))
    result = CliRunner().invoke(main, ["doctor", str(folder.path)])
    assert "cannot run here:" in result.output and "was built by tensorrt 10.16.1.11" in result.output
