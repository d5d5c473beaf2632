"""W+ edit directions: official InterfaceGAN / GANSpace semantics, the library, the spec parser."""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from warpres.edits import (
    DirectionLibrary,
    EditRequest,
    GanSpaceConfig,
    GanSpaceDirection,
    GanSpacePCA,
    LatentSmoother,
    LinearDirection,
    load_ganspace_pca,
    load_interfacegan,
    load_raw,
    parse_edit_spec,
    read_ganspace_configs,
)
from warpres.errors import EditError

REPO = Path(__file__).resolve().parents[1]
LAYERS = {"ffhq": 18, "cars": 16}  # W+ layers of FFHQ-1024 and cars-512


def random_wplus(layers: int, batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (batch, layers, 512)).astype(np.float32)


def official_pca(folder: Path, stem: str) -> dict[str, np.ndarray]:
    """The PCA file read directly with torch, independent of warpres.edits."""
    torch = pytest.importorskip("torch")
    data = torch.load(folder / f"{stem}_pca.pt", map_location="cpu", weights_only=True)
    return {key: value.numpy().astype(np.float64) for key, value in data.items()}


def reference_coordinate(wplus: np.ndarray, pca: dict[str, np.ndarray], k: int) -> np.ndarray:
    return (wplus[:, 0].astype(np.float64) - pca["mean"][0]) @ pca["comp"][k, 0] / pca["std"][k]


def ganspace(folder: Path, stem: str, edit: str) -> GanSpaceDirection:
    configs = {c.name: c for c in read_ganspace_configs(folder / "ganspace_configs.csv")}
    return GanSpaceDirection(load_ganspace_pca(folder / f"{stem}_pca.pt"), configs[edit])


# --- official files -------------------------------------------------------------------------

def test_official_interfacegan_files_load_as_unit_vectors(official_edits_dir):
    smile = load_interfacegan(official_edits_dir / "smile.pt")
    pose = load_interfacegan(official_edits_dir / "pose.pt")
    assert (smile.name, smile.vector.shape, smile.source) == ("smile", (512,), "interfacegan")
    assert pose.vector.shape == (18, 512)
    np.testing.assert_allclose(np.linalg.norm(smile.vector), 1.0, atol=1e-6)


def test_official_ganspace_csv_has_42_rows_including_overexposed(official_edits_dir):
    configs = read_ganspace_configs(official_edits_dir / "ganspace_configs.csv")
    assert len(configs) == 42
    assert GanSpaceConfig("overexposed", 27, 8, 18, 15.0) in configs


def test_official_pca_loads_as_mean_components_stds(official_edits_dir):
    pca = load_ganspace_pca(official_edits_dir / "cars_pca.pt")
    assert pca.name == "cars"
    assert (pca.mean.shape, pca.components.shape, pca.stds.shape) == ((512,), (80, 512), (80,))


# --- InterfaceGAN / raw ---------------------------------------------------------------------

def test_interfacegan_vector_moves_every_layer_by_exactly_strength_times_direction(
        official_edits_dir):
    smile = load_interfacegan(official_edits_dir / "smile.pt")
    edited = smile.apply(np.zeros((2, 18, 512), np.float32), 2.5)
    expected = np.float32(2.5) * smile.vector
    assert edited.dtype == np.float32
    assert all(np.array_equal(edited[b, layer], expected) for b in range(2) for layer in range(18))


def test_interfacegan_vector_is_added_to_wplus(official_edits_dir):
    age = load_interfacegan(official_edits_dir / "age.pt")
    wplus = random_wplus(16)  # a [1, 512] direction fits any layer count
    np.testing.assert_allclose(age.apply(wplus, -3.0), wplus - 3.0 * age.vector, rtol=0, atol=1e-6)


def test_pose_direction_adds_its_own_row_to_each_layer(official_edits_dir):
    pose = load_interfacegan(official_edits_dir / "pose.pt")
    wplus = random_wplus(18)
    edited = pose.apply(wplus, -3.5)
    for layer in range(18):
        np.testing.assert_allclose(edited[:, layer], wplus[:, layer] - 3.5 * pose.vector[layer],
                                   rtol=0, atol=1e-6)


def test_per_layer_direction_rejects_wplus_with_another_layer_count(official_edits_dir):
    pose = load_interfacegan(official_edits_dir / "pose.pt")
    with pytest.raises(EditError, match="18 per-layer rows but wplus has 16 layers"):
        pose.apply(random_wplus(16), 1.0)


def test_raw_per_layer_direction_adds_each_row_to_its_layer():
    rows = np.arange(4 * 512, dtype=np.float32).reshape(1, 4, 512)
    direction = LinearDirection("ramp", rows)
    wplus = random_wplus(4)
    np.testing.assert_array_equal(direction.apply(wplus, 2.0), wplus + 2.0 * rows)


def test_raw_direction_loads_from_npy_named_after_the_file(tmp_path):
    vector = np.linspace(-1, 1, 512, dtype=np.float32)
    np.save(tmp_path / "brightness.npy", vector)
    direction = load_raw(tmp_path / "brightness.npy")
    assert (direction.name, direction.source) == ("brightness", "raw")
    np.testing.assert_array_equal(direction.vector, vector)


def test_linear_direction_needs_an_explicit_strength():
    with pytest.raises(EditError, match="no default strength"):
        LinearDirection("smile", np.ones(512, np.float32)).apply(random_wplus(18), None)


@pytest.mark.parametrize("wplus, message", [
    (np.zeros((18, 512), np.float32), r"shape \(B, L, 512\)"),
    (np.zeros((1, 18, 256), np.float32), r"shape \(B, L, 512\)"),
    (np.zeros((1, 18, 512), np.int64), "float array"),
    ([[[0.0] * 512]], "numpy array"),
])
def test_wplus_must_be_a_3d_float_array_with_the_direction_dim(wplus, message):
    with pytest.raises(EditError, match=message):
        LinearDirection("smile", np.ones(512, np.float32)).apply(wplus, 1.0)


def test_apply_leaves_its_input_untouched(official_edits_dir):
    wplus = random_wplus(18)
    before = wplus.copy()
    load_interfacegan(official_edits_dir / "smile.pt").apply(wplus, 3.0)
    ganspace(official_edits_dir, "ffhq", "happy_frizzy_hair").apply(wplus, 5.0)
    np.testing.assert_array_equal(wplus, before)


# --- GANSpace -------------------------------------------------------------------------------

@pytest.mark.parametrize("stem", ["ffhq", "cars"])
@pytest.mark.parametrize("edit", ["face_roundness", "happy_frizzy_hair"])  # rows with start 0
def test_ganspace_moves_the_layer0_coordinate_to_the_target_strength(official_edits_dir, stem,
                                                                     edit):
    direction = ganspace(official_edits_dir, stem, edit)
    pca = official_pca(official_edits_dir, stem)
    edited = direction.apply(random_wplus(LAYERS[stem]), 7.25)
    np.testing.assert_allclose(reference_coordinate(edited, pca, direction.config.component),
                               7.25, rtol=0, atol=1e-4)


@pytest.mark.parametrize("stem, edit", [("ffhq", "overexposed"), ("ffhq", "smile"),
                                        ("cars", "fearful_eyes"), ("cars", "lipstick")])
def test_ganspace_adds_target_minus_coordinate_times_scaled_component_on_its_layers(
        official_edits_dir, stem, edit):
    direction = ganspace(official_edits_dir, stem, edit)
    pca, config = official_pca(official_edits_dir, stem), direction.config
    wplus = random_wplus(LAYERS[stem])
    edited = direction.apply(wplus, -4.0)
    k = config.component
    coordinate = reference_coordinate(wplus, pca, k)
    delta = (-4.0 - coordinate)[:, None] * pca["comp"][k, 0] * pca["std"][k]  # (B, 512)
    for layer in range(config.start, config.end):
        np.testing.assert_allclose(edited[:, layer] - wplus[:, layer], delta, rtol=0, atol=2e-5)


@pytest.mark.parametrize("stem, edit", [("ffhq", "overexposed"), ("ffhq", "smile"),
                                        ("cars", "fearful_eyes"), ("cars", "happy_frizzy_hair")])
def test_ganspace_leaves_layers_outside_its_range_bit_exact(official_edits_dir, stem, edit):
    direction = ganspace(official_edits_dir, stem, edit)
    start, end = direction.config.start, direction.config.end
    wplus = random_wplus(LAYERS[stem])
    edited = direction.apply(wplus, 12.0)
    np.testing.assert_array_equal(edited[:, :start], wplus[:, :start])
    np.testing.assert_array_equal(edited[:, end:], wplus[:, end:])


@pytest.mark.parametrize("stem", ["ffhq", "cars"])
def test_ganspace_with_start_0_is_idempotent_for_the_same_strength(official_edits_dir, stem):
    direction = ganspace(official_edits_dir, stem, "happy_frizzy_hair")
    once = direction.apply(random_wplus(LAYERS[stem]), -9.0)
    twice = direction.apply(once, -9.0)
    np.testing.assert_allclose(twice[:, :8], once[:, :8], rtol=0, atol=1e-5)


def test_ganspace_with_start_above_0_repeats_its_delta_because_layer0_is_not_moved(
        official_edits_dir):
    direction = ganspace(official_edits_dir, "ffhq", "overexposed")  # layers [8, 18)
    wplus = random_wplus(18)
    once = direction.apply(wplus, 15.0)
    twice = direction.apply(once, 15.0)
    np.testing.assert_allclose(twice[:, 8:] - once[:, 8:], once[:, 8:] - wplus[:, 8:],
                               rtol=0, atol=2e-5)


def test_ganspace_given_strength_overrides_the_csv_default(official_edits_dir):
    direction = ganspace(official_edits_dir, "ffhq", "face_roundness")  # csv strength 20
    pca = official_pca(official_edits_dir, "ffhq")
    wplus = random_wplus(18)
    default = direction.apply(wplus)
    overridden = direction.apply(wplus, -3.0)
    k = direction.config.component
    np.testing.assert_allclose(reference_coordinate(default, pca, k), 20.0, rtol=0, atol=1e-4)
    np.testing.assert_allclose(reference_coordinate(overridden, pca, k), -3.0, rtol=0, atol=1e-4)


def test_ganspace_range_beyond_the_wplus_layers_is_rejected(official_edits_dir):
    direction = ganspace(official_edits_dir, "cars", "overexposed")  # layers [8, 18)
    with pytest.raises(EditError, match=r"edits layers \[8, 18\) but wplus has 16 layers"):
        direction.apply(random_wplus(16), 1.0)


def test_ganspace_component_outside_the_pca_is_rejected():
    pca = GanSpacePCA("toy", np.zeros(4), np.eye(4)[:2], np.ones(2))
    with pytest.raises(EditError, match="component 5 does not exist"):
        GanSpaceDirection(pca, GanSpaceConfig("far", 5, 0, 1, 1.0))


def test_malformed_csv_row_is_reported_with_file_and_line(tmp_path):
    path = tmp_path / "ganspace_configs.csv"
    path.write_text("smile\t46\t4\t5\t-20\nbad\t1\t2\n")
    with pytest.raises(EditError, match=re.escape(f"{path}:2: expected 5 tab-separated fields")):
        read_ganspace_configs(path)


# --- library --------------------------------------------------------------------------------

def test_folder_library_names_directions_by_stem_and_ganspace_by_pca(official_edits_dir):
    names = DirectionLibrary.from_folder(official_edits_dir).names
    assert {"smile", "age", "pose", "ganspace:ffhq/overexposed",
            "ganspace:cars/overexposed"} <= set(names)
    assert len(names) == 3 + 2 * 42


def test_short_ganspace_name_resolves_when_one_pca_has_it(official_edits_dir, tmp_path):
    for name in ("ffhq_pca.pt", "ganspace_configs.csv", "smile.pt"):
        shutil.copy(official_edits_dir / name, tmp_path)
    library = DirectionLibrary.from_folder(tmp_path)
    assert library.resolve("ganspace:overexposed").name == "ganspace:ffhq/overexposed"


def test_short_ganspace_name_is_ambiguous_with_two_pcas(official_edits_dir):
    library = DirectionLibrary.from_folder(official_edits_dir)
    with pytest.raises(EditError, match="ambiguous: use one of ganspace:cars/overexposed, "
                                        "ganspace:ffhq/overexposed"):
        library.resolve("ganspace:overexposed")


def test_unknown_edit_lists_the_known_names_sorted():
    library = DirectionLibrary([LinearDirection("smile", np.ones(512, np.float32)),
                                LinearDirection("age", np.ones(512, np.float32))])
    with pytest.raises(EditError, match="unknown edit 'smiel'; known edits: age, smile$"):
        library.apply(random_wplus(18), parse_edit_spec("smiel=2"))


def test_pca_file_without_csv_is_rejected(official_edits_dir, tmp_path):
    shutil.copy(official_edits_dir / "ffhq_pca.pt", tmp_path)
    with pytest.raises(EditError, match="found ffhq_pca.pt but no ganspace_configs.csv"):
        DirectionLibrary.from_folder(tmp_path)


def test_library_applies_edits_one_after_another_in_the_given_order(official_edits_dir):
    library = DirectionLibrary.from_folder(official_edits_dir)
    wplus = random_wplus(18)
    edits = parse_edit_spec(["smile=2", "ganspace:ffhq/happy_frizzy_hair=5"])
    step = library.resolve("smile").apply(wplus, 2.0)
    expected = library.resolve("ganspace:ffhq/happy_frizzy_hair").apply(step, 5.0)
    np.testing.assert_array_equal(library.apply(wplus, edits), expected)
    # GANSpace measures the coordinate after the smile edit, so the order matters.
    assert not np.allclose(library.apply(wplus, edits[::-1]), expected, atol=1e-4)


def test_saved_library_loads_back_bit_exact(official_edits_dir, tmp_path):
    library = DirectionLibrary.from_folder(official_edits_dir)
    library.save(tmp_path)
    loaded = DirectionLibrary.load(tmp_path)
    assert loaded.description() == library.description()
    wplus = random_wplus(18)
    for name in library.names:
        strength = None if name.startswith("ganspace:") else 1.5
        np.testing.assert_array_equal(loaded.resolve(name).apply(wplus, strength),
                                      library.resolve(name).apply(wplus, strength))


def test_saved_library_loads_and_applies_without_torch(official_edits_dir, tmp_path):
    DirectionLibrary.from_folder(official_edits_dir).save(tmp_path)
    script = (
        "import sys; sys.modules['torch'] = None\n"  # any `import torch` now fails
        "import numpy as np\n"
        "from warpres.edits import DirectionLibrary, parse_edit_spec\n"
        f"library = DirectionLibrary.load({str(tmp_path)!r})\n"
        "edited = library.apply(np.zeros((1, 18, 512), np.float32),\n"
        "                       parse_edit_spec('smile=2,ganspace:ffhq/smile=3'))\n"
        "assert edited.shape == (1, 18, 512)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr


def test_pt_file_refused_by_weights_only_is_an_edit_error_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "smile.pt"
    torch.save({"args": argparse.Namespace(strength=2)}, path)  # needs unpickling code
    refused = re.escape(f"{path}: refused by torch.load(weights_only=True)")
    with pytest.raises(EditError, match=refused):
        load_interfacegan(path)


def test_pt_file_with_a_misshaped_tensor_is_an_edit_error_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "smile.pt"
    torch.save(torch.zeros(2, 3, 4, 5), path)
    with pytest.raises(EditError, match=re.escape(f"{path}: direction 'smile': expected shape")):
        load_interfacegan(path)


# --- spec parser ----------------------------------------------------------------------------

@pytest.mark.parametrize("spec, expected", [
    ("smile=2", [EditRequest("smile", 2.0)]),
    ("ganspace:overexposed=15", [EditRequest("ganspace:overexposed", 15.0)]),
    ("pose=-3.5", [EditRequest("pose", -3.5)]),
    ("smile=2,age=-1", [EditRequest("smile", 2.0), EditRequest("age", -1.0)]),
    (["smile=2", "age=-1,pose=.5"], [EditRequest("smile", 2.0), EditRequest("age", -1.0),
                                     EditRequest("pose", 0.5)]),
    (" smile = +1e1 ", [EditRequest("smile", 10.0)]),
    ("ganspace:ffhq/overexposed", [EditRequest("ganspace:ffhq/overexposed", None)]),
    ([], []),
])
def test_edit_spec_parses_names_and_strengths_in_order(spec, expected):
    assert parse_edit_spec(spec) == expected


@pytest.mark.parametrize("spec, offending", [
    ("", "''"),
    ("=2", "'=2'"),
    ("smile=", "'smile='"),
    ("smile=abc", "'smile=abc'"),
    ("smile=2=3", "'smile=2=3'"),
    ("smile 2", "'smile 2'"),
    ("smile=2,,age=1", "''"),
    ("smile=nan", "'smile=nan'"),
    ("smile=inf", "'smile=inf'"),
    ("smile=1e999", "'smile=1e999'"),
])
def test_bad_edit_spec_is_an_edit_error_quoting_the_text(spec, offending):
    with pytest.raises(EditError, match=f"bad edit {offending}"):
        parse_edit_spec(spec)


# --------------------------------------------------------------------------------------------
# LatentSmoother
# --------------------------------------------------------------------------------------------


def test_smoother_step_closes_alpha_of_the_gap_per_frame():
    alpha = 0.3
    codes = np.zeros((7, 18, 8), np.float32)
    codes[1:] = 1.0  # a step after frame 0
    smoothed = LatentSmoother(alpha)(codes)
    expected = np.array([0.0] + [1 - (1 - alpha) ** k for k in range(1, 7)], np.float32)
    np.testing.assert_allclose(smoothed[:, 0, 0], expected, atol=1e-6, rtol=0)
    assert np.all(smoothed == smoothed[:, :1, :1])  # every entry of W+ filtered alike
    assert smoothed.dtype == np.float32 and smoothed.shape == codes.shape


def test_smoother_alpha_one_passes_codes_through_exactly():
    codes = np.random.default_rng(0).normal(size=(5, 18, 512)).astype(np.float32)
    assert np.array_equal(LatentSmoother(1.0)(codes), codes)


def test_smoother_first_frame_passes_through():
    code = np.full((1, 4, 3), 7.5, np.float32)
    assert np.array_equal(LatentSmoother(0.1)(code), code)


def test_smoother_batch_equals_frame_by_frame():
    codes = np.random.default_rng(1).normal(size=(6, 4, 3)).astype(np.float32)
    batched = LatentSmoother(0.4)(codes)
    one_by_one = LatentSmoother(0.4)
    sequential = np.concatenate([one_by_one(codes[i:i + 1]) for i in range(len(codes))])
    np.testing.assert_allclose(batched, sequential, atol=1e-7, rtol=0)


def test_smoother_reset_forgets_the_past():
    smoother = LatentSmoother(0.2)
    smoother(np.zeros((3, 4, 3), np.float32))
    smoother.reset()
    assert smoother.state is None
    fresh = np.ones((1, 4, 3), np.float32)
    assert np.array_equal(smoother(fresh), fresh)


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.5, math.nan])
def test_smoother_rejects_alpha_outside_zero_one(alpha):
    with pytest.raises(EditError, match=r"alpha must be in \(0, 1\]"):
        LatentSmoother(alpha)


def test_smoother_rejects_codes_of_another_shape():
    smoother = LatentSmoother(0.5)
    smoother(np.zeros((1, 18, 512), np.float32))
    with pytest.raises(ValueError, match="reset"):
        smoother(np.zeros((1, 14, 512), np.float32))
