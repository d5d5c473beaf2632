"""`warpres batch`: what INPUTS lists, the results table and resumption, and the Ray Data
pipeline against the inline path (a local Ray with 2 CPUs, the demo models on ONNX Runtime).

Ray starts once per module (tens of seconds on 2 cores); the jobs join it instead of starting
their own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from warpres.app.models import resolve_model
from warpres.app.outputs import plan_outputs
from warpres.app.batch import distributed
from warpres.app.batch.distributed import EditWorker, SessionSpec
from warpres.app.batch.inputs import list_inputs, read_source
from warpres.app.batch.job import run_batch
from warpres.app.batch.pipeline import Cutting, Plan
from warpres.app.batch.results import COLUMNS, RECORDS
from warpres.cli import main
from warpres.demo import SAMPLES
from warpres.errors import ImageError, WarpresError
from warpres.files import sha256_file

pa = pytest.importorskip("pyarrow")
from pyarrow import csv, parquet  # noqa: E402

TIMINGS = ("read_s", "align_s", "edit_s", "write_s")
EDITS = ("smile=2", "pose=0.8")


def _faces() -> list[Path]:
    return sorted(SAMPLES.glob("sample-*.png"))


@pytest.fixture
def photo_folder(tmp_path) -> Path:
    """The demo's four faces (one again in a sub-folder), a truncated PNG, text named .png, a
    notes file and a face-less gray image."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for path in _faces():
        shutil.copy(path, folder / path.name)
    shutil.copy(_faces()[0], folder / "sub" / _faces()[0].name)
    data = _faces()[1].read_bytes()
    (folder / "broken.png").write_bytes(data[:len(data) // 3])
    (folder / "text.png").write_text("not a png")
    (folder / "notes.txt").write_text("shot on a phone")
    cv2.imwrite(str(folder / "sub" / "gray.png"), np.full((120, 160, 3), 128, np.uint8))
    (folder / ".hidden.png").write_bytes(_faces()[2].read_bytes())
    return folder


@pytest.fixture(scope="module")
def demo():
    return resolve_model("demo", "onnxruntime")


def _job(demo, out_dir: Path, *, align=True, edits=EDITS):
    from warpres.app.sessions import open_session

    plan = Plan(tuple(plan_outputs(edits, None)), out_dir)
    spec = SessionSpec(str(demo.path), demo.directions, "onnxruntime", None, 4)
    size = open_session(demo.path, "onnxruntime", directions=demo.directions).info.image_size
    return plan, Cutting(size, demo.framing if align else None), spec


def _table(path: Path, *, drop=TIMINGS) -> list[dict]:
    return parquet.read_table(path).drop_columns(list(drop)).to_pylist()


# -- inputs -----------------------------------------------------------------------------------

def test_a_folder_is_listed_recursively_with_its_tree_mirrored_in_the_names(photo_folder, tmp_path):
    out = photo_folder / "edited"
    (out / "old").mkdir(parents=True)
    (out / "old" / "x_smile=2.png").write_bytes(b"")
    listing = list_inputs(photo_folder, exclude=out)
    names = dict(zip(listing.sources, listing.names, strict=True))
    assert names[str(photo_folder / "sample-0.png")] == "sample-0"
    assert names[str(photo_folder / "sub" / "sample-0.png")] == "sub/sample-0"
    assert not any(".hidden" in source or "edited" in source for source in listing.sources)
    assert listing.not_images == {str(photo_folder / "notes.txt")}
    assert len(listing.sources) == 9


def test_a_glob_a_text_list_and_tables_name_the_same_inputs(photo_folder, tmp_path):
    faces = sorted(str(path) for path in photo_folder.glob("sample-*.png"))
    by_glob = list_inputs(str(photo_folder / "sample-*.png"))
    assert by_glob.sources == faces and by_glob.names == [Path(face).stem for face in faces]
    listed = tmp_path / "list.txt"
    listed.write_text("# four faces\n" + "\n".join(os.path.relpath(face, tmp_path) for face in faces) + "\n\n")
    assert list_inputs(listed).sources == [str(tmp_path / os.path.relpath(face, tmp_path)) for face in faces]
    table = pa.table({"path": faces, "caption": ["a", "b", "c", "d"]})
    parquet.write_table(table, tmp_path / "t.parquet")
    csv.write_csv(table, tmp_path / "t.csv")
    for name in ("t.parquet", "t.csv"):
        listing = list_inputs(tmp_path / name)
        assert listing.sources == faces and listing.names == by_glob.names
    for name in ("t.csv", "t.parquet"):
        with pytest.raises(WarpresError, match="no 'image' column.*path, caption"):
            list_inputs(tmp_path / name, column="image")
    assert list_inputs(tmp_path / "t.csv", column="path").sources == faces


def test_files_of_one_stem_keep_their_suffix_in_the_name(tmp_path):
    for suffix in (".png", ".jpg"):
        cv2.imwrite(str(tmp_path / f"a{suffix}"), np.zeros((8, 8, 3), np.uint8))
    assert sorted(list_inputs(tmp_path).names) == ["a_jpg", "a_png"]


def test_missing_inputs_are_a_clear_error(tmp_path):
    with pytest.raises(WarpresError, match="no such file or folder"):
        list_inputs(tmp_path / "nowhere")
    with pytest.raises(WarpresError, match="no inputs found"):
        list_inputs(str(tmp_path / "*.png"))


def test_file_uris_read_like_paths_and_unreadable_uris_name_themselves(tmp_path):
    face = _faces()[0]
    np.testing.assert_array_equal(read_source(f"file://{face}"), read_source(str(face)))
    with pytest.raises(ImageError, match="nowhere.png"):
        read_source(f"file://{tmp_path / 'nowhere.png'}")


# -- inline: the table, failures, resumption --------------------------------------------------

def test_bad_inputs_are_rows_with_their_error_and_the_command_exits_non_zero(photo_folder, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["batch", str(photo_folder), "--model", "demo", "--backend", "onnxruntime",
                                       "--align-faces", "-e", "smile=2", "-o", str(out), "--ray", "off"])
    assert result.exit_code == 1
    assert "3 input(s) failed" in result.output and "9 inputs" in result.output
    rows = {Path(row["input"]).relative_to(photo_folder).as_posix(): row for row in _table(out / "results.parquet")}
    assert len(rows) == 9 and list(parquet.read_table(out / "results.parquet").column_names) == list(COLUMNS)
    assert rows["broken.png"]["status"] == "failed" and "truncated" in rows["broken.png"]["error"]
    assert rows["text.png"]["status"] == "failed" and "not a readable image" in rows["text.png"]["error"]
    assert rows["notes.txt"]["status"] == "not_image"
    assert rows["sub/gray.png"]["status"] == "no_face" and "no face found" in rows["sub/gray.png"]["error"]
    for name in ("sample-0.png", "sample-3.png", "sub/sample-0.png"):
        row = rows[name]
        assert row["status"] == "ok" and row["faces"] == 1 and row["error"] == ""
        written = cv2.imread(row["output_path"])
        assert written.shape == cv2.imread(str(photo_folder / name)).shape
    assert rows["sub/sample-0.png"]["output_path"] == str(out / "sub" / "sample-0_smile=2.png")
    assert csv.read_csv(out / "results.csv").num_rows == 9


def test_batch_writes_what_edit_writes(photo_folder, tmp_path):
    """The same steps: `warpres edit` and `warpres batch --ray off` give identical files."""
    faces = [str(path) for path in sorted(photo_folder.glob("sample-*.png"))]
    common = ["--model", "demo", "--backend", "onnxruntime", "--align-faces", "-e", "smile=2"]
    assert CliRunner().invoke(main, ["edit", *faces, *common, "-o", str(tmp_path / "edit")]).exit_code == 0
    assert CliRunner().invoke(main, ["batch", str(photo_folder / "sample-*.png"), *common, "-o",
                                     str(tmp_path / "batch"), "--ray", "off"]).exit_code == 0
    for face in faces:
        name = f"{Path(face).stem}_smile=2.png"
        assert sha256_file(tmp_path / "edit" / name) == sha256_file(tmp_path / "batch" / name)


def test_a_rerun_skips_verified_outputs_and_redoes_a_damaged_one(demo, photo_folder, tmp_path):
    plan, cutting, spec = _job(demo, tmp_path / "out")
    listing = list_inputs(photo_folder)
    first = run_batch(listing, plan, cutting, spec)
    damaged = Path(next(row["output_path"] for row in first.rows if row["status"] == "ok"))
    damaged.write_bytes(damaged.read_bytes()[:100])
    second = run_batch(listing, plan, cutting, spec)
    assert second.resumed == 4  # 5 faces finished; the damaged one's input is redone
    assert _table(first.tables[0]) == _table(second.tables[0])
    assert cv2.imread(str(damaged)) is not None
    changed = Plan(tuple(plan_outputs(["smile=1"], None)), plan.out_dir)   # another job: nothing to resume
    assert run_batch(listing, changed, cutting, spec).resumed == 0


def test_a_job_leaves_its_session_cache_empty(demo, photo_folder, tmp_path):
    """A batch never re-edits, so it keeps no features: memory stays that of one batch."""
    from warpres.app.sessions import open_session

    plan, cutting, spec = _job(demo, tmp_path / "out")
    session = open_session(demo.path, "onnxruntime", directions=demo.directions)
    summary = run_batch(list_inputs(photo_folder), plan, cutting, spec, session=session, batch_size=2)
    assert summary.statuses["ok"] == 5 and len(session.cache) == 0 and session.cache.bytes == 0


def test_a_killed_run_resumed_gives_the_table_of_an_uninterrupted_run(photo_folder, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    for k in range(24):
        shutil.copy(_faces()[k % 4], many / f"face-{k:02d}.png")
    command = [sys.executable, "-m", "warpres.cli", "batch", str(many), "--model", "demo", "--backend",
               "onnxruntime", "--align-faces", "-e", "smile=2", "--ray", "off", "--max-batch", "1"]
    process = subprocess.Popen([*command, "-o", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    records = tmp_path / "killed" / RECORDS
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None and len(list(records.glob("*.json"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = len(list(records.glob("*.json")))
    assert 3 <= finished < 24, f"the run was not killed mid-way ({finished} of 24 records)"
    assert not (tmp_path / "killed" / "results.parquet").exists()
    resumed = subprocess.run([*command, "-o", str(tmp_path / "killed")], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"({finished} finished by an earlier run)" in resumed.stderr
    whole = subprocess.run([*command, "-o", str(tmp_path / "whole")], capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    drop = (*TIMINGS, "output_path")
    assert _table(tmp_path / "killed" / "results.parquet", drop=drop) == _table(tmp_path / "whole" / "results.parquet",
                                                                              drop=drop)
    for k in range(24):
        name = f"face-{k:02d}_smile=2.png"
        assert sha256_file(tmp_path / "killed" / name) == sha256_file(tmp_path / "whole" / name)


# -- choosing Ray ----------------------------------------------------------------------------

def test_auto_without_a_cluster_edits_in_this_process_on_a_small_machine(monkeypatch):
    """No cluster to join (ray.init(address="auto") raises ConnectionError, as Ray does when none
    runs): under 4 CPUs the job stays in this process; with more a local Ray is started."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        pytest.skip("a Ray is already running in this process")
    started = []

    def init(address=None, **options):
        if address == "auto":
            raise ConnectionError("no cluster")
        started.append(address)

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert distributed.connect("auto") == "off" and not started
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert distributed.connect("auto") == "started" and started == ["local"]


def test_without_ray_data_the_ray_modes_say_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(WarpresError, match=r"pip install 'warpres\[batch\]'"):
        distributed.connect("local")


# -- Ray --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_writes_bit_identical_outputs_and_the_same_table_as_the_inline_path(local_ray, demo, photo_folder,
                                                                                   tmp_path):
    listing = list_inputs(photo_folder)
    plan, cutting, spec = _job(demo, tmp_path / "inline")
    inline = run_batch(listing, plan, cutting, spec)
    ray_plan = Plan(plan.outputs, tmp_path / "ray")
    on_ray = run_batch(listing, ray_plan, cutting, spec, ray="auto", workers=2, cpus_per_worker=0.5, batch_size=2)
    assert on_ray.ran_on == "on Ray" and inline.ran_on == "in this process"
    assert _table(inline.tables[0], drop=(*TIMINGS, "output_path")) == _table(on_ray.tables[0],
                                                                                drop=(*TIMINGS, "output_path"))
    written = [row["output_path"] for row in inline.rows if row["status"] == "ok"]
    assert len(written) == 10
    for path in written:
        twin = tmp_path / "ray" / Path(path).relative_to(tmp_path / "inline")
        assert sha256_file(path) == sha256_file(twin)
    assert on_ray.failed == 3


class FlakyWorker(EditWorker):
    """Raises on the first call any actor of the job makes (a marker file remembers it across
    processes); Ray retries that call."""

    def edit(self, items):
        marker = Path(os.environ["WARPRES_TEST_FLAKY_MARKER"])
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            raise RuntimeError("a transient fault in the edit actor")
        return super().edit(items)


def test_an_edit_actor_that_raises_is_retried_and_no_input_is_lost(local_ray, demo, tmp_path, monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    marker = tmp_path / "raised"
    monkeypatch.setenv("WARPRES_TEST_FLAKY_MARKER", str(marker))
    local_ray.shutdown()  # the actors inherit the variable from a Ray started now
    local_ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    faces = tmp_path / "faces"
    faces.mkdir()
    for path in _faces():
        shutil.copy(path, faces / path.name)
    plan, cutting, spec = _job(demo, tmp_path / "out", edits=("smile=2",))
    summary = run_batch(list_inputs(faces), plan, cutting, spec, ray="auto", workers=1, batch_size=2,
                        worker=FlakyWorker)
    with pytest.raises(WarpresError, match="leave less than 1 of this Ray cluster's 2 CPUs"):
        run_batch(list_inputs(faces), Plan(plan.outputs, tmp_path / "starved"), cutting, spec, ray="auto", workers=2)
    assert marker.exists(), "the worker never raised: the test tested nothing"
    assert [row["status"] for row in summary.rows] == ["ok"] * 4
    assert all(Path(row["output_path"]).is_file() for row in summary.rows)
