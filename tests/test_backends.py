"""ONNX Runtime and OpenVINO backends on exported tiny models: parity with the PyTorch stage
modules, feed checks, backend selection, the OpenVINO model cache and bad files."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from warpres.errors import BackendError
from warpres.export import spec_for
from warpres.models.subgraphs import stage_module
from warpres.runtime.backends import BACKEND_NAMES, available, create_backend, load_stage_graph
from warpres.runtime.backends import onnxruntime as ort_backend
from warpres.runtime.backends import openvino as ov_backend
from warpres.runtime.backends.onnxruntime import OnnxRuntimeBackend, execution_providers
from warpres.runtime.backends.openvino import OpenVinoBackend, resolve_precision
from warpres.runtime.device import HostDevice
from warpres.runtime.tensorrt.gpu import nvidia_gpu_present
from warpres.stages import ENCODER, RESIDUAL_ENCODER, SYNTHESIS_TAIL, open_model_folder

REPO = Path(__file__).resolve().parents[1]

# An output passes when max |backend - torch| <= ATOL + RTOL * max |torch|.
# fp32: the same float32 graph, only summation order and kernels differ (ORT / oneDNN vs ATen);
# measured <= 1.1e-6 relative on these models, so 1e-5 keeps a 10x margin and still catches
# any wrong op, which shows at 1e-2 or more.
F32 = (1e-6, 1e-5)
# bf16: OpenVINO rounds conv operands to an 8-bit mantissa (2^-9 = 0.2 % each), compounded over
# up to ~15 layers per stage; measured (3 seeds, batch 1 and 3) <= 1.9e-2 relative on the worst
# element (the tail's image) and <= 2.6e-3 on the mean. Allow 5e-2 and 1e-2: loose enough for
# rounding, tight enough that a systematic fault (wrong weights, a lost bias) fails the mean.
BF16 = (0.0, 5e-2)
BF16_MEAN = 1e-2

KINDS = {
    "onnxruntime": lambda folder, cache: OnnxRuntimeBackend(folder),
    "openvino-fp32": lambda folder, cache: OpenVinoBackend(folder, precision="fp32", cache_dir=cache),
    "openvino-bf16": lambda folder, cache: OpenVinoBackend(folder, precision="bf16", cache_dir=cache),
}


@pytest.fixture(scope="module")
def exported(exports):
    """family -> (model, its exported folder): conftest's session-wide export."""
    return lambda family: (exports(family).model, exports(family).folder)


@pytest.fixture(scope="module")
def ov_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("openvino-cache")


@pytest.fixture(autouse=True)
def no_user_cache(monkeypatch, tmp_path):
    """A backend created without cache_dir writes under tmp_path, never into ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def _stage_case(model, stage, batch: int, seed: int = 3):
    """Realistic numpy feeds of `stage` and the PyTorch stage module's outputs for them."""
    inputs = spec_for(stage).dummy_inputs(model, batch, seed)
    with torch.no_grad():
        outputs = stage_module(model, stage)(*inputs.values())
    return ({name: value.numpy() for name, value in inputs.items()},
            {name: value.numpy() for name, value in zip(stage.outputs, outputs, strict=True)})


def _assert_close(got: np.ndarray, want: np.ndarray, tolerance: tuple[float, float], where: str,
                  mean_rtol: float | None = None) -> None:
    assert got.shape == want.shape and got.dtype == np.float32, f"{where}: {got.shape} {got.dtype}"
    scale = float(np.abs(want).max())
    error = np.abs(got - want)
    atol, rtol = tolerance
    assert error.max() <= atol + rtol * scale, f"{where}: max error {error.max():.3g} (output max {scale:.3g})"
    if mean_rtol is not None:
        assert error.mean() <= mean_rtol * scale, f"{where}: mean error {error.mean():.3g} (output max {scale:.3g})"


# -- parity -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("family", ["styleres", "warpres"])
def test_every_stage_matches_the_pytorch_stage_module(exported, ov_cache, family, kind):
    model, folder = exported(family)
    backend = KINDS[kind](folder, ov_cache)
    tolerance, mean_rtol = (BF16, BF16_MEAN) if kind.endswith("bf16") else (F32, None)
    for batch in (1, 3):
        for stage in folder.manifest.stages:
            feeds, want = _stage_case(model, stage, batch)
            got = backend.run(stage, feeds)
            assert sorted(got) == sorted(stage.outputs)
            for name in stage.outputs:
                _assert_close(got[name], want[name], tolerance, f"{backend.name} {stage.name}.{name} batch {batch}",
                              mean_rtol)


def test_openvino_precision_per_stage_keeps_named_stages_in_fp32(exported, ov_cache):
    if "BF16" not in ov_backend.cpu_capabilities(ov_backend.import_openvino().Core()):
        pytest.skip("this CPU has no BF16: every stage runs in fp32")
    model, folder = exported("styleres")
    backend = OpenVinoBackend(folder, precision={"synthesis_tail": "fp32"}, cache_dir=ov_cache)
    assert backend.name == "openvino (bf16, fp32: synthesis_tail, CPU)"
    feeds, want = _stage_case(model, SYNTHESIS_TAIL, 2)
    _assert_close(backend.run(SYNTHESIS_TAIL, feeds)["image"], want["image"], F32, "fp32 tail")


def test_openvino_bf16_really_runs_in_bf16(exported, ov_cache):
    if "BF16" not in ov_backend.cpu_capabilities(ov_backend.import_openvino().Core()):
        pytest.skip("this CPU has no BF16")
    model, folder = exported("styleres")
    feeds, want = _stage_case(model, ENCODER, 2)
    got = OpenVinoBackend(folder, precision="bf16", cache_dir=ov_cache).run(ENCODER, feeds)["enc_feat"]
    assert np.abs(got - want["enc_feat"]).max() > 10 * (F32[0] + F32[1] * np.abs(want["enc_feat"]).max())


def test_openvino_outputs_are_copies_not_views_of_reused_buffers(exported, ov_cache):
    model, folder = exported("styleres")
    backend = OpenVinoBackend(folder, precision="fp32", cache_dir=ov_cache)
    first_feeds, _ = _stage_case(model, ENCODER, 2, seed=1)
    second_feeds, _ = _stage_case(model, ENCODER, 2, seed=2)
    first = backend.run(ENCODER, first_feeds)
    kept = {name: value.copy() for name, value in first.items()}
    backend.run(ENCODER, second_feeds)
    for name in ENCODER.outputs:
        np.testing.assert_array_equal(first[name], kept[name])


# -- feeds ------------------------------------------------------------------------------------

def _bad_feeds(feeds: dict[str, np.ndarray], fault: str) -> tuple[dict[str, np.ndarray], str]:
    """`feeds` of the residual encoder (enc_feat, feat) with one fault, and the tensor it names."""
    feeds = dict(feeds)
    if fault == "missing":
        del feeds["feat"]
        return feeds, "feat"
    if fault == "unexpected":
        return {**feeds, "bogus": feeds["feat"]}, "bogus"
    if fault == "float64":
        return {**feeds, "enc_feat": feeds["enc_feat"].astype(np.float64)}, "enc_feat"
    if fault == "rank":
        return {**feeds, "enc_feat": feeds["enc_feat"][0]}, "enc_feat"
    if fault == "channels":
        return {**feeds, "enc_feat": feeds["enc_feat"][:, :-1]}, "enc_feat"
    if fault == "batch":
        return {**feeds, "feat": feeds["feat"][:1]}, "feat"
    raise AssertionError(fault)


@pytest.mark.parametrize("fault", ["missing", "unexpected", "float64", "rank", "channels", "batch"])
@pytest.mark.parametrize("kind", ["onnxruntime", "openvino-fp32"])
def test_bad_feed_raises_naming_the_tensor(exported, ov_cache, kind, fault):
    model, folder = exported("styleres")
    feeds, _ = _stage_case(model, RESIDUAL_ENCODER, 2)
    bad, tensor = _bad_feeds(feeds, fault)
    with pytest.raises(BackendError, match=f"residual_encoder.*{tensor}"):
        KINDS[kind](folder, ov_cache).run(RESIDUAL_ENCODER, bad)


def test_non_contiguous_feeds_are_accepted(exported, ov_cache):
    model, folder = exported("styleres")
    feeds, want = _stage_case(model, ENCODER, 2)
    flipped = {"image": np.ascontiguousarray(feeds["image"][:, :, ::-1])[:, :, ::-1]}  # same values, negative strides
    assert not flipped["image"].flags.c_contiguous
    got = OnnxRuntimeBackend(folder).run(ENCODER, flipped)
    _assert_close(got["wplus"], want["wplus"], F32, "encoder.wplus")


# -- selection --------------------------------------------------------------------------------

def test_available_reports_every_backend_and_why_not():
    report = available()
    assert set(report) == set(BACKEND_NAMES) - {"auto"}
    if not nvidia_gpu_present():  # TensorRT is asked for only once CUDA lists a GPU
        assert not report["tensorrt"].usable and report["tensorrt"].detail.startswith("no GPU (")


def test_auto_picks_openvino_here(exported):
    pytest.importorskip("openvino")
    if available()["onnxruntime"].detail.endswith("CUDA: yes"):
        pytest.skip("a CUDA GPU with ONNX Runtime's CUDA provider comes before OpenVINO")
    _, folder = exported("styleres")
    backend, reason = create_backend("auto", folder)
    assert backend.name.startswith("openvino (")
    assert reason.startswith(f"auto picked {backend.name}: tensorrt: ")


def test_auto_falls_back_to_onnxruntime_when_openvino_is_missing(exported, monkeypatch):
    if nvidia_gpu_present():
        pytest.skip("with a GPU, auto may pick ONNX Runtime CUDA before looking at OpenVINO")
    monkeypatch.setattr(ov_backend, "PACKAGE", "openvino_not_installed_here")
    assert not available()["openvino"].usable
    assert "pip install openvino" in available()["openvino"].detail
    _, folder = exported("styleres")
    backend, reason = create_backend("auto", folder)
    assert backend.name == "onnxruntime (CPU, fp32)"
    assert "openvino: OpenVINO is not installed" in reason and "pip install openvino" in reason


@pytest.mark.parametrize("module, backend_class, pip_name", [
    (ov_backend, OpenVinoBackend, "pip install openvino"),
    (ort_backend, OnnxRuntimeBackend, "pip install onnxruntime"),
])
def test_missing_package_names_what_to_install(exported, monkeypatch, module, backend_class, pip_name):
    monkeypatch.setattr(module, "PACKAGE", "not_installed_here")
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match=pip_name):
        backend_class(folder)


def test_auto_without_any_backend_says_what_to_install(exported, monkeypatch):
    monkeypatch.setattr(ov_backend, "PACKAGE", "not_installed_here")
    monkeypatch.setattr(ort_backend, "PACKAGE", "not_installed_here")
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match="no backend can run.*pip install onnxruntime.*pip install openvino"):
        create_backend("auto", folder)


def test_auto_skips_onnxruntime_for_bf16(exported, monkeypatch):
    monkeypatch.setattr(ov_backend, "PACKAGE", "not_installed_here")
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match="onnxruntime CPU: onnxruntime runs fp32, not bf16"):
        create_backend("auto", folder, precision="bf16")


@pytest.mark.parametrize("name, options, message", [
    ("torch", {}, "created by warpres.runtime.session.Session"),
    ("tensorrt", {}, "tensorrt is not available: no (GPU|engines)"),
    ("tflite", {}, "unknown backend 'tflite'"),
    ("onnxruntime", {"precision": "bf16"}, "^onnxruntime runs fp32, not bf16$"),
    ("tensorrt", {"precision": "bf16"}, "^tensorrt runs fp32 or fp16 or int8 or mixed, not bf16$"),  # refused before looking for a GPU
    ("openvino", {"precision": "fp16"}, "^openvino runs fp32 or bf16 or int8 or mixed, not fp16$"),
    ("openvino", {"precision": "fp8"}, "unknown precision 'fp8'; choose one of fp32, bf16, fp16, int8"),
    ("openvino", {"device": "cuda"}, "openvino takes the options cache_dir, threads; got device"),
    ("auto", {"device": "cpu"}, "auto picks the device"),
])
def test_create_backend_refuses_what_it_cannot_build(exported, name, options, message):
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match=message):
        create_backend(name, folder, **options)


@pytest.mark.parametrize("name, options, expected", [
    ("openvino", {"precision": "fp32", "threads": 1}, "openvino (fp32, CPU)"),
    ("openvino", {"precision": "f32", "threads": 1}, "openvino (fp32, CPU)"),  # f32: the alias of fp32
    ("onnxruntime", {"threads": 1}, "onnxruntime (CPU, fp32)"),
])
def test_explicit_backend_is_created_as_requested(exported, name, options, expected):
    model, folder = exported("styleres")
    backend, reason = create_backend(name, folder, **options)
    assert (backend.name, reason) == (expected, "requested")
    feeds, want = _stage_case(model, ENCODER, 1)
    _assert_close(backend.run(ENCODER, feeds)["wplus"], want["wplus"], F32, f"{name} encoder.wplus")


def test_cuda_device_puts_the_cuda_provider_first():
    assert execution_providers("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]


def test_cuda_device_without_the_cuda_provider_says_what_to_install(exported):
    if "CUDAExecutionProvider" in ort_backend.import_onnxruntime().get_available_providers():
        pytest.skip("this ONNX Runtime has the CUDA provider")
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match="no CUDAExecutionProvider.*pip install onnxruntime-gpu"):
        OnnxRuntimeBackend(folder, device="cuda")


# -- precision --------------------------------------------------------------------------------

@pytest.mark.parametrize("requested, capabilities, expected, warns", [
    (None, ("BF16", "FP32"), "bf16", False),
    (None, ("FP32",), "fp32", False),       # the default quietly takes what the CPU has
    ("bf16", ("BF16", "FP32"), "bf16", False),
    ("bf16", ("FP32",), "fp32", True),      # an explicit request that cannot be met is reported
    ("fp32", ("BF16", "FP32"), "fp32", False),
    ("f32", ("BF16", "FP32"), "fp32", False),  # the alias, read as fp32
])
def test_precision_resolution(requested, capabilities, expected, warns):
    precision, warning = resolve_precision(requested, capabilities)
    assert precision == expected and (warning is not None) == warns


def test_bf16_on_a_cpu_without_bf16_falls_back_to_fp32_with_a_warning(exported, monkeypatch, caplog, tmp_path):
    monkeypatch.setattr(ov_backend, "cpu_capabilities", lambda core: ("WINOGRAD", "FP32", "INT8"))
    model, folder = exported("styleres")
    with caplog.at_level(logging.WARNING, logger=ov_backend.__name__):
        backend = OpenVinoBackend(folder, precision="bf16", cache_dir=tmp_path)
    assert backend.name == "openvino (fp32, CPU)"
    assert [record.getMessage() for record in caplog.records] == [
        "openvino: bf16 requested but this CPU has no BF16 support (OpenVINO capabilities: WINOGRAD, FP32, INT8); "
        "running in fp32"]
    feeds, want = _stage_case(model, ENCODER, 1)
    _assert_close(backend.run(ENCODER, feeds)["wplus"], want["wplus"], F32, "encoder.wplus")


@pytest.mark.parametrize("precision, message", [
    ({"flow": "fp32"}, "names stages \\['flow'\\] this styleres model lacks"),
    ({"fuse": "fp16"}, "^openvino runs fp32 or bf16 or int8 or mixed, not fp16$"),
    ("int8", "no openvino calibration; run `warpres calibrate"),
    ({"fuse": "int8"}, "no openvino calibration; run `warpres calibrate"),
])
def test_bad_openvino_precision_is_refused(exported, precision, message):
    _, folder = exported("styleres")
    with pytest.raises(BackendError, match=message):
        OpenVinoBackend(folder, precision=precision)


# -- OpenVINO model cache ---------------------------------------------------------------------

def test_openvino_cache_is_populated_then_reused(exported, tmp_path):
    model, folder = exported("styleres")
    first = OpenVinoBackend(folder, precision="fp32", cache_dir=tmp_path)
    assert not first.loaded_from_cache(ENCODER)
    blobs = sorted(tmp_path.iterdir())
    assert blobs
    second = OpenVinoBackend(folder, precision="fp32", cache_dir=tmp_path)
    assert second.loaded_from_cache(ENCODER)
    assert sorted(tmp_path.iterdir()) == blobs
    feeds, _ = _stage_case(model, ENCODER, 2)
    np.testing.assert_array_equal(first.run(ENCODER, feeds)["wplus"], second.run(ENCODER, feeds)["wplus"])


def test_openvino_cache_does_not_mix_graphs_rewritten_at_the_same_path(exported, tmp_path):
    # OpenVINO keys a path-compiled blob by the path and the file's timestamp (1 s granularity);
    # the backend compiles the model itself, so its blob is keyed by the graph's content.
    styleres_model, styleres = exported("styleres")
    warpres_model, warpres = exported("warpres")
    folder = tmp_path / "model"
    shutil.copytree(styleres.path, folder)
    cache = tmp_path / "cache"
    OpenVinoBackend(open_model_folder(folder), precision="fp32", cache_dir=cache).warm_up([ENCODER])
    shutil.copyfile(warpres.graph_path(ENCODER), folder / ENCODER.filename)  # same shapes, other weights
    backend = OpenVinoBackend(open_model_folder(folder, verify=False), precision="fp32", cache_dir=cache)
    assert not backend.loaded_from_cache(ENCODER)
    feeds, want = _stage_case(warpres_model, ENCODER, 1)
    _assert_close(backend.run(ENCODER, feeds)["enc_feat"], want["enc_feat"], F32, "rewritten encoder")


def test_unwritable_cache_dir_compiles_without_cache(exported, tmp_path, caplog):
    _, folder = exported("styleres")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING, logger=ov_backend.__name__):
        backend = OpenVinoBackend(folder, precision="fp32", cache_dir=blocker / "cache")
    assert backend.cache_dir is None and "compiling without a cache" in caplog.text
    backend.warm_up([ENCODER])


# -- bad files --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["onnxruntime", "openvino-fp32"])
def test_garbage_graph_raises_naming_the_file(exported, tmp_path, kind):
    model, source = exported("styleres")
    folder = tmp_path / "model"
    shutil.copytree(source.path, folder)
    (folder / ENCODER.filename).write_bytes(b"\x08\x07not an onnx graph\xff" * 64)
    backend = KINDS[kind](open_model_folder(folder, verify=False), tmp_path / "cache")
    feeds, _ = _stage_case(model, ENCODER, 1)
    message = re.escape(str(folder / ENCODER.filename)) + ": .*cannot (load|read) the encoder graph"
    with pytest.raises(BackendError, match=message):
        backend.run(ENCODER, feeds)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino-fp32"])
def test_missing_graph_raises_naming_the_file(exported, tmp_path, kind):
    model, source = exported("styleres")
    folder = tmp_path / "model"
    shutil.copytree(source.path, folder)
    opened = open_model_folder(folder)
    (folder / ENCODER.filename).unlink()
    with pytest.raises(BackendError, match=re.escape(f"{folder / ENCODER.filename}: missing")):
        KINDS[kind](opened, tmp_path / "cache").warm_up()


def test_a_graph_whose_names_differ_from_the_stage_table_is_refused(exported):
    _, folder = exported("styleres")

    def renamed(path):
        return None, ["img"], ["wplus", "enc_feat"]

    with pytest.raises(BackendError, match=r"graph maps \['img'\].*stage encoder needs \['image'\].*re-export"):
        load_stage_graph(folder, ENCODER, renamed)


@pytest.mark.parametrize("kind", ["onnxruntime", "openvino-fp32"])
def test_an_onnx_backend_hands_the_session_a_host_device(exported, tmp_path, kind):
    _, folder = exported("styleres")
    backend = KINDS[kind](folder, tmp_path / "cache")
    device = backend.as_device()
    assert isinstance(device, HostDevice) and device.backend is backend and device.pipelines == 1


# -- deployability ----------------------------------------------------------------------------

def test_onnx_backends_run_without_torch_or_the_exporter(exported, tmp_path):
    _, folder = exported("styleres")
    script = f"""
import sys
import numpy as np
import warpres.runtime.backends.onnxruntime, warpres.runtime.backends.openvino
import warpres.runtime.tensorrt.availability, warpres.runtime.tensorrt.engine_file, warpres.runtime.tensorrt.gpu
import warpres.runtime.tensorrt.device, warpres.runtime.tensorrt.backend
assert "torch" not in sys.modules, "importing the backends imported torch"
from warpres.runtime.backends import create_backend
from warpres.stages import ENCODER, open_model_folder
folder = open_model_folder({str(folder.path)!r})
image = np.zeros((1, 3, {folder.manifest.image_size}, {folder.manifest.image_size}), np.float32)
for name in ("onnxruntime", "openvino", "auto"):
    backend, _ = create_backend(name, folder, **({{"cache_dir": {str(tmp_path)!r}}} if name == "openvino" else {{}}))
    backend.run(ENCODER, {{"image": image}})
leaked = sorted(m for m in sys.modules if m == "torch" or m.startswith(("torch.", "warpres.export")))
assert not leaked, leaked
"""
    subprocess.run([sys.executable, "-c", script], cwd=REPO, check=True, timeout=120,
                   env={"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HOME": str(tmp_path)})
