"""Claims about the plugin flavour: the graphs the TensorRT plugins (plugins/) are built into.

One export of conftest's tiny WarpRes model (both plugin ops occur in it) serves the module.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

import warpres.models.flow
import warpres.models.warpres
from tests.conftest import tiny_editing_model
from warpres.errors import BackendError, ExportError
from warpres.export import export_model, spec_for
from warpres.export.activations import pipeline_activations
from warpres.export.engines import build_model_engines
from warpres.export.graph import audit_graph
from warpres.export.plugin_graph import PLUGIN_DOMAIN, ReferenceRunner, plugin_node_counts
from warpres.models.editor import EditingModel
from warpres.models.stylegan2 import SynthesisLayer, ToRGBLayer
from warpres.models.subgraphs import stage_module
from warpres.runtime.tensorrt.plugin_library import PLUGIN_LIBRARY_ENV
from warpres.runtime.session import Session
from warpres.stages import PLUGIN, ModelFolder, stage_feeds


@pytest.fixture(scope="module")
def plugin_export(tmp_path_factory) -> tuple[EditingModel, ModelFolder]:
    model = tiny_editing_model("warpres")
    folder = export_model(model, tmp_path_factory.mktemp("plugin") / "model", flavour=PLUGIN, progress=False)
    return model, folder


def graphs(folder: ModelFolder) -> dict[str, onnx.ModelProto]:
    return {stage.name: onnx.load(str(folder.graph_path(stage))) for stage in folder.manifest.stages}


def ops_run_in_pytorch(model: EditingModel, stage, monkeypatch) -> Counter[str]:
    """How many modulated convs and warps the stage's PyTorch module runs (counted by hooks)."""
    inputs = spec_for(stage).dummy_inputs(model, batch=1)
    counts: Counter[str] = Counter()
    hooks = [module.register_forward_hook(lambda *_: counts.update(["ModulatedConv"]))
             for module in model.modules() if isinstance(module, (SynthesisLayer, ToRGBLayer))]

    def counting_warp(features, flow, original=warpres.models.flow.warp):
        counts.update(["FlowWarp"])
        return original(features, flow)

    monkeypatch.setattr(warpres.models.flow, "warp", counting_warp)
    monkeypatch.setattr(warpres.models.warpres, "warp", counting_warp)
    try:
        with torch.no_grad():
            stage_module(model, stage)(*inputs.values())
    finally:
        for hook in hooks:
            hook.remove()
        monkeypatch.undo()
    return counts


def test_every_modulated_conv_and_warp_is_one_plugin_node_and_nothing_portable_is_left(plugin_export, monkeypatch):
    model, folder = plugin_export
    for stage in folder.manifest.stages:
        proto = onnx.load(str(folder.graph_path(stage)))
        assert plugin_node_counts(proto) == ops_run_in_pytorch(model, stage, monkeypatch), stage.name
        assert "GridSample" not in {node.op_type for node in proto.graph.node}, stage.name
    counts = sum((plugin_node_counts(proto) for proto in graphs(folder).values()), Counter())
    assert counts["ModulatedConv"] == sum(isinstance(m, (SynthesisLayer, ToRGBLayer)) for m in model.modules())
    assert counts["FlowWarp"] >= 2  # the flow head's refinement and the residual warp


def test_plugin_nodes_carry_the_attributes_the_plugins_read(plugin_export):
    model, folder = plugin_export
    nodes = [node for proto in graphs(folder).values() for node in proto.graph.node if node.domain == PLUGIN_DOMAIN]
    conv_attributes = Counter((a["up"], a["demodulate"], a["padding"]) for a in (
        {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        for node in nodes if node.op_type == "ModulatedConv"))
    layers = [m for m in model.modules() if isinstance(m, (SynthesisLayer, ToRGBLayer))]
    expected = Counter((m.up, 1, 1) if isinstance(m, SynthesisLayer) else (1, 0, 0) for m in layers)
    assert conv_attributes == expected
    for node in nodes:
        attributes = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        assert (attributes["plugin_namespace"], attributes["plugin_version"]) == (b"warpres", b"1")


def test_the_export_validated_every_plugin_graph_against_pytorch(plugin_export):
    """Validation ran the graphs (plugin nodes as the PyTorch references) at batch 1 and 3."""
    _, folder = plugin_export
    report = json.loads((folder.path / "validation.json").read_text())
    assert set(report) == {stage.name for stage in folder.manifest.stages}
    for stage, outputs in report.items():
        for output, entry in outputs.items():
            assert entry["batches"] == [1, 3]
            assert entry["max_abs_error"] <= entry["atol"] + entry["rtol"] * entry["reference_max"], (stage, output)
    assert folder.manifest.flavour == PLUGIN


def test_a_plugin_graph_run_by_the_reference_runner_matches_the_pytorch_stage(plugin_export):
    model, folder = plugin_export
    stage = next(s for s in folder.manifest.stages if s.name == "synthesis_tail")
    inputs = stage_feeds(model.family, stage, pipeline_activations(model, 2, seed=7))
    with torch.no_grad():
        (want,) = stage_module(model, stage)(*inputs.values())
    (got,) = ReferenceRunner(folder.graph_path(stage)).run({k: v.numpy() for k, v in inputs.items()})
    assert np.max(np.abs(got - want.numpy())) <= 1e-5 * max(1.0, float(want.abs().max()))


def test_the_audit_refuses_plugin_nodes_in_a_portable_graph_and_malformed_ones(plugin_export):
    _, folder = plugin_export
    stage = next(s for s in folder.manifest.stages if s.name == "fuse")
    proto = onnx.load(str(folder.graph_path(stage)))
    with pytest.raises(ExportError, match=r"imports opsets .*'warpres': 1.*; the portable flavour imports \{'': 18\}"):
        audit_graph(proto, stage, 18, "portable")
    without_import = onnx.ModelProto()
    without_import.CopyFrom(proto)
    del without_import.opset_import[:]
    without_import.opset_import.add(domain="", version=18)
    with pytest.raises(ExportError, match=r"FlowWarp\) is not a standard ONNX op; the portable flavour"):
        audit_graph(without_import, stage, 18, "portable")
    warp = next(node for node in proto.graph.node if node.op_type == "FlowWarp")
    next(a for a in warp.attribute if a.name == "plugin_version").s = b"2"
    with pytest.raises(ExportError, match=r"plugin_namespace', 'plugin_version'\) = warpres, 1"):
        audit_graph(proto, stage, 18, PLUGIN)
    warp.op_type = "Warp"
    with pytest.raises(ExportError, match=r"neither a standard ONNX op nor one of the warpres plugins"):
        audit_graph(proto, stage, 18, PLUGIN)


def test_a_plugin_export_refuses_a_model_with_another_upsampling_filter(tmp_path):
    model = tiny_editing_model("inversion")
    layer = next(m for m in model.modules() if isinstance(m, SynthesisLayer) and m.up == 2)
    layer.resample_filter.mul_(1.5)
    with pytest.raises(ExportError, match=r"resample_filter is not the binomial \[1, 3, 3, 1\] filter"):
        export_model(model, tmp_path / "model", flavour=PLUGIN, validate=False, progress=False)


def test_cpu_backends_refuse_plugin_graphs(plugin_export):
    _, folder = plugin_export
    with pytest.raises(BackendError, match="plugin graphs run on TensorRT only"):
        Session(folder.path, backend="onnxruntime")


def test_building_a_plugin_export_needs_the_plugin_library_and_fp32(plugin_export, monkeypatch, tmp_path):
    _, folder = plugin_export
    monkeypatch.delenv(PLUGIN_LIBRARY_ENV, raising=False)
    with pytest.raises(ExportError, match=rf"pass --plugin-library or set {PLUGIN_LIBRARY_ENV}.*cmake -S \. -B build"):
        build_model_engines(folder.path, progress=False)
    with pytest.raises(ExportError, match="plugin-flavour engines are built in fp32"):
        build_model_engines(folder.path, precision="fp16", plugin_library=tmp_path / "lib.so", progress=False)
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises((ExportError, BackendError), match=r"missing\.so: no plugin library there|TensorRT"):
        build_model_engines(folder.path, progress=False)


def test_tensorrt_rtx_reports_the_plugin_nodes_it_has_no_creator_for(plugin_export, tmp_path):
    """Without the plugin library, the ONNX parser's own error names the plugin node it cannot import."""
    pytest.importorskip("tensorrt_rtx")
    from warpres.export.engines import build_engine

    _, folder = plugin_export
    stage = next(s for s in folder.manifest.stages if s.name == "fuse")
    with pytest.raises(ExportError, match=r"ONNX parser rejected the graph:\n  node \d+ \([^)]*, FlowWarp\)"):
        build_engine(folder.graph_path(stage), tmp_path / "fuse.engine")


def test_the_cli_builds_a_plugin_export_only_with_plugins_and_a_portable_one_only_without(plugin_export):
    from click.testing import CliRunner

    from warpres.cli import main

    _, folder = plugin_export
    result = CliRunner().invoke(main, ["build", str(folder.path)])
    assert result.exit_code != 0 and "holds plugin graphs: pass --plugins" in result.output


def test_a_portable_folder_takes_no_plugin_library(exports, tmp_path):
    Path(tmp_path / "lib.so").write_bytes(b"")
    folder = exports("inversion").folder  # refused before anything is written into it
    with pytest.raises(ExportError, match="the portable flavour has no plugin nodes; export with --flavour plugin"):
        build_model_engines(folder.path, plugin_library=tmp_path / "lib.so", progress=False)


def test_the_plugin_graphs_on_the_plugins_own_cpu_math_match_every_pytorch_stage(plugin_export, reference):
    """Every stage graph run with the C++ plugin math (libwarpres_plugin_reference) for its plugin
    nodes agrees with the PyTorch stage within the export tolerance: the graphs wire the plugins
    the way the model computes, and the plugins compute what the references do."""
    model, folder = plugin_export
    activations = pipeline_activations(model, 3, seed=11)
    for stage in folder.manifest.stages:
        spec = spec_for(stage)
        inputs = stage_feeds(model.family, stage, activations)
        with torch.no_grad():
            wanted = stage_module(model, stage)(*inputs.values())
        runner = ReferenceRunner(folder.graph_path(stage), kernels=reference)
        for name, want, got in zip(stage.outputs, wanted, runner.run({k: v.numpy() for k, v in inputs.items()}),
                                   strict=True):
            error = float(np.max(np.abs(got - want.numpy())))
            assert error <= spec.tolerance.allowed(float(want.abs().max())), (stage.name, name, error)
