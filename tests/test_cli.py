"""The `warpres` command, end to end on a tiny WarpRes checkpoint."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import tiny_editing_model

from warpres.checkpoints import save_model
from warpres.cli import main
from warpres.edits import DirectionLibrary, LinearDirection
from warpres.media.imageio import read_image, write_image


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def error_line(result) -> str:
    """The single `Error: ...` line a failed command prints (exit status 1)."""
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.output
    return errors[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "warpres_tiny.safetensors"
    save_model(tiny_editing_model("warpres"), path)
    return path


@pytest.fixture(scope="module")
def directions(tmp_path_factory):
    folder = tmp_path_factory.mktemp("directions")
    rng = np.random.default_rng(0)
    DirectionLibrary([LinearDirection("smile", rng.standard_normal((1, 32)).astype(np.float32)),
                      LinearDirection("age", rng.standard_normal((1, 32)).astype(np.float32))]).save(folder)
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory, checkpoint, directions):
    folder = tmp_path_factory.mktemp("exported") / "model"
    result = run("export", checkpoint, "-o", folder, "--directions", directions)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    rng = np.random.default_rng(1)
    for name, size in [("a.png", (48, 40)), ("b.jpg", (80, 80))]:
        write_image(folder / name, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def test_every_command_has_help():
    for command in ("edit", "video", "export", "info", "bench", "models", "edits", "calibrate", "app"):
        result = run(command, "--help")
        assert result.exit_code == 0 and "Usage:" in result.output


@pytest.mark.parametrize("command", ["edit", "video", "bench"])
def test_precision_help_lists_the_vocabulary_and_what_each_backend_runs(command):
    result = run(command, "--help")
    assert "[fp32|bf16|fp16|int8|mixed]" in result.output
    help_text = " ".join(result.output.split())
    for runs in ("openvino fp32, bf16, int8, mixed", "onnxruntime fp32", "torch fp32, bf16",
                 "tensorrt fp32, fp16, int8, mixed"):
        assert runs in help_text, runs


def test_precision_f32_is_accepted_as_fp32(photos, checkpoint, tmp_path):
    result = run("edit", photos, "--model", checkpoint, "--backend", "torch", "--precision", "f32", "-o", tmp_path)
    assert result.exit_code == 0, result.output


def test_precision_a_backend_cannot_run_is_one_line_naming_what_it_runs(photos, checkpoint, tmp_path):
    result = run("edit", photos, "--model", checkpoint, "--backend", "torch", "--precision", "fp16", "-o", tmp_path)
    assert error_line(result) == "Error: torch runs fp32 or bf16, not fp16"


def test_edit_writes_one_png_per_image_and_edit(photos, checkpoint, directions, tmp_path):
    out = tmp_path / "out"
    result = run("edit", photos, "--model", checkpoint, "--directions", directions, "--backend", "torch",
                 "--edit", "smile=2", "--edit", "age=-1,smile=1", "-o", out)
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["a_age=-1_smile=1.png", "a_smile=2.png", "b_age=-1_smile=1.png", "b_smile=2.png"]
    # Each output keeps its input's size and aspect (the 64 px model edits the centred square).
    assert read_image(out / "a_smile=2.png").shape == (48, 40, 3)
    assert read_image(out / "b_smile=2.png").shape == (80, 80, 3)


def test_without_edits_the_reconstruction_is_written(photos, checkpoint, tmp_path):
    result = run("edit", photos / "a.png", "--model", checkpoint, "--backend", "torch", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "a_reconstruction.png").is_file()


def test_strength_sweep_writes_one_strip_per_edit(photos, checkpoint, directions, tmp_path):
    result = run("edit", photos / "a.png", "--model", checkpoint, "--directions", directions, "--backend", "torch",
                 "--edit", "smile", "--strength-sweep", "-2:2:5", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    strip = read_image(tmp_path / "out" / "a_smile_sweep.png")
    assert strip.shape == (48, 5 * 40, 3)   # five tiles, each at a.png's own 40 x 48
    assert not np.array_equal(strip[:, :40], strip[:, -40:])
    # each tile carries its strength in the top-left corner, the rest is the plain edit
    single = run("edit", photos / "a.png", "--model", checkpoint, "--directions", directions, "--backend", "torch",
                 "--edit", "smile=2", "-o", tmp_path / "single")
    assert single.exit_code == 0, single.output
    plain = read_image(tmp_path / "single" / "a_smile=2.png").astype(int)
    rows, cols = np.nonzero(np.abs(strip[:, -40:].astype(int) - plain).max(axis=-1) > 2)
    assert len(rows) > 20 and rows.max() < 24


def test_bad_files_in_a_batch_are_skipped_with_a_nonzero_summary(photos, checkpoint, tmp_path):
    (photos / "notes.txt").write_text("not an image")
    (photos / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    out = tmp_path / "out"
    result = run("edit", photos, photos / "notes.txt", "--model", checkpoint, "--backend", "torch", "-o", out)
    assert result.exit_code == 1
    assert "broken.png" in result.output and "notes.txt" in result.output
    assert "2 input(s) skipped" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_reconstruction.png", "b_reconstruction.png"]


def test_unknown_edit_fails_in_one_line_before_any_output(photos, checkpoint, directions, tmp_path):
    result = run("edit", photos, "--model", checkpoint, "--directions", directions, "--backend", "torch",
                 "--edit", "smiel=1", "-o", tmp_path / "out")
    assert "unknown edit 'smiel'" in error_line(result)
    assert not (tmp_path / "out").exists()


def test_exported_folder_edits_like_the_checkpoint(photos, checkpoint, directions, exported, tmp_path):
    reference_run = run("edit", photos / "a.png", "--model", checkpoint, "--directions", directions, "--backend",
                        "torch", "--edit", "smile=2", "-o", tmp_path / "torch")
    assert reference_run.exit_code == 0, reference_run.output
    result = run("edit", photos / "a.png", "--model", exported, "--backend", "onnxruntime", "--edit", "smile=2",
                 "-o", tmp_path / "onnx")
    assert result.exit_code == 0, result.output
    reference = read_image(tmp_path / "torch" / "a_smile=2.png").astype(int)
    onnx = read_image(tmp_path / "onnx" / "a_smile=2.png").astype(int)
    assert np.abs(onnx - reference).max() <= 1  # float32 on both sides: at most a rounding step


def test_info_describes_an_exported_folder(exported):
    result = run("info", exported)
    assert result.exit_code == 0, result.output
    for expected in ("warpres model", "encoder", "flow", "synthesis_tail", "smile", "64x64 in -> 64x64 out"):
        assert expected in result.output


def test_info_describes_a_checkpoint(checkpoint):
    result = run("info", checkpoint)
    assert result.exit_code == 0 and "warpres checkpoint" in result.output


def test_a_tampered_graph_is_refused_in_one_line(exported, photos, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(exported, copy)
    graph = copy / "fuse.onnx"
    data = bytearray(graph.read_bytes())
    data[-1] ^= 0xFF
    graph.write_bytes(bytes(data))
    result = run("edit", photos, "--model", copy, "--backend", "onnxruntime", "-o", tmp_path / "out")
    line = error_line(result)
    assert "fuse.onnx" in line and "SHA-256" in line


def test_a_missing_graph_is_refused_in_one_line(exported, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(exported, copy)
    (copy / "flow.onnx").unlink()
    line = error_line(run("info", copy))
    assert "flow.onnx" in line and "missing" in line


def _clip(path, frames: int = 6, size: int = 64):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    for index in range(frames):
        frame = np.full((size, size, 3), 40, np.uint8)
        cv2.rectangle(frame, (5 + 5 * index, 20), (25 + 5 * index, 40), (200, 120, 30), -1)
        writer.write(frame)
    writer.release()
    return path


def test_video_edits_every_frame_of_a_file(checkpoint, directions, tmp_path):
    clip = _clip(tmp_path / "clip.mp4")
    out = tmp_path / "edited.mp4"
    result = run("video", "--input", clip, "--model", checkpoint, "--directions", directions, "--backend", "torch",
                 "--edit", "smile=2", "-o", out)
    assert result.exit_code == 0, result.output
    capture = cv2.VideoCapture(str(out))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 6
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 64)
    capture.release()


def test_a_camera_that_does_not_exist_is_one_clear_error(checkpoint, tmp_path):
    result = run("video", "--camera", "7", "--model", checkpoint, "--backend", "torch", "-o", tmp_path / "o.mp4")
    assert "camera 7 could not be opened" in error_line(result)


def test_bench_reports_speed_up_and_psnr_against_pytorch(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the checkpoint is exported into the cache once
    result = run("bench", checkpoint, "--backend", "onnxruntime", "--batch", "1", "--iterations", "1")
    assert result.exit_code == 0, result.output
    assert "speed-up vs ref" in result.output and "onnxruntime" in result.output
    assert any((tmp_path / "warpres" / "models").iterdir())


def test_an_exported_model_edits_with_pytorch_and_the_exporter_unimportable(exported):
    pytest.importorskip("openvino")
    script = (
        "import sys\n"
        "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
        "import numpy as np\n"
        "from warpres.runtime.session import Session\n"
        f"session = Session({str(exported)!r}, backend='openvino')\n"
        "out = session.edit_batch(np.zeros((1, 50, 60, 3), np.uint8), 'smile=1')\n"
        "assert out.shape == (1, 64, 64, 3) and out.dtype == np.uint8, out.shape\n"
        "assert not any(name.startswith('warpres.export') for name in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


def test_inputs_that_would_write_the_same_file_are_refused(photos, checkpoint, tmp_path):
    write_image(photos / "a.bmp", np.zeros((8, 8, 3), np.uint8))
    result = run("edit", photos, "--model", checkpoint, "--backend", "torch", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "would write the same output files" in result.output
    assert not (tmp_path / "out").exists()


def test_doctor_reports_the_gpu_tensorrt_every_backend_and_the_plugin_library(monkeypatch, tmp_path):
    monkeypatch.delenv("WARPRES_PLUGIN_LIBRARY", raising=False)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    for line_start in ("CUDA driver", "GPU", "TensorRT", "openvino", "onnxruntime", "torch", "plugins"):
        assert any(line.startswith(line_start) for line in result.output.splitlines()), line_start
    assert "WARPRES_PLUGIN_LIBRARY not set" in result.output
    monkeypatch.setenv("WARPRES_PLUGIN_LIBRARY", str(tmp_path / "libwarpres_plugins.so"))
    result = CliRunner().invoke(main, ["doctor"])
    assert f"WARPRES_PLUGIN_LIBRARY={tmp_path / 'libwarpres_plugins.so'}: no such file" in result.output


def test_build_profiles_cover_the_batch_sizes_between_the_ones_asked_for():
    from warpres.export.engines import staircase_profiles

    assert staircase_profiles([32, 1, 8]) == ((1, 1, 1), (2, 8, 8), (9, 32, 32))


@pytest.mark.parametrize(("args", "message"), [(["--batch", "1,4,16", "--profiles", "1,8"], "not both"),
                                               (["--batch", "1,4"], "expected MIN,OPT,MAX batch sizes"),
                                               (["--profiles", "1,x"], "expected comma-separated batch sizes")])
def test_build_refuses_batch_options_it_cannot_read(exported, args, message):
    result = run("build", exported, *args)
    assert result.exit_code == 2 and message in result.output


def test_version_prints_the_package_version():
    import warpres

    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"warpres, version {warpres.__version__}"


def test_strength_sweep_without_edit_is_a_usage_error(photos, checkpoint, tmp_path):
    result = run("edit", photos, "-m", checkpoint, "--strength-sweep", "-1:1:3", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "give --edit too" in result.output
    assert not (tmp_path / "out").exists()


def test_largest_face_without_align_faces_is_a_usage_error(photos, checkpoint, tmp_path):
    result = run("edit", photos, "-m", checkpoint, "--largest-face", "-o", tmp_path / "out")
    assert result.exit_code == 2 and "only applies with --align-faces" in result.output


def test_crop_only_writes_the_model_size_square(photos, checkpoint, tmp_path):
    out = tmp_path / "out"
    result = run("edit", photos, "-m", checkpoint, "--backend", "torch", "--crop-only", "-o", out)
    assert result.exit_code == 0, result.output
    assert read_image(out / "a_reconstruction.png").shape == (64, 64, 3)


def test_ctrl_c_in_a_command_prints_interrupted_and_exits_130(checkpoint, monkeypatch):
    import warpres.app.reports

    def interrupt(model):
        raise KeyboardInterrupt

    monkeypatch.setattr(warpres.app.reports, "info_report", interrupt)
    result = CliRunner().invoke(main, ["info", str(checkpoint)])
    assert result.exit_code == 130 and result.output.strip().splitlines()[-1] == "interrupted"


def test_train_without_the_train_extra_names_the_extra_to_install(tmp_path, monkeypatch):
    config = tmp_path / "run.yaml"
    config.write_text("family: warpres\n")
    monkeypatch.setitem(sys.modules, "warpres.training.trainer", None)  # import fails as if a dependency were missing
    assert "pip install 'warpres[train]'" in error_line(run("train", config))


def test_info_on_an_image_says_it_is_not_a_model(photos):
    assert error_line(run("info", photos / "a.png")).endswith("is an image, not a model: give a checkpoint or an "
                                                             "exported model folder")


def test_the_backend_choice_is_logged_only_with_verbose(photos, checkpoint, tmp_path, caplog):
    quiet = run("edit", photos, "-m", checkpoint, "--backend", "torch", "-o", tmp_path / "quiet")
    assert quiet.exit_code == 0 and "torch" not in quiet.output, quiet.output
    caplog.set_level(logging.INFO, logger="warpres")
    verbose = run("-v", "edit", photos, "-m", checkpoint, "--backend", "torch", "-o", tmp_path / "verbose")
    assert verbose.exit_code == 0 and "torch" in caplog.text, verbose.output


def test_an_output_folder_inside_the_input_folder_is_not_edited_on_a_rerun(photos, checkpoint, tmp_path):
    (photos / "samples.json").write_text("{}")  # a file beside the images, as in the shipped samples folder
    for _ in range(2):
        result = run("edit", photos, "--model", checkpoint, "--backend", "torch", "-o", photos / "out")
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output
    assert sorted(p.name for p in (photos / "out").iterdir()) == ["a_reconstruction.png", "b_reconstruction.png"]


def test_files_we_write_are_readable_by_others(photos, checkpoint, directions, exported, tmp_path):
    import os
    import stat

    umask = os.umask(0)
    os.umask(umask)
    expected = 0o666 & ~umask  # 0644 under the usual umask 022: what a plain open() gives
    result = run("edit", photos, "--model", checkpoint, "--backend", "torch", "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    written = [checkpoint, directions / "directions.safetensors", exported / "manifest.json",
               *exported.glob("*.onnx"), *(tmp_path / "out").iterdir()]
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in written} == {
        path.name: expected for path in written}


def test_ctrl_c_during_export_says_interrupted_not_export_failed(checkpoint, tmp_path, monkeypatch):
    import torch

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch.onnx, "export", interrupt)
    result = CliRunner().invoke(main, ["export", str(checkpoint), "-o", str(tmp_path / "model")])
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == "interrupted"
    assert "export failed" not in result.output
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize(("backend", "listed"), [("onnxruntime", "[fp32]"),
                                                 ("openvino", "[fp32|bf16|int8|mixed]"),
                                                 ("tensorrt", "[fp32|fp16|int8|mixed]")])
def test_help_after_a_backend_lists_only_the_precisions_it_runs(backend, listed):
    for args in (["edit", "--backend", backend, "--help"], ["bench", f"--backend={backend}", "--help"]):
        result = run(*args)
        assert result.exit_code == 0
        line = next(line for line in result.output.splitlines() if "--precision" in line)
        assert line.split()[1] == listed, line


def test_app_refuses_a_model_folder_that_fails_verification_in_one_line(tmp_path):
    pytest.importorskip("gradio")
    result = run("app", "--model", tmp_path)
    assert result.exit_code == 1 and "not an exported model" in result.output and "Traceback" not in result.output
