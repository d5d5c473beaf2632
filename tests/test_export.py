"""Claims about exporting an EditingModel to per-stage ONNX graphs (ARCHITECTURE §2).

Tracing dominates the run time (seconds per stage), so: each family is exported once per
module (`exports`); the three family models share conftest's tiny generator and encoder, and
a stage whose module has the same tensors is traced once (`SharedTraces`), so the file traces
8 stage graphs, not 14; the tests that need an export of their own replay graphs already
exported (`replay_graphs_of`). Everything after tracing (folding, audit, checks, validation
against each family's own PyTorch model, writing) runs for real in every export.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import helper, numpy_helper

from tests.conftest import (
    Exported,
    family_model,
    randomize_,
    tiny_branch,
    tiny_directions,
    tiny_editing_model,
    torch_edit,
)
from warpres.edits import DirectionLibrary
from warpres.errors import ExportError, ModelFolderError
from warpres.export import OPSET, export_model, model_config, model_id, spec_for, validate_graph, validate_model_folder
from warpres.export import graph as export_graph
from warpres.export.activations import pipeline_activations
from warpres.export.fingerprint import stage_fingerprint
from warpres.export.graph import audit_graph
from warpres.export.specs import specs_for
from warpres.files import sha256_file
from warpres.models.editor import EditingModel
from warpres.models.encoders import EncoderConfig, StyleEncoder
from warpres.models.stylegan2 import Generator, GeneratorConfig, channel_plan
from warpres.models.warpres import WarpResBranch
from warpres.stages import (
    ENCODER,
    FLOW,
    FUSE_WARPRES,
    PORTABLE,
    RESIDUAL_ENCODER,
    SYNTHESIS_HEAD,
    SYNTHESIS_TAIL,
    Manifest,
    ModelFolder,
    Stage,
    open_model_folder,
    stage_feeds,
    stages_for,
)

FAMILIES = ["inversion", "styleres", "warpres"]
STAGE_COUNTS = {"inversion": 3, "styleres": 5, "warpres": 6}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny tensors: handing microsecond ops to a second intra-op thread costs more than it saves
    (the tiny pipeline ran 8x slower with 2 threads on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def all_torch_threads(one_torch_thread):
    """Full-size tensors: every intra-op thread again, for one test."""
    torch.set_num_threads(one_torch_thread)
    yield
    torch.set_num_threads(1)


@pytest.fixture
def warpres_export(exports) -> Exported:
    return exports("warpres")


def replay_graphs_of(source: ModelFolder, alter: Callable[[onnx.ModelProto, str], None] = lambda proto, stage: None):
    """A stand-in for `graph.trace_stage` that returns the graphs of an earlier export of the
    same model (after `alter(proto, stage_name)`) instead of tracing: the rest of export_model
    (cleaning, validation, writing) runs for real, in a fraction of the time."""

    def trace_stage(model, stage, inputs, opset=OPSET, flavour=PORTABLE):
        proto = onnx.load(str(source.graph_path(stage)))
        alter(proto, stage.name)
        return proto

    return trace_stage


def scale_first_conv_weight(proto: onnx.ModelProto, factor: float) -> None:
    weights = {init.name: init for init in proto.graph.initializer}
    conv = next(node for node in proto.graph.node if node.op_type == "Conv")
    init = weights[conv.input[1]]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(factor), init.name))


def folder_digest(path: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(path.iterdir())}


def ort_run(folder: ModelFolder, stage, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(folder.graph_path(stage)), providers=["CPUExecutionProvider"])
    return dict(zip(stage.outputs, session.run(None, {n: feeds[n] for n in stage.inputs}), strict=True))


# --- every family exports --------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_exports_one_graph_per_stage_of_the_family(exports, family):
    folder = exports(family).folder
    names = [stage.name for stage in stages_for(family)]
    assert folder.manifest.family == family and len(names) == STAGE_COUNTS[family]
    assert list(folder.manifest.graphs) == names
    assert sorted(p.name for p in folder.path.glob("*.onnx")) == sorted(f"{name}.onnx" for name in names)


def test_the_manifest_round_trips_through_json(warpres_export):
    folder = warpres_export.folder
    data = json.loads((folder.path / "manifest.json").read_text())
    assert Manifest.from_dict(data) == folder.manifest
    assert Manifest.from_dict(json.loads(json.dumps(folder.manifest.to_dict()))) == folder.manifest


def test_the_manifest_names_every_stage_tensor_with_a_batch_first_shape(warpres_export):
    io = warpres_export.folder.manifest.io
    expected = {
        "encoder": {"image": (3, 64, 64), "wplus": (10, 32), "enc_feat": (8, 16, 16)},
        "synthesis_head": {"wplus": (10, 32), "feat": (32, 16, 16), "tap_quarter": (32, 4, 4),
                           "tap_half": (32, 8, 8), "rgb": (3, 8, 8)},
        "residual_encoder": {"enc_feat": (8, 16, 16), "feat": (32, 16, 16), "residual": (32, 16, 16)},
        "flow": {"tap_quarter": (32, 4, 4), "tap_half": (32, 8, 8), "feat": (32, 16, 16),
                 "tap_quarter_edit": (32, 4, 4), "tap_half_edit": (32, 8, 8), "feat_edit": (32, 16, 16),
                 "flow": (2, 16, 16)},
        "fuse": {"residual": (32, 16, 16), "feat_edit": (32, 16, 16), "flow": (2, 16, 16),
                 "feat_fused": (32, 16, 16)},
        "synthesis_tail": {"feat_fused": (32, 16, 16), "rgb": (3, 8, 8), "wplus": (10, 32), "image": (3, 64, 64)},
    }
    assert {stage: {name: spec.shape for name, spec in tensors.items()} for stage, tensors in io.items()} == {
        stage: {name: ("batch", *shape) for name, shape in tensors.items()} for stage, tensors in expected.items()}
    assert {spec.dtype for tensors in io.values() for spec in tensors.values()} == {"float32"}


def test_the_manifest_records_config_opset_flavour_and_versions(warpres_export):
    manifest = warpres_export.folder.manifest
    assert manifest.config == model_config(warpres_export.model)
    assert (manifest.opset, manifest.flavour) == (OPSET, "portable")
    assert {"warpres", "torch", "onnx", "onnxruntime", "exporter"} <= set(manifest.versions)
    assert (manifest.image_size, manifest.resolution, manifest.latent_shape) == (64, 64, (10, 32))


# --- the graphs ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 3])
def test_every_graph_runs_at_any_batch_size(warpres_export, batch):
    folder = warpres_export.folder
    rng = np.random.default_rng(batch)
    for stage in folder.manifest.stages:
        specs = folder.manifest.io[stage.name]
        feeds = {name: rng.standard_normal((batch, *specs[name].shape[1:])).astype(np.float32)
                 for name in stage.inputs}
        outputs = ort_run(folder, stage, feeds)
        assert {name: out.shape for name, out in outputs.items()} == {
            name: (batch, *specs[name].shape[1:]) for name in stage.outputs}


def test_the_stages_chained_in_onnxruntime_reproduce_the_torch_pipeline(warpres_export, images):
    folder, model = warpres_export.folder, warpres_export.model
    shift = lambda w: w + np.float32(0.3)  # noqa: E731
    expected = torch_edit(model, images, [shift]).numpy()

    t = ort_run(folder, ENCODER, {"image": images.numpy()})
    orig = ort_run(folder, SYNTHESIS_HEAD, {"wplus": t["wplus"]})
    t |= orig | ort_run(folder, RESIDUAL_ENCODER, {"enc_feat": t["enc_feat"], "feat": orig["feat"]})
    wplus_edit = shift(t["wplus"])
    edit = ort_run(folder, SYNTHESIS_HEAD, {"wplus": wplus_edit})
    t |= {f"{name}_edit": value for name, value in edit.items()}
    t |= ort_run(folder, FLOW, t)
    t |= ort_run(folder, FUSE_WARPRES, t)
    image = ort_run(folder, SYNTHESIS_TAIL, {"feat_fused": t["feat_fused"], "rgb": edit["rgb"], "wplus": wplus_edit})
    np.testing.assert_allclose(image["image"], expected, atol=1e-4, rtol=0)


def test_graphs_use_standard_onnx_ops_only_and_no_training_or_random_ops(warpres_export):
    forbidden = {"Dropout", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Bernoulli"}
    for stage in warpres_export.folder.manifest.stages:
        proto = onnx.load(str(warpres_export.folder.graph_path(stage)))
        assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)], stage.name
        assert {node.domain for node in proto.graph.node} == {""}, stage.name
        assert not {node.op_type for node in proto.graph.node} & forbidden, stage.name
        for node in proto.graph.node:
            if node.op_type == "BatchNormalization":
                assert len(node.output) == 1 and not any(a.name == "training_mode" and a.i for a in node.attribute)


def test_modulated_convs_export_with_constant_weights(warpres_export):
    for stage in (SYNTHESIS_HEAD, SYNTHESIS_TAIL):
        proto = onnx.load(str(warpres_export.folder.graph_path(stage)))
        constants = {init.name for init in proto.graph.initializer}
        convs = [node for node in proto.graph.node if node.op_type in ("Conv", "ConvTranspose")]
        assert convs and all(node.input[1] in constants for node in convs), stage.name


def test_the_warp_exports_as_grid_sample(warpres_export):
    for stage in (FLOW, FUSE_WARPRES):
        proto = onnx.load(str(warpres_export.folder.graph_path(stage)))
        assert "GridSample" in {node.op_type for node in proto.graph.node}, stage.name


def test_every_graph_carries_the_model_id_and_its_stage_in_its_metadata(warpres_export):
    folder = warpres_export.folder
    assert folder.manifest.model_id == model_id(warpres_export.model)
    for stage in folder.manifest.stages:
        metadata = {p.key: p.value for p in onnx.load(str(folder.graph_path(stage))).metadata_props}
        assert metadata["warpres.model_id"] == folder.manifest.model_id
        assert metadata["warpres.stage"] == stage.name


def _graph_with(node: onnx.NodeProto, initializers=()) -> onnx.ModelProto:
    """A one-node graph x (batch, 4) -> y (batch, 4), dressed as the tail for audit_graph."""
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([node], "g", [x], [y], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


AUDIT_STAGE = Stage("synthesis_tail", ("x",), ("y",), per_image=False)


@pytest.mark.parametrize(("node", "complaint"), [
    (helper.make_node("Dropout", ["x"], ["y"]), "training-only"),
    (helper.make_node("FusedMatMul", ["x", "x"], ["y"], domain="com.microsoft"), "not a standard ONNX op"),
    (helper.make_node("RandomNormalLike", ["x"], ["y"]), "random numbers"),
    (helper.make_node("Conv", ["x", "x"], ["y"]), "runtime weight"),
])
def test_the_audit_rejects_graphs_that_are_not_portable(node, complaint):
    with pytest.raises(ExportError, match=rf"synthesis_tail\.onnx: node .*{complaint}"):
        audit_graph(_graph_with(node), AUDIT_STAGE, OPSET)


# --- validation ------------------------------------------------------------------------------


def test_validation_passes_at_batch_1_and_3_within_explicit_tolerances(warpres_export):
    report = validate_model_folder(warpres_export.model, warpres_export.folder, emit=None)
    assert report.ok
    measured = {(e.stage, e.output) for e in report.errors}
    assert measured == {(s.name, o) for s in stages_for("warpres") for o in s.outputs}
    assert {e.batch for e in report.errors} == {1, 3}
    # tiny models: float32 rounding only, far inside the specs' tolerances
    assert max(e.max_rel for e in report.errors) < 1e-5


def test_validation_fails_loudly_when_the_graph_disagrees_with_the_torch_model(warpres_export):
    drifted = copy.deepcopy(warpres_export.model)
    with torch.no_grad():  # what a stale export looks like: the weights moved after export
        drifted.branch.refiner.out_layer.weight.mul_(1.01)
    with pytest.raises(ExportError, match=r"fuse: output feat_fused at batch 1 differs from PyTorch by [0-9.e-]+ "
                                          r"\(max \|reference\| .*\); tolerance atol 1e-05 \+ rtol 0.0001"):
        validate_graph(drifted, spec_for(FUSE_WARPRES), warpres_export.folder.graph_path(FUSE_WARPRES))


def test_validating_a_folder_against_a_model_it_was_not_exported_from_is_refused(warpres_export):
    other = copy.deepcopy(warpres_export.model)
    with torch.no_grad():
        other.branch.refiner.out_layer.bias[0] += 1.0
    with pytest.raises(ExportError, match="exported from model .*, not from this model"):
        validate_model_folder(other, warpres_export.folder, emit=None)


# --- model_id --------------------------------------------------------------------------------


@torch.no_grad()
def nudge_one_generator_weight(model: EditingModel) -> None:
    """Move one synthesis weight by one ulp."""
    weight = model.generator.synthesis.b16.conv0.weight
    weight[0, 0, 0, 0] = torch.nextafter(weight[0, 0, 0, 0], torch.tensor(np.inf))


def _fingerprints(model: EditingModel) -> dict[str, str]:
    inputs = pipeline_activations(model, 2, 0)
    return {spec.stage.name: stage_fingerprint(model, spec.stage, stage_feeds(model.family, spec.stage, inputs))
            for spec in specs_for(model.family)}


def test_families_sharing_e0_and_g_share_exactly_those_stage_fingerprints():
    inversion, styleres, warpres = (_fingerprints(family_model(family)) for family in FAMILIES)
    shared = ("encoder", "synthesis_head", "synthesis_tail")
    assert all(inversion[name] == styleres[name] == warpres[name] for name in shared)
    assert styleres["residual_encoder"] != warpres["residual_encoder"] and styleres["fuse"] != warpres["fuse"]


def test_a_stage_fingerprint_changes_with_one_weight_of_its_component_only():
    model = family_model("warpres")
    before = _fingerprints(model)
    nudge_one_generator_weight(model)
    after = _fingerprints(model)
    assert [name for name in before if before[name] != after[name]] == ["synthesis_head", "synthesis_tail"]


def test_a_shared_stage_is_traced_once_and_stamped_for_each_model(monkeypatch, tmp_path):
    traced: dict[str, onnx.ModelProto] = {}
    calls = []
    trace = export_graph.trace_stage
    monkeypatch.setattr(export_graph, "trace_stage", lambda model, stage, *args: calls.append(stage.name) or trace(
        model, stage, *args))
    folders = {family: export_model(family_model(family), tmp_path / family, validate=False, progress=False,
                                    traced=traced) for family in ("inversion", "styleres")}
    assert calls == ["encoder", "synthesis_head", "synthesis_tail", "residual_encoder", "fuse"]
    for family, folder in folders.items():
        model = family_model(family)
        validate_model_folder(model, folder, emit=None)  # raises unless the reused graphs compute this model
        metadata = {p.key: p.value for p in onnx.load(str(folder.graph_path(ENCODER))).metadata_props}
        assert metadata["warpres.model_id"] == model_id(model) and metadata["warpres.family"] == family


def test_model_id_is_the_same_for_equal_models_built_twice():
    assert model_id(tiny_editing_model("warpres")) == model_id(tiny_editing_model("warpres"))


def test_model_id_changes_when_one_weight_changes_by_one_ulp():
    model = tiny_editing_model("warpres")
    before = model_id(model)
    nudge_one_generator_weight(model)
    assert model_id(model) != before


def test_model_id_covers_the_encoder_latent_avg_outside_the_state_dict():
    model = tiny_editing_model("inversion")
    before = model_id(model)
    model.encoder.set_latent_avg(model.encoder.latent_avg + 1e-3)
    assert model_id(model) != before


# --- the folder is pinned --------------------------------------------------------------------


def test_a_tampered_graph_makes_open_model_folder_raise(warpres_export, tmp_path):
    copied = Path(shutil.copytree(warpres_export.folder.path, tmp_path / "model"))
    graph_file = copied / "fuse.onnx"
    data = bytearray(graph_file.read_bytes())
    data[-1] ^= 0xFF
    graph_file.write_bytes(bytes(data))
    with pytest.raises(ModelFolderError, match=r"fuse\.onnx: SHA-256 differs"):
        open_model_folder(copied)


def test_a_graph_from_another_models_export_is_refused(exports, tmp_path):
    warpres, inversion = exports("warpres").folder, exports("inversion").folder
    copied = Path(shutil.copytree(warpres.path, tmp_path / "model"))
    shutil.copyfile(inversion.graph_path(ENCODER), copied / "encoder.onnx")
    with pytest.raises(ModelFolderError, match=r"encoder\.onnx: SHA-256 differs"):
        open_model_folder(copied)


def test_directions_are_written_beside_the_graphs_and_pinned(warpres_export):
    folder = warpres_export.folder
    entries = folder.manifest.directions
    assert {role: entry.file for role, entry in entries.items()} == {
        "tensors": "directions.safetensors", "description": "directions.json"}
    assert all(sha256_file(folder.path / entry.file) == entry.sha256 for entry in entries.values())
    loaded = DirectionLibrary.load(folder.directions_path)
    assert loaded.names == warpres_export.directions.names == ["age", "smile"]
    np.testing.assert_array_equal(loaded.resolve("age").vector, warpres_export.directions.resolve("age").vector)


def test_a_model_exported_without_directions_pins_none(exports):
    folder = exports("inversion").folder
    assert folder.manifest.directions == {} and folder.directions_path is None
    assert not (folder.path / "directions.json").exists()


# --- atomic output ---------------------------------------------------------------------------


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_an_export_whose_validation_fails_leaves_no_output_folder(warpres_export, tmp_path, monkeypatch):
    def break_tail(proto, stage):
        if stage == "synthesis_tail":
            scale_first_conv_weight(proto, 1.05)

    monkeypatch.setattr(export_graph, "trace_stage", replay_graphs_of(warpres_export.folder, break_tail))
    out_dir = tmp_path / "model"
    with pytest.raises(ExportError, match="synthesis_tail: output image at batch 1 differs from PyTorch"):
        export_model(warpres_export.model, out_dir, directions=warpres_export.directions, progress=False)
    assert not out_dir.exists() and _leftovers(tmp_path) == []


def test_an_interrupted_export_leaves_the_previous_export_intact(warpres_export, tmp_path, monkeypatch):
    out_dir = Path(shutil.copytree(warpres_export.folder.path, tmp_path / "model"))
    before = folder_digest(out_dir)

    def interrupt(proto, stage):
        if stage == "flow":
            raise KeyboardInterrupt

    monkeypatch.setattr(export_graph, "trace_stage", replay_graphs_of(warpres_export.folder, interrupt))
    with pytest.raises(KeyboardInterrupt):
        export_model(warpres_export.model, out_dir, progress=False)
    assert folder_digest(out_dir) == before and _leftovers(tmp_path) == []
    open_model_folder(out_dir)


def test_a_complete_export_replaces_the_previous_one(exports, tmp_path, monkeypatch):
    warpres, inversion = exports("warpres"), exports("inversion")
    out_dir = Path(shutil.copytree(inversion.folder.path, tmp_path / "model"))
    monkeypatch.setattr(export_graph, "trace_stage", replay_graphs_of(warpres.folder))
    folder = export_model(warpres.model, out_dir, progress=False)
    assert folder.manifest.family == "warpres" and folder.manifest.model_id == warpres.folder.manifest.model_id
    assert sorted(p.name for p in out_dir.glob("*.onnx")) == sorted(s.filename for s in stages_for("warpres"))
    assert _leftovers(tmp_path) == []


def test_export_refuses_to_replace_a_folder_that_is_not_an_exported_model(tmp_path):
    out_dir = tmp_path / "photos"
    out_dir.mkdir()
    (out_dir / "holiday.jpg").write_bytes(b"not ours")
    with pytest.raises(ExportError, match="is not an exported model folder"):
        export_model(tiny_editing_model("inversion"), out_dir, progress=False)
    assert (out_dir / "holiday.jpg").read_bytes() == b"not ours"


def test_a_model_without_an_encoder_cannot_be_exported(tmp_path):
    generator_only = EditingModel(tiny_editing_model("inversion").generator)
    with pytest.raises(ExportError, match="no deployable stages"):
        export_model(generator_only, tmp_path / "model", progress=False)


def test_opsets_below_18_are_refused(tmp_path):
    with pytest.raises(ExportError, match="opset 17 is too old"):
        export_model(tiny_editing_model("inversion"), tmp_path / "model", opset=17, progress=False)


# --- full size -------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_ffhq_1024_warpres_model_exports_and_validates(tmp_path, all_torch_threads):
    """About 2.5 min and 5.2 GB peak RSS on 2 CPU cores; the e4e encoder graph is 1 GB."""
    torch.manual_seed(0)
    generator = Generator(GeneratorConfig(resolution=1024, channels=channel_plan(1024), embed_res=64))
    encoder = StyleEncoder(EncoderConfig())
    encoder.set_latent_avg(0.1 * torch.randn(18, 512))
    branch = randomize_(WarpResBranch(), scale=0.01)  # a non-zero flow and refiner, as trained ones have
    folder = export_model(EditingModel(generator, encoder, branch).eval(), tmp_path / "ffhq", progress=False)

    io = folder.manifest.io
    assert io["encoder"]["image"].shape == ("batch", 3, 256, 256)
    assert io["encoder"]["enc_feat"].shape == ("batch", 128, 64, 64)
    assert io["synthesis_head"]["wplus"].shape == ("batch", 18, 512)
    assert io["flow"]["flow"].shape == ("batch", 2, 64, 64)
    assert io["synthesis_tail"]["image"].shape == ("batch", 3, 1024, 1024)
    assert (folder.path / "encoder.onnx").stat().st_size < 2**31  # one self-contained file each
    validation = json.loads((folder.path / "validation.json").read_text())
    assert max(out["max_rel_error"] for outs in validation.values() for out in outs.values()) < 1e-4
