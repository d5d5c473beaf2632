"""TensorRT calibration on the tiny WarpRes model: ModelOpt Q/DQ graphs where measured, none in the
excluded nodes, and TensorRT-RTX (standing in for TensorRT without a GPU) parses and builds the
int8 and mixed engines."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from conftest import copy_of

pytest.importorskip("modelopt.onnx.quantization", reason="needs ModelOpt: pip install 'warpres[calibration]'")
pytest.importorskip("openvino")

from warpres.calibration.calibrate import calibrate  # noqa: E402
from warpres.calibration.data import both_signs  # noqa: E402
from warpres.calibration.tensorrt import grid_math_sharing_nodes, output_nodes  # noqa: E402
from warpres.edits import parse_edit_spec  # noqa: E402
from warpres.errors import ExportError  # noqa: E402
from warpres.media.imageio import write_image  # noqa: E402
from warpres.stages import MANIFEST_NAME, open_model_folder  # noqa: E402


@pytest.fixture(scope="module")
def calibrated(exports, tmp_path_factory):
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for i in range(8):
        low = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
        write_image(photos / f"photo-{i}.png", np.kron(low, np.ones((8, 8, 1), dtype=np.uint8)))
    folder = copy_of(exports("warpres").folder, tmp_path_factory.mktemp("trt") / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        result = calibrate(folder.path, photos, target="tensorrt", precision="int8", bar_db=0.0, progress=False,
                           edit_sets=both_signs(parse_edit_spec("smile=1.5")))
    return open_model_folder(folder.path), result


def _quantized_inputs(graph: onnx.GraphProto) -> dict[str, bool]:
    """node name -> whether any of its inputs comes from a DequantizeLinear."""
    producer = {output: node for node in graph.node for output in node.output}
    return {node.name: any(name in producer and producer[name].op_type == "DequantizeLinear"
                           for name in node.input) for node in graph.node}


def test_qdq_where_expected_and_none_in_excluded_nodes(calibrated):
    folder, result = calibrated
    calibration = folder.manifest.calibrations["tensorrt"]
    assert set(calibration.stages) == {stage.name for stage in folder.manifest.stages}
    for stage in folder.manifest.stages:
        graph = onnx.load(str(folder.calibrated_graph_path("tensorrt", stage))).graph
        ops = [node.op_type for node in graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops, stage.name
        quantized = _quantized_inputs(graph)
        assert any(quantized[node.name] for node in graph.node if node.op_type == "Conv"), stage.name
        if "in float" in calibration.plan["recipes"][stage.name]:
            source = onnx.load(str(folder.graph_path(stage)), load_external_data=False).graph
            excluded = set(output_nodes(source)) | set(grid_math_sharing_nodes(source)) | {
                node.name for node in source.node if node.op_type == "Mul"}
            leaked = sorted(name for name in excluded if quantized.get(name))
            assert not leaked, f"{stage.name}: excluded nodes fed by Q/DQ: {leaked}"


def test_report_is_measured_on_the_qdq_graphs(calibrated):
    folder, result = calibrated
    report = result.report
    assert report.target == "tensorrt" and report.meets_bar
    assert {o.stage for o in report.outputs} == {stage.name for stage in folder.manifest.stages}
    assert all(0 <= o.mean_rel < 1 for o in report.outputs), report.outputs
    for stage in folder.manifest.stages:  # some output of every stage moved (tiny layers may stay float)
        assert max(o.mean_rel for o in report.outputs if o.stage == stage.name) > 0, stage.name
    assert 10 < report.min_psnr_db < 80  # INT8 changed the images, and not into noise


def test_tensorrt_rtx_builds_int8_and_mixed_engines(calibrated, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX: pip install 'warpres[tensorrt-test]'")
    from warpres.export.engines import build_model_engines
    from warpres.runtime.tensorrt.engine_file import built_precisions, read_engine_header

    folder = copy_of(calibrated[0], tmp_path / "model")
    paths = build_model_engines(folder.path, precision="int8", profiles=((1, 1, 2),), progress=False)
    assert [read_engine_header(path)[0].precision for path in paths] == ["int8"] * len(paths)
    # a mixed calibration: the tail left float, built from its FP16 graph
    data = json.loads((folder.path / MANIFEST_NAME).read_text())
    del data["calibration"]["tensorrt"]["stages"]["synthesis_tail"]
    data["calibration"]["tensorrt"]["precision"] = "mixed"
    (folder.path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ExportError, match="calibration is mixed"):
        build_model_engines(folder.path, precision="int8", progress=False)
    build_model_engines(folder.path, precision="mixed", profiles=((1, 1, 2),), progress=False)
    assert (folder.path / "engines" / "synthesis_tail.fp16.onnx").is_file()
    folder = open_model_folder(folder.path)
    # The int8 engines came from the calibration before: its tail engine is no longer the pinned one.
    assert built_precisions(folder, picked_by_default=True)[0] == "mixed"
    assert "int8" not in built_precisions(folder)
    data["calibration"]["tensorrt"]["meets_bar"] = False
    (folder.path / MANIFEST_NAME).write_text(json.dumps(data))
    assert "mixed" not in built_precisions(open_model_folder(folder.path), picked_by_default=True)


def test_building_int8_without_a_calibration_says_what_to_run(exports):
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX: pip install 'warpres[tensorrt-test]'")
    from warpres.export.engines import build_model_engines

    with pytest.raises(ExportError, match="no tensorrt calibration.*warpres calibrate"):
        build_model_engines(exports("warpres").folder.path, precision="int8", progress=False)


def test_engines_from_an_earlier_calibration_are_refused_after_recalibrating(calibrated, tmp_path):
    pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX: pip install 'warpres[tensorrt-test]'")
    from warpres.errors import BackendError
    from warpres.export.engines import build_model_engines
    from warpres.files import sha256_file
    from warpres.runtime.tensorrt.engine_file import EngineTarget, check_engines, stale_calibrated_stages

    folder = copy_of(calibrated[0], tmp_path / "model")
    build_model_engines(folder.path, precision="int8", profiles=((1, 1, 2),), progress=False)
    assert stale_calibrated_stages(open_model_folder(folder.path), "int8") == []
    # A recalibration that changed the encoder's Q/DQ graph (a new file, pinned anew).
    encoder = folder.manifest.stages[0]
    path = folder.calibrated_graph_path("tensorrt", encoder)
    graph = onnx.load(path)
    graph.doc_string = "recalibrated"
    onnx.save(graph, path)
    data = json.loads((folder.path / MANIFEST_NAME).read_text())
    data["calibration"]["tensorrt"]["stages"][encoder.name]["sha256"] = sha256_file(path)
    (folder.path / MANIFEST_NAME).write_text(json.dumps(data))
    recalibrated = open_model_folder(folder.path)
    assert stale_calibrated_stages(recalibrated, "int8") == [encoder.name]
    from warpres.runtime.tensorrt.availability import import_tensorrt

    with pytest.raises(BackendError, match="built from an earlier calibration of encoder.*--precision int8"):
        check_engines(recalibrated, "int8", EngineTarget.current(import_tensorrt()[1]))
