"""From a user's photo or clip to the model and back: the frame kept whole, `--model demo`,
saved direction libraries, video with audio, scene cuts, corrupt frames and faces in video.

The demo model runs on ONNX Runtime (deterministic); the shipped samples are its faces.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from warpres.app.editing import FrameEditor
from warpres.app.models import DEMO_MODELS, resolve_model
from warpres.app.sessions import open_session
from warpres.cli import main
from warpres.demo import DIRECTIONS, SAMPLES
from warpres.edits import DirectionLibrary, EditRequest, LinearDirection
from warpres.media.detection import FAST
from warpres.media.faces import DEMO, FaceAligner
from warpres.media.fit import fit_square
from warpres.media.imageio import read_image, write_image
from warpres.media.video import VideoError
from warpres.media.video.pipeline import run_video
from warpres.media.video.source import open_source

FPS = 10
TONE_HZ = 440
SAMPLE_RATE = 16000


@pytest.fixture(scope="module")
def demo_session():
    choice = resolve_model("demo", "onnxruntime")
    return open_session(choice.path, "onnxruntime", directions=choice.directions), choice


def samples() -> list[np.ndarray]:
    return [read_image(SAMPLES / f"sample-{k}.png") for k in range(4)]


def write_clip(path: Path, frames: list[np.ndarray], tone_seconds: float | None = None, video_start: int = 0,
               second_tone_after: float | None = None) -> Path:
    """An H.264 clip of ``frames`` at FPS, its first frame at ``video_start`` frames, with a 440 Hz
    AAC tone of ``tone_seconds`` from time 0 if given (880 Hz after ``second_tone_after`` s)."""
    container = av.open(str(path), "w")
    video = container.add_stream("libx264", rate=FPS)
    video.height, video.width = frames[0].shape[:2]
    video.pix_fmt = "yuv420p"
    audio = container.add_stream("aac", rate=SAMPLE_RATE) if tone_seconds else None
    for index, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts, picture.time_base = video_start + index, Fraction(1, FPS)
        for packet in video.encode(picture):
            container.mux(packet)
    for packet in video.encode(None):
        container.mux(packet)
    if audio is not None:
        seconds = np.arange(int(tone_seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pitch = np.where(seconds < (second_tone_after or np.inf), TONE_HZ, 2 * TONE_HZ)
        samples_ = 0.3 * np.sin(2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE)
        for start in range(0, len(samples_) - 1024, 1024):
            chunk = av.AudioFrame.from_ndarray(samples_[start:start + 1024].astype(np.float32)[None], format="flt",
                                               layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(chunk):
                container.mux(packet)
        for packet in audio.encode(None):
            container.mux(packet)
    container.close()
    return path


# --- the frame kept whole ---------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["crop", "pad"])
@pytest.mark.parametrize("shape", [(128, 256), (300, 120), (64, 64)])
def test_a_fitted_square_goes_back_at_the_frames_size(mode, shape):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    fit = fit_square(frame.shape, mode)
    square = fit.cut(frame)
    assert square.shape[0] == square.shape[1] == (min(shape) if mode == "crop" else max(shape))
    placed = fit.place(frame, square)                   # an identity edit at the square's own size
    assert placed.shape == frame.shape
    np.testing.assert_array_equal(placed, frame)
    if mode == "crop" and shape[0] != shape[1]:         # outside the square the frame is untouched
        edited = fit.place(frame, np.zeros((96, 96, 3), np.uint8))
        outside = np.ones(shape, bool)
        outside[fit.y:fit.y + fit.side, fit.x:fit.x + fit.side] = False
        np.testing.assert_array_equal(edited[outside], frame[outside])


# --- named demo models and directions ---------------------------------------------------------------

def test_demo_names_resolve_to_the_shipped_models_with_their_directions():
    for name, family in DEMO_MODELS.items():
        choice = resolve_model(name, "onnxruntime")
        assert choice.path.name == family and choice.framing is DEMO
        assert {"smile", "pose", "hair_blue"} <= set(choice.directions.names)


def test_a_saved_library_reads_back_through_from_folder(tmp_path):
    library = DirectionLibrary([LinearDirection("tilt", np.ones(8, np.float32), "interfacegan", (-2.0, 2.0))])
    library.save(tmp_path)
    again = DirectionLibrary.from_folder(tmp_path)
    assert again.names == ["tilt"] and again.resolve("tilt").strength_range == (-2.0, 2.0)
    assert len(DirectionLibrary.from_folder(DIRECTIONS)) == 7          # what the demo ships


def test_model_demo_end_to_end_with_faces_and_a_wide_photo(tmp_path):
    photos = tmp_path / "photos"
    canvas = np.full((200, 420, 3), (90, 110, 130), np.uint8)            # two faces in a wide frame
    canvas[40:168, 20:148] = samples()[0]
    canvas[50:178, 260:388] = samples()[2]
    write_image(photos / "pair.png", canvas)
    write_image(photos / "blank.png", np.full((100, 100, 3), 200, np.uint8))
    result = CliRunner().invoke(main, ["edit", str(photos), "--model", "demo", "--backend", "onnxruntime",
                                       "--align-faces", "-e", "smile=1", "-o", str(tmp_path / "out")])
    assert result.exit_code == 1                                         # the blank photo is counted
    assert "blank.png: no face found" in result.output and "1 input(s) skipped" in result.output
    assert "(2 faces)" in result.output
    edited = read_image(tmp_path / "out" / "pair_smile=1.png")
    assert edited.shape == canvas.shape                                  # the photo's own size
    changed = np.abs(edited.astype(int) - canvas).max(axis=2) > 0
    assert changed[40:168, 20:148].mean() > 0.15 and changed[50:178, 260:388].mean() > 0.15   # the face masks
    assert not changed[:, 170:240].any()                                 # between the faces: untouched


def test_warpres_edits_lists_the_demo_edits_with_ranges():
    result = CliRunner().invoke(main, ["edits", "demo"])
    assert result.exit_code == 0
    assert "pose" in result.output and "-1.00..+1.00" in result.output and "-1.50..+1.50" in result.output


# --- video ------------------------------------------------------------------------------------------

def test_the_inputs_audio_is_passed_through_and_cut_to_the_video(tmp_path):
    frames = [samples()[k % 4] for k in range(20)]
    clip = write_clip(tmp_path / "tone.mp4", frames, tone_seconds=3.0)   # audio outlasts the 2 s of video
    out = tmp_path / "out.mp4"
    stats = run_video(open_source(path=clip), lambda batch: [255 - f for f in batch], output=out)
    assert stats.codec == "libx264" and stats.frames_written == 20
    with av.open(str(out)) as container:
        (video,), (audio,) = container.streams.video, container.streams.audio
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        decoded = list(container.decode(audio))
    samples_ = np.concatenate([frame.to_ndarray()[0] for frame in decoded])
    assert sum(frame.samples for frame in decoded) / SAMPLE_RATE == pytest.approx(2.0, abs=0.15)
    spectrum = np.abs(np.fft.rfft(samples_))
    assert np.fft.rfftfreq(len(samples_), 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(TONE_HZ, abs=5)


def test_audio_stays_in_step_with_a_video_that_starts_late(tmp_path):
    # The video starts 1 s into the file; the audio changes from 440 to 880 Hz there. The output
    # starts with the first video frame, so its audio must start at 880 Hz.
    frames = [samples()[k % 4] for k in range(10)]
    clip = write_clip(tmp_path / "late.mp4", frames, tone_seconds=3.0, video_start=FPS, second_tone_after=1.0)
    out = tmp_path / "out.mp4"
    run_video(open_source(path=clip), lambda batch: batch, output=out)
    with av.open(str(out)) as container:
        decoded = list(container.decode(container.streams.audio[0]))
    samples_ = np.concatenate([frame.to_ndarray()[0] for frame in decoded])[:SAMPLE_RATE // 2]
    spectrum = np.abs(np.fft.rfft(samples_))
    assert np.fft.rfftfreq(len(samples_), 1 / SAMPLE_RATE)[spectrum.argmax()] == pytest.approx(2 * TONE_HZ, abs=10)


def test_a_corrupt_frame_in_the_middle_is_skipped_not_the_end(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 64))
    for index in range(10):
        writer.write(np.full((64, 64, 3), 20 * index, np.uint8))
    writer.release()
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\xff\xd8"]   # JPEG frames
    data[starts[5]:starts[6] - 8] = np.random.default_rng(0).integers(0, 256, starts[6] - 8 - starts[5],
                                                                      dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    stats = run_video(open_source(path=path), lambda batch: batch, output=tmp_path / "out.mp4")
    # The lost frame is stood in for by the one before: the clip keeps its length (and audio its sync).
    assert stats.stop_reason == "end_of_input" and stats.frames_edited == 10 and stats.frames_skipped == 1


def test_a_file_without_a_video_stream_is_named(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE)
        chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
        chunk.sample_rate, chunk.pts = SAMPLE_RATE, 0
        for packet in [*stream.encode(chunk), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(VideoError, match="voice.m4a has no video stream"):
        open_source(path=path)


def test_a_scene_cut_restarts_the_w_plus_smoothing(demo_session):
    session, _ = demo_session
    first, second = samples()[0], samples()[3]
    smoothed = FrameEditor(session, [EditRequest("smile", 1.0)], smoothing=0.3)
    plain = FrameEditor(session, [EditRequest("smile", 1.0)], smoothing=1.0)
    out = smoothed([first, first, second]) + smoothed([second])   # the cut falls inside a batch
    assert smoothed.counts.scene_cuts == 1
    # Nothing of the first shot is left in the code after the cut, nor is the first shot's
    # smoothing disturbed by it.
    np.testing.assert_array_equal(out[2], plain([second])[0])
    np.testing.assert_array_equal(out[0], plain([first])[0])


def test_faces_in_video_are_tracked_and_frames_without_one_pass_through(demo_session):
    session, choice = demo_session
    blank = np.full((160, 200, 3), (90, 110, 130), np.uint8)
    frames = []
    for index in range(6):
        frame = blank.copy()
        frame[16 + index:144 + index, 30 + 2 * index:158 + 2 * index] = samples()[1]   # a face that moves
        frames.append(frame)
    frames.append(blank.copy())                            # and a frame where it is gone
    editor = FrameEditor(session, [EditRequest("smile", 1.0)], aligner=FaceAligner(128, choice.framing, settings=FAST),
                         smoothing=0.5, fps=FPS)
    out = editor(frames[:3]) + editor(frames[3:6])
    assert len(editor._tracker.tracks) == 1 and editor._tracker.tracks[0].id == 0   # one face, one track
    out += editor(frames[6:])
    assert [frame.shape for frame in out] == [frame.shape for frame in frames]
    assert editor.counts.faces_edited == 6 and editor.counts.frames_without_face == 1
    np.testing.assert_array_equal(out[-1], frames[-1])
    for before, after in zip(frames[:6], out[:6], strict=True):
        assert np.abs(after.astype(int) - before).max(axis=2).astype(bool)[:, :10].sum() == 0


def test_warpres_video_with_faces_keeps_size_and_audio_and_counts_faceless_frames(tmp_path):
    blank = np.full((144, 176, 3), (90, 110, 130), np.uint8)
    frames = []
    for index in range(12):
        frame = blank.copy()
        if index < 9:
            frame[8:136, 20 + index:148 + index] = samples()[2]
        frames.append(frame)
    clip = write_clip(tmp_path / "clip.mp4", frames, tone_seconds=1.2)
    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(main, ["video", "--input", str(clip), "--model", "demo", "--backend", "onnxruntime",
                                       "--align-faces", "-e", "smile=1", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 frames edited" in result.output and "9 faces edited, 3 frames without a face" in result.output
    assert "(libx264)" in result.output
    with av.open(str(out)) as container:
        assert len(container.streams.audio) == 1
        video = container.streams.video[0]
        assert (video.codec_context.width, video.codec_context.height) == (176, 144)
        written = [frame.to_ndarray(format="rgb24") for frame in container.decode(video)]
    assert len(written) == 12
    assert np.abs(written[-1].astype(int) - blank).mean() < 3          # a faceless frame passes through
    assert np.abs(written[0].astype(int) - frames[0]).max(axis=2)[20:120, 60:110].mean() > 8   # the face is edited


def test_a_cmyk_jpeg_is_read_as_rgb(tmp_path):
    image = pytest.importorskip("PIL.Image")
    rgb = samples()[0]
    image.fromarray(rgb).convert("CMYK").save(tmp_path / "print.jpg", quality=95)
    decoded = read_image(tmp_path / "print.jpg")
    assert decoded.shape == rgb.shape and np.abs(decoded.astype(int) - rgb).mean() < 6
