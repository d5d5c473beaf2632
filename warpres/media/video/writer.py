"""Writing RGB frames to a video file in a background thread.

Through PyAV (FFmpeg's bindings, `pip install av`) where installed: H.264 (libx264, yuv420p,
CRF 18) in .mp4 / .m4v / .mov / .mkv, MPEG-4 Part 2 in .avi, and the audio of ``audio_from``
(the input video) copied into the output packet by packet, cut where the video ends. Without
PyAV, through OpenCV's writer: pip's opencv-python(-headless) wheels ship no H.264 encoder, so
mp4v for .mp4 and MJPG for .avi, and no audio.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from warpres.media.video import VideoError, pyav_available

log = logging.getLogger(__name__)

# Output container -> (PyAV codec, OpenCV fourccs to try in order).
OUTPUT_CODECS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("libx264", ("mp4v",)),
    ".m4v": ("libx264", ("mp4v",)),
    ".mov": ("libx264", ("mp4v",)),
    ".mkv": ("libx264", ("mp4v", "MJPG")),
    ".avi": ("mpeg4", ("MJPG", "XVID")),
}
H264_OPTIONS = {"crf": "18", "preset": "veryfast"}


class _OpenCvEncoder:
    def __init__(self, path: Path, name: str, suffix: str, fps: float, size: tuple[int, int]) -> None:
        self.writer = None
        for fourcc in OUTPUT_CODECS[suffix][1]:
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
            if writer.isOpened():
                self.writer, self.codec = writer, fourcc
                break
            writer.release()
        if self.writer is None:
            hint = " (try an .avi output, written as MJPEG)" if suffix != ".avi" else ""
            raise VideoError(f"output video {name}: this OpenCV build cannot encode "
                             f"{'/'.join(OUTPUT_CODECS[suffix][1])} into {suffix}{hint}")

    def write(self, rgb: np.ndarray) -> None:
        self.writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        self.writer.release()


class _PyAvEncoder:
    def __init__(self, path: Path, name: str, suffix: str, fps: float, size: tuple[int, int],
                 audio_from: Path | None) -> None:
        import av

        self._av = av
        self.name = name
        self.codec = OUTPUT_CODECS[suffix][0]
        self.rate = Fraction(fps).limit_denominator(1001)
        self.frames = 0
        self._audio_input = None
        self._audio_pairs = []
        self._audio_start = Fraction(0)   # the input video's first timestamp: the output's time 0
        self.container = av.open(str(path), "w", format={".mkv": "matroska", ".avi": "avi"}.get(suffix, "mp4"))
        try:
            self.stream = self.container.add_stream(self.codec, rate=self.rate)
            self.stream.width, self.stream.height = size
            self.stream.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                self.stream.options = dict(H264_OPTIONS)
            else:   # MPEG-4 Part 2 has no CRF: a bit rate near visually lossless for its age (0.3 bit / pixel)
                self.stream.bit_rate = int(max(2e6, 0.3 * size[0] * size[1] * fps))
            if audio_from is not None:
                self._open_audio(audio_from)
        except BaseException:
            if self._audio_input is not None:
                self._audio_input.close()
            self.container.close()
            raise

    def _open_audio(self, source: Path) -> None:
        try:
            audio_input = self._av.open(str(source))
        except self._av.error.FFmpegError as exc:
            log.warning("%s: cannot read its audio (%s); writing video only", source, exc)
            return
        try:
            for audio in audio_input.streams.audio:
                try:
                    self._audio_pairs.append((audio, self.container.add_stream_from_template(audio)))
                except (ValueError, self._av.error.FFmpegError) as exc:
                    log.warning("%s: its %s audio cannot go into %s (%s); left out", source,
                                audio.codec_context.name, self.name, exc)
            video = audio_input.streams.video[0] if audio_input.streams.video else None
            if video is not None and video.start_time is not None:
                self._audio_start = video.start_time * video.time_base
        finally:
            if self._audio_pairs:
                self._audio_input = audio_input
            else:
                audio_input.close()

    def write(self, rgb: np.ndarray) -> None:
        frame = self._av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = self.frames, 1 / self.rate
        self.frames += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            if self._audio_input is not None:
                self._copy_audio(self.frames / self.rate)
        finally:
            if self._audio_input is not None:
                self._audio_input.close()
            self.container.close()

    def _copy_audio(self, duration: Fraction) -> None:
        """Stream-copy the input's audio packets over the video's span, their timestamps moved so
        that the input video's first frame is the output's time 0 (as the video is written)."""
        outputs = dict(self._audio_pairs)
        for packet in self._audio_input.demux([source for source, _ in self._audio_pairs]):
            if packet.dts is None or packet.pts is None:
                continue   # the demuxer's flush packet
            shift = round(self._audio_start / packet.time_base)
            if packet.pts - shift < 0 or (packet.pts - shift) * packet.time_base >= duration:
                continue
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = outputs[packet.stream]
            self.container.mux(packet)


class VideoFileWriter:
    """Writes RGB uint8 frames to a video file in a background thread (see the module docstring).

    The codec follows the extension (`OUTPUT_CODECS`); ``encoder`` "auto" (PyAV where installed),
    "pyav" or "opencv". The frame size is fixed by the first frame; frames with odd width or
    height are padded to even with black (4:2:0 needs even sizes). ``audio_from``: a video whose
    audio is copied in (PyAV only). `close()` flushes the queue, finalizes the container and
    raises any error the thread met.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int], *,
                 queue_size: int = 8, name: str | None = None, audio_from: str | os.PathLike[str] | None = None,
                 encoder: str = "auto") -> None:
        self.path = Path(path)
        self.name = name or str(self.path)
        """How errors name the output (its final name while writing to a temporary file)."""
        suffix = Path(self.name).suffix.lower() or self.path.suffix.lower()
        if suffix not in OUTPUT_CODECS:
            raise VideoError(f"output video {self.name}: unsupported extension {suffix or '(none)'!r}; "
                             f"use one of {', '.join(OUTPUT_CODECS)}")
        if encoder not in ("auto", "pyav", "opencv"):
            raise ValueError(f"encoder must be auto, pyav or opencv, got {encoder!r}")
        width, height = size
        self.frame_size = (width + width % 2, height + height % 2)
        self.fps = fps
        use_pyav = encoder == "pyav" or (encoder == "auto" and pyav_available())
        if use_pyav:
            self._encoder = _PyAvEncoder(self.path, self.name, suffix, fps, self.frame_size,
                                         Path(audio_from) if audio_from is not None else None)
        else:
            if audio_from is not None:
                log.warning("%s: the input's audio is not copied without PyAV (pip install av)", self.name)
            self._encoder = _OpenCvEncoder(self.path, self.name, suffix, fps, self.frame_size)
        self.codec = self._encoder.codec
        self.frames_written = 0
        self.error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="warpres-video-writer", daemon=True)
        self._thread.start()
        self._closed = False

    def write(self, frame: np.ndarray, repeats: int = 1) -> None:
        """Queue one RGB uint8 frame (H, W, 3), written `repeats` times (waits while the queue is full)."""
        if self._closed:
            raise VideoError(f"output video {self.name} is already closed")
        if self.error is not None:
            raise VideoError(f"writing {self.name} failed: {self.error}") from self.error
        height, width = frame.shape[:2]
        if (width + width % 2, height + height % 2) != self.frame_size:
            raise VideoError(f"output video {self.name}: frame size changed from {self.frame_size[0]}x"
                             f"{self.frame_size[1]} to {width}x{height}; all edited frames must have one size")
        self._queue.put((frame, repeats))

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining so the producer never blocks on a dead writer
            frame, repeats = job
            try:
                height, width = frame.shape[:2]
                if (width, height) != self.frame_size:
                    frame = cv2.copyMakeBorder(frame, 0, self.frame_size[1] - height, 0, self.frame_size[0] - width,
                                               cv2.BORDER_CONSTANT, value=(0, 0, 0))
                for _ in range(repeats):
                    self._encoder.write(frame)
                    self.frames_written += 1
            except BaseException as error:  # re-raised by close()
                self.error = error

    def close(self) -> None:
        """Write what is queued, finalize the file and raise a thread error."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        try:
            self._encoder.close()
        except BaseException as error:
            self.error = self.error or error
        if self.error is not None:
            raise VideoError(f"writing {self.name} failed: {self.error}") from self.error
