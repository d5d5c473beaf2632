"""Claims about building TensorRT engines from an exported model folder (warpres.export.engines)
and the FP16 graphs they are built from (warpres.calibration.fp16).

TensorRT-RTX stands in for TensorRT: it parses and builds on a machine without a GPU (TensorRT
proper cannot even be imported there). The file skips without tensorrt-rtx or ModelOpt.
One tiny WarpRes model is exported once, without validation (tracing dominates: ~30 s on a busy
2-core machine); FP32 and FP16 engines for its six stages are built once each (~2.5 s and ~6 s,
the latter including AutoCast).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil

import onnx
import pytest
import torch

pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX: pip install 'warpres[tensorrt-test]'")
pytest.importorskip("modelopt.onnx.autocast", reason="needs ModelOpt AutoCast: pip install 'warpres[fp16]'")

from click.testing import CliRunner  # noqa: E402

from tests.conftest import copy_of  # noqa: E402
from warpres.cli import main  # noqa: E402
from warpres.errors import BackendError, ExportError  # noqa: E402
from warpres.export.engines import build_engine, build_features, build_model_engines  # noqa: E402
from warpres.calibration.fp16 import FP32_OP_TYPES, compare_fp16, grid_math_nodes  # noqa: E402
from warpres.export.validation import validation_activations  # noqa: E402
from warpres.runtime.tensorrt.availability import TensorRTInfo, import_tensorrt  # noqa: E402
from warpres.runtime.tensorrt.engine_file import (  # noqa: E402
    EngineHeader,
    EngineTarget,
    check_engine_header,
    current_compute_capability,
    read_engine_header,
)
from warpres.stages import ModelFolder, stages_for  # noqa: E402

PROFILES = ((1, 2, 4),)


@pytest.fixture(scope="module")
def model(exports):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second intra-op thread only costs
    yield exports("warpres").model
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def folder(exports, tmp_path_factory) -> ModelFolder:
    """The shared export, copied: this module builds engines into it."""
    return copy_of(exports("warpres").folder, tmp_path_factory.mktemp("warpres") / "model")


@pytest.fixture(scope="module")
def fp32_engines(folder):
    return build_model_engines(folder.path, precision="fp32", profiles=PROFILES, progress=False)


@pytest.fixture(scope="module")
def fp16_engines(folder):
    return build_model_engines(folder.path, precision="fp16", profiles=PROFILES, progress=False)


def broken_copy(folder: ModelFolder, tmp_path, alter) -> str:
    proto = onnx.load(str(folder.path / "fuse.onnx"))
    alter(proto.graph.node[3])
    path = tmp_path / "broken.onnx"
    onnx.save(proto, str(path))
    return str(path)


# --- engines --------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_every_stage_builds_an_engine_with_a_dynamic_batch_profile(request, folder, precision):
    paths = request.getfixturevalue(f"{precision}_engines")
    names = [stage.name for stage in stages_for("warpres")]
    assert [p.name for p in paths] == [f"{name}.{precision}.engine" for name in names]
    for path, name in zip(paths, names, strict=True):
        header, offset = read_engine_header(path)
        assert (header.stage, header.precision, header.profiles) == (name, precision, PROFILES)
        assert header.source_sha256 == folder.manifest.graphs[name].sha256  # the FP32 graph, also for fp16
        assert header.target.flavour == import_tensorrt()[1].flavour and path.stat().st_size > offset + 100_000


def test_the_header_round_trips_and_a_matching_runtime_accepts_the_engine(fp32_engines):
    header, _ = read_engine_header(fp32_engines[0])
    assert EngineHeader.from_dict(header.to_dict()) == header
    check_engine_header(header, header.target)


def test_an_engine_from_another_tensorrt_or_gpu_is_refused_with_the_rebuild_command(fp32_engines):
    header, _ = read_engine_header(fp32_engines[0])
    built = header.target
    other_version = dataclasses.replace(built, version="0.9.0.1")
    expected = (rf"built by {built.flavour} {re.escape(built.version)}; "
                rf"this is {built.flavour} 0\.9\.0\.1.*`warpres build`")
    with pytest.raises(BackendError, match=expected):
        check_engine_header(header, other_version)
    built_for_ada = dataclasses.replace(header, target=dataclasses.replace(header.target, compute_capability="sm_89"))
    with pytest.raises(BackendError, match=r"compute capability sm_89; this GPU is sm_90.*`warpres build`"):
        check_engine_header(built_for_ada, dataclasses.replace(header.target, compute_capability="sm_90"))
    check_engine_header(header, dataclasses.replace(header.target, compute_capability="sm_90"))  # portable: any GPU


def test_a_file_without_the_header_is_not_taken_for_an_engine(folder):
    with pytest.raises(BackendError, match="not a warpres TensorRT engine"):
        read_engine_header(folder.path / "fuse.onnx")


@pytest.mark.parametrize(("alter", "expected"), [
    (lambda node: setattr(node, "op_type", "NoSuchOp"), r"node 3 \(node_sub_4, NoSuchOp\).*Plugin not found"),
    (lambda node: node.input.__setitem__(0, "nowhere"), r"node 3 \(node_sub_4, Sub\).*input was not registered"),
], ids=["unknown-op", "missing-input"])
def test_a_broken_graph_fails_with_the_parser_errors(folder, tmp_path, alter, expected):
    with pytest.raises(ExportError, match=f"ONNX parser rejected the graph:\\s+{expected}"):
        build_engine(broken_copy(folder, tmp_path, alter), tmp_path / "broken.engine", profiles=PROFILES)
    assert not (tmp_path / "broken.engine").exists()


@pytest.mark.skipif(current_compute_capability() is not None, reason="the claim is about a machine without a GPU")
def test_a_failed_build_raises_the_builder_errors(folder, tmp_path):
    """TensorRT-RTX needs CUDA to compile a refittable engine: the builder's own message surfaces."""
    with pytest.raises(ExportError, match=r"could not build an engine:\s+IBuilder::buildSerializedNetwork"):
        build_engine(folder.path / "fuse.onnx", tmp_path / "fuse.engine", profiles=PROFILES, refittable=True)


def test_batch_profiles_must_be_ordered(folder, tmp_path):
    with pytest.raises(ExportError, match="min <= opt <= max"):
        build_engine(folder.path / "fuse.onnx", tmp_path / "fuse.engine", profiles=[(4, 2, 8)])


# --- the version gate ------------------------------------------------------------------------


def test_only_tensorrt_10_is_asked_for_a_strongly_typed_network():
    trt, _ = import_tensorrt()
    strongly_typed = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert build_features(trt, TensorRTInfo("tensorrt", "10.16.1.11", 10)).network_flags == strongly_typed
    assert build_features(trt, TensorRTInfo("tensorrt", "11.4.0.106", 11)).network_flags == 0
    rtx = build_features(trt, TensorRTInfo("tensorrt-rtx", "1.7.1.116", 1))
    assert (rtx.network_flags, rtx.timing_cache) == (0, False)
    with pytest.raises(BackendError, match="TensorRT >= 10"):
        build_features(trt, TensorRTInfo("tensorrt", "8.6.1", 8))


def test_without_tensorrt_the_error_names_the_pip_command(monkeypatch):
    def unavailable(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(importlib, "import_module", unavailable)
    with pytest.raises(BackendError, match=r"pip install tensorrt-cu13.*pip install 'warpres\[tensorrt-test\]'"):
        import_tensorrt()


def test_tensorrt_rtx_engines_are_recorded_as_portable_and_tensorrt_ones_as_this_gpus():
    rtx = TensorRTInfo("tensorrt-rtx", "1.7.1.116", 1)
    assert EngineTarget.current(rtx).compute_capability is None
    assert EngineTarget.current(TensorRTInfo("tensorrt", "10.16.1.11", 10)).compute_capability == \
        current_compute_capability()


# --- FP16 graphs -----------------------------------------------------------------------------


def _float_types(proto: onnx.ModelProto) -> dict[str, int]:
    """tensor name -> elem_type, after shape inference (initializers and graph I/O included)."""
    inferred = onnx.shape_inference.infer_shapes(proto)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


@pytest.mark.parametrize("stage", ["synthesis_head", "synthesis_tail", "flow", "fuse"])
def test_fp16_keeps_the_style_demodulation_clamp_and_grid_math_in_fp32(folder, fp16_engines, stage):
    source = onnx.load(str(folder.path / f"{stage}.onnx"))
    converted = onnx.load(str(folder.path / "engines" / f"{stage}.fp16.onnx"))
    kept = set(grid_math_nodes(source.graph))
    types = _float_types(converted)
    by_name = {node.name: node for node in converted.graph.node}
    checked = 0
    for original in source.graph.node:
        if original.op_type in FP32_OP_TYPES or original.name in kept:
            node = by_name[original.name]
            floats = [types[t] for t in [*node.input[:1], *node.output] if types.get(t) in (1, 10)]
            assert floats and set(floats) == {onnx.TensorProto.FLOAT}, (node.name, node.op_type, floats)
            checked += 1
    assert checked >= 10
    convs = [node for node in converted.graph.node if node.op_type == "Conv"]
    assert convs and all(types[node.output[0]] == onnx.TensorProto.FLOAT16 for node in convs)
    assert {v.type.tensor_type.elem_type for v in [*converted.graph.input, *converted.graph.output]} == {1}


def test_fp16_graphs_stay_within_tolerance_of_the_fp32_graphs(model, folder, fp16_engines):
    graphs = {stage.name: folder.path / "engines" / f"{stage.name}.fp16.onnx" for stage in folder.manifest.stages}
    report = compare_fp16(folder, graphs, validation_activations(model, (1, 3)))
    assert report.ok, "\n".join(report.table())
    assert {e.stage for e in report.errors} == set(graphs)
    # FP16 really ran: an error, but under 0.5 % of each output's scale (measured: <= 0.13 %)
    worst = report.worst().values()
    assert all(0 < e.max_rel < 5e-3 for e in worst), "\n".join(report.table())


def test_warpres_build_writes_one_engine_per_stage_with_the_profiles_asked_for(folder, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(folder.path, copy, ignore=shutil.ignore_patterns("engines"))
    result = CliRunner().invoke(main, ["build", str(copy), "--precision", "fp32", "--profiles", "1,4"])
    assert result.exit_code == 0, result.output
    headers = [read_engine_header(path)[0] for path in sorted((copy / "engines").glob("*.fp32.engine"))]
    assert len(headers) == len(folder.manifest.stages)
    assert all(header.profiles == ((1, 1, 1), (2, 4, 4)) for header in headers)
