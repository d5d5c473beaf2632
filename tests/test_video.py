"""Video pipeline: sources, the latest-frame slot, writing, overlay and every exit.

Videos are real files written and read with OpenCV (mp4v). A fake capture stands in only where
a camera is strictly needed (a camera that stops delivering mid-stream). No sleeps, no timing
assertions: thread hand-overs are sequenced with events.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.errors import WarpresError
from warpres.media.video import VideoError
from warpres.media.video.display import draw_overlay, highgui_backend
from warpres.media.video.pipeline import FrameSlot, run_video
from warpres.media.video.source import FrameSource, open_source
from warpres.media.video.writer import VideoFileWriter

FRAMES, SIZE, FPS = 20, 64, 25.0

# mp4v (MPEG-4 Part 2 at OpenCV's default quality) re-encodes these flat synthetic frames with a
# mean absolute error of about 2.5 grey levels (measured: 1.9-2.5 at 128x128). 6 leaves margin
# and stays well below the difference between neighbouring frames (the background alone steps
# by 9 levels and the square jumps by 14 px), which the tests also check, so a dropped,
# repeated or reordered frame cannot pass.
CODEC_MAE = 6.0


def clip_frame(index: int) -> np.ndarray:
    """RGB (64, 64, 3): a background that brightens every frame and a square that moves."""
    frame = np.empty((SIZE, SIZE, 3), np.uint8)
    frame[:] = (20 + 9 * index, 60, 220 - 9 * index)
    x, y = (7 * index) % 48, (5 * index) % 48
    frame[y:y + 16, x:x + 16] = (250, 230, 20)
    return frame


def write_clip(path: Path, count: int = FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    assert writer.isOpened()
    for index in range(count):
        writer.write(cv2.cvtColor(clip_frame(index), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def read_video(path: Path) -> list[np.ndarray]:
    """Every decodable frame, RGB."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"{path} does not open"
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def invert_and_upscale(frames: list[np.ndarray]) -> list[np.ndarray]:
    """A real edit whose output size differs from its input: colour inversion, 2x nearest."""
    return [cv2.resize(255 - frame, (2 * frame.shape[1], 2 * frame.shape[0]), interpolation=cv2.INTER_NEAREST)
            for frame in frames]


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def assert_frames_match(written: list[np.ndarray], expected: list[np.ndarray]) -> None:
    """Same count; each frame within codec error of its own expected frame and nearer it than its neighbours."""
    assert len(written) == len(expected)
    for index, frame in enumerate(written):
        assert frame.shape == expected[index].shape
        own = mae(frame, expected[index])
        assert own < CODEC_MAE, f"frame {index}: mean abs error {own:.2f}"
        for neighbour in (index - 1, index + 1):
            if 0 <= neighbour < len(expected):
                assert mae(frame, expected[neighbour]) > own + 2.0, f"frame {index} resembles frame {neighbour}"


def leftovers(folder: Path, *keep: str) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name not in keep)


def pipeline_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name in ("warpres-video-capture", "warpres-video-writer") and thread.is_alive()]


@pytest.fixture
def clip(tmp_path) -> Path:
    return write_clip(tmp_path / "clip.mp4")


@pytest.fixture
def expected(clip) -> list[np.ndarray]:
    """The edit applied to the clip as OpenCV decodes it: the pipeline's output before re-encoding."""
    return invert_and_upscale(read_video(clip))


class FakeCamera:
    """cv2.VideoCapture's API for a camera that delivers `frames` frames, then fails every read."""

    def __init__(self, frames: int, fps: float = 0.0) -> None:
        self.remaining, self.fps = frames, fps
        self.reads = self.failed_reads = 0
        self.released = False

    def isOpened(self) -> bool:  # cv2's name
        return not self.released

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: self.fps, cv2.CAP_PROP_FRAME_WIDTH: SIZE, cv2.CAP_PROP_FRAME_HEIGHT: SIZE,
                cv2.CAP_PROP_FRAME_COUNT: -1.0}.get(prop, 0.0)

    def read(self):
        assert not self.released, "read after release"
        if self.remaining == 0:
            self.failed_reads += 1
            return False, None
        self.remaining -= 1
        frame = cv2.cvtColor(clip_frame(self.reads), cv2.COLOR_RGB2BGR)
        self.reads += 1
        return True, frame

    def release(self) -> None:
        self.released = True


def fake_camera_source(camera: FakeCamera) -> FrameSource:
    return FrameSource(camera, "camera 0", live=True, max_failed_reads=3, retry_delay=0)


# --------------------------------------------------------------------------------------------
# FrameSlot
# --------------------------------------------------------------------------------------------


def test_latest_frame_slot_drops_stale_frames_for_a_slow_consumer():
    slot = FrameSlot(capacity=1, drop_stale=True)
    rounds, per_round = 4, 3
    produced = [threading.Event() for _ in range(rounds)]
    consumed = [threading.Event() for _ in range(rounds)]

    def producer():  # three frames for every one the consumer takes
        for r in range(rounds):
            for k in range(per_round):
                assert slot.put(r * per_round + k)
            produced[r].set()
            consumed[r].wait()
        slot.close()

    thread = threading.Thread(target=producer)
    thread.start()
    received = []
    for r in range(rounds):
        assert produced[r].wait(10)
        received += slot.get_batch()
        consumed[r].set()
    thread.join(10)
    assert received == [2, 5, 8, 11]  # always the latest
    assert slot.dropped == rounds * (per_round - 1)
    assert slot.get_batch() == []  # closed and empty: the end


def test_slot_without_dropping_delivers_every_frame_in_order():
    slot = FrameSlot(capacity=1, drop_stale=False)

    def producer():  # blocks on the full slot until the consumer takes the previous frame
        for index in range(50):
            assert slot.put(index)
        slot.close()

    thread = threading.Thread(target=producer)
    thread.start()
    received = []
    while batch := slot.get_batch():
        received += batch
    thread.join(10)
    assert received == list(range(50)) and slot.dropped == 0


def test_slot_close_keeps_pending_items_and_refuses_new_ones():
    slot = FrameSlot(capacity=3, drop_stale=False)
    for index in range(3):
        slot.put(index)
    results = []
    blocked = threading.Thread(target=lambda: results.append(slot.put(99)))  # slot full: waits
    blocked.start()
    slot.close()
    blocked.join(10)
    assert results == [False] and not blocked.is_alive()
    assert slot.put(100) is False
    assert slot.get_batch(2) == [0, 1] and slot.get_batch(5, full=True) == [2] and slot.get_batch() == []


# --------------------------------------------------------------------------------------------
# Sources
# --------------------------------------------------------------------------------------------


def test_file_source_reads_rgb_frames_with_the_container_fps_and_size(clip):
    with open_source(path=clip) as source:
        assert source.fps == FPS and source.size == (SIZE, SIZE) and not source.live
        frames = list(source)
    assert len(frames) == FRAMES
    assert mae(frames[3], clip_frame(3)) < CODEC_MAE  # RGB, not BGR: red and blue differ in the clip
    assert source.closed


def test_unopenable_camera_index_names_the_index():
    index = next(i for i in range(8, 64) if not Path(f"/dev/video{i}").exists())
    with pytest.raises(VideoError, match=f"camera {index} could not be opened"):
        open_source(camera=index)


def test_missing_video_file_names_the_file(tmp_path):
    with pytest.raises(VideoError, match=r"video file .*nothere\.mp4 does not exist"):
        open_source(path=tmp_path / "nothere.mp4")


def test_corrupt_video_file_names_the_file(tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"this is not a video" * 64)
    with pytest.raises(VideoError, match=r"corrupt\.mp4 could not be opened"):
        open_source(path=corrupt)


def test_source_needs_exactly_one_of_camera_and_file(clip):
    for kwargs in ({}, {"camera": 0, "path": clip}):
        with pytest.raises(VideoError, match="exactly one"):
            open_source(**kwargs)
    assert issubclass(VideoError, WarpresError)


def test_camera_without_a_frame_rate_falls_back_to_30_fps():
    assert fake_camera_source(FakeCamera(1, fps=0.0)).fps == 30.0


# --------------------------------------------------------------------------------------------
# run_video on files
# --------------------------------------------------------------------------------------------


def test_file_is_edited_frame_by_frame_into_a_playable_video(tmp_path, clip, expected):
    out = tmp_path / "out.mp4"
    stats = run_video(open_source(path=clip), invert_and_upscale, output=out, overlay=False)
    assert (stats.frames_read, stats.frames_edited, stats.frames_dropped, stats.frames_written) == (20, 20, 0, 20)
    assert stats.stop_reason == "end_of_input" and stats.output == out and stats.codec == "libx264"
    assert stats.mean_latency_ms > 0 and stats.fps > 0
    capture = cv2.VideoCapture(str(out))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (128, 128)
    assert capture.get(cv2.CAP_PROP_FPS) == FPS  # a file keeps its frame rate
    capture.release()
    assert_frames_match(read_video(out), expected)
    assert leftovers(tmp_path, "clip.mp4", "out.mp4") == []
    assert pipeline_threads() == []


def test_batches_cover_every_frame_once(tmp_path, clip, expected):
    sizes = []

    def edit(frames):
        sizes.append(len(frames))
        return invert_and_upscale(frames)

    stats = run_video(open_source(path=clip), edit, output=tmp_path / "out.mp4", overlay=False, batch_size=3)
    assert sizes == [3] * 6 + [2] and stats.frames_edited == 20
    assert_frames_match(read_video(tmp_path / "out.mp4"), expected)


def test_progress_is_reported_after_every_batch(tmp_path, clip):
    seen = []
    run_video(open_source(path=clip), invert_and_upscale, output=tmp_path / "out.mp4", batch_size=4,
              progress=lambda stats: seen.append(stats.frames_edited))
    assert seen == [4, 8, 12, 16, 20]


def test_avi_output_is_written_as_mpeg4(tmp_path, clip, expected):
    stats = run_video(open_source(path=clip), invert_and_upscale, output=tmp_path / "out.avi", overlay=False)
    assert stats.codec == "mpeg4"
    assert_frames_match(read_video(tmp_path / "out.avi"), expected)


@pytest.mark.parametrize("suffix, codec", [(".mp4", "mp4v"), (".avi", "MJPG")])
def test_without_pyav_opencv_writes_the_file(tmp_path, expected, suffix, codec):
    path = tmp_path / f"out{suffix}"
    writer = VideoFileWriter(path, FPS, (2 * SIZE, 2 * SIZE), encoder="opencv")
    for frame in expected:
        writer.write(frame)
    writer.close()
    assert writer.codec == codec
    assert_frames_match(read_video(path), expected)


def test_overlay_is_drawn_in_the_top_left_corner_only(tmp_path, clip, expected):
    run_video(open_source(path=clip), invert_and_upscale, output=tmp_path / "on.mp4", overlay=True)
    written = read_video(tmp_path / "on.mp4")
    assert len(written) == FRAMES
    for frame, plain in zip(written, expected, strict=True):
        assert np.abs(frame[:20, :96].astype(int) - plain[:20, :96]).max() > 100  # text is there
        assert mae(frame[40:], plain[40:]) < CODEC_MAE  # and nowhere else


def test_draw_overlay_changes_only_the_text_corner():
    frame = np.full((256, 256, 3), 128, np.uint8)
    drawn = draw_overlay(frame.copy(), 24.5, 87.0)
    changed = np.argwhere(np.any(drawn != frame, axis=2))
    assert len(changed) > 0
    assert changed[:, 0].max() < 40 and changed[:, 1].max() < 128
    assert not np.array_equal(draw_overlay(frame.copy(), 24.5, 87.0), draw_overlay(frame.copy(), 3.0, 900.0))


def test_compare_puts_the_input_left_of_the_edit(tmp_path, clip, expected):
    run_video(open_source(path=clip), invert_and_upscale, output=tmp_path / "out.mp4", overlay=False, compare=True)
    written = read_video(tmp_path / "out.mp4")
    inputs = [cv2.resize(frame, (128, 128), interpolation=cv2.INTER_LINEAR) for frame in read_video(clip)]
    assert len(written) == FRAMES and written[0].shape == (128, 256, 3)
    for frame, left, right in zip(written, inputs, expected, strict=True):
        assert mae(frame[:, :128], left) < CODEC_MAE and mae(frame[:, 128:], right) < CODEC_MAE


def test_odd_frame_sizes_are_padded_to_even(tmp_path, clip):
    stats = run_video(open_source(path=clip), lambda frames: [f[:63, :45] for f in frames],
                      output=tmp_path / "out.mp4", overlay=False)
    written = read_video(tmp_path / "out.mp4")
    assert stats.frames_written == FRAMES and written[0].shape == (64, 46, 3)


# --------------------------------------------------------------------------------------------
# Exits: Ctrl-C, camera loss, crashes
# --------------------------------------------------------------------------------------------


def test_ctrl_c_finalizes_a_playable_video_of_the_frames_so_far(tmp_path, clip, expected):
    calls = []

    def edit(frames):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt  # what Ctrl-C does to the main thread while it edits
        return invert_and_upscale(frames)

    source = open_source(path=clip)
    stats = run_video(source, edit, output=tmp_path / "out.mp4", overlay=False)
    assert stats.stop_reason == "interrupted" and stats.frames_edited == 7 and stats.frames_written == 7
    assert_frames_match(read_video(tmp_path / "out.mp4"), expected[:7])
    assert source.closed and pipeline_threads() == []
    assert leftovers(tmp_path, "clip.mp4", "out.mp4") == []


def test_edit_crash_propagates_after_cleanup_and_leaves_no_output(tmp_path, clip):
    calls = []

    def edit(frames):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("out of GPU memory")
        return invert_and_upscale(frames)

    source = open_source(path=clip)
    with pytest.raises(RuntimeError, match="out of GPU memory"):
        run_video(source, edit, output=tmp_path / "out.mp4")
    assert source.closed and pipeline_threads() == []
    assert leftovers(tmp_path, "clip.mp4") == []  # neither out.mp4 nor its temporary file


def test_camera_loss_mid_stream_finalizes_the_video(tmp_path):
    camera = FakeCamera(12)
    out = tmp_path / "live.mp4"
    stats = run_video(fake_camera_source(camera), invert_and_upscale, output=out, overlay=True)
    assert stats.stop_reason == "camera_lost"
    assert camera.released and camera.failed_reads == 3  # gave up after 3 consecutive failed reads
    assert stats.frames_read == 12 and stats.frames_edited >= 1
    assert stats.frames_edited + stats.frames_dropped == 12  # live: stale frames dropped, none lost otherwise
    written = read_video(out)
    assert len(written) == stats.frames_written >= stats.frames_edited  # paced: repeats cover dropped frames
    assert written[0].shape == (128, 128, 3)
    assert leftovers(tmp_path, "live.mp4") == [] and pipeline_threads() == []


def test_camera_that_never_delivers_a_frame_writes_nothing(tmp_path):
    camera = FakeCamera(0)
    with pytest.raises(VideoError, match=r"no frames were written to .*live\.mp4: camera 0 \(camera lost\)"):
        run_video(fake_camera_source(camera), invert_and_upscale, output=tmp_path / "live.mp4")
    assert camera.released and leftovers(tmp_path) == []


def test_edit_returning_the_wrong_number_of_frames_is_a_clear_error(tmp_path, clip):
    with pytest.raises(VideoError, match="returned 0 frames for 1 input frames"):
        run_video(open_source(path=clip), lambda frames: [], output=tmp_path / "out.mp4")
    assert leftovers(tmp_path, "clip.mp4") == []


def test_unsupported_output_extension_is_refused(tmp_path, clip):
    source = open_source(path=clip)
    with pytest.raises(VideoError, match=r"unsupported extension '\.gif'"):
        run_video(source, invert_and_upscale, output=tmp_path / "out.gif")
    assert source.closed and leftovers(tmp_path, "clip.mp4") == []


def test_nothing_to_do_without_output_or_window(clip):
    source = open_source(path=clip)
    with pytest.raises(VideoError, match="nothing to do"):
        run_video(source, invert_and_upscale)
    assert source.closed


# --------------------------------------------------------------------------------------------
# Display
# --------------------------------------------------------------------------------------------


def test_highgui_backend_reads_the_build_information():
    assert highgui_backend("  GUI:                           NONE\n    VTK support:   NO") is None
    assert highgui_backend("  GUI:                           QT5\n    QT:   YES (ver 5.15)") == "QT5"
    assert highgui_backend("  GUI:  GTK3\n") == "GTK3"


@pytest.mark.skipif(highgui_backend() is not None, reason="this OpenCV has a GUI")
def test_show_without_gui_support_fails_up_front(tmp_path, clip):
    calls = []
    source = open_source(path=clip)
    with pytest.raises(VideoError, match="--show needs OpenCV with a GUI"):
        run_video(source, lambda frames: calls.append(1) or frames, output=tmp_path / "out.mp4", show=True)
    assert calls == [] and source.closed and leftovers(tmp_path, "clip.mp4") == []


# --------------------------------------------------------------------------------------------
# Deployability
# --------------------------------------------------------------------------------------------


def test_video_module_does_not_import_torch():
    code = "import sys, warpres.media.video.pipeline; sys.exit('torch' in sys.modules or 'warpres.runtime' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
