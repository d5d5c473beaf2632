"""Frame sources: a camera index or a video file, read as RGB uint8 frames.

Files are decoded with PyAV where installed: a corrupt frame in the middle of a clip is skipped
(and counted in `FrameSource.frames_skipped`) instead of ending the input as OpenCV's reader
does, and a file without a video stream is named as such. Cameras go through OpenCV.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from warpres.media.video import VideoError, pyav_available

FALLBACK_FPS = 30.0
"""Frame rate assumed when a container or camera reports none (0, NaN or absurd values)."""


def _usable_fps(value: float, fallback: float) -> float:
    return float(value) if math.isfinite(value) and 0.5 <= value <= 1000.0 else fallback


class _PyAvCapture:
    """The part of `cv2.VideoCapture`'s API `FrameSource` uses, over a PyAV container."""

    def __init__(self, path: Path) -> None:
        import av

        self._av = av
        try:
            self.container = av.open(str(path))
        except av.error.FFmpegError as exc:
            raise VideoError(f"video file {path} could not be opened: {exc}") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"video file {path} has no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.skipped = 0
        self._frames = self._decode()

    def _decode(self):
        last = None
        for packet in self.container.demux(self.stream):
            try:
                frames = packet.decode()
            except self._av.error.FFmpegError:
                # A corrupt packet: its frame is lost, and the one before stands in for it, so the
                # clip keeps its length and its audio stays in step.
                self.skipped += 1
                if last is not None:
                    yield last
                continue
            for frame in frames:
                last = self._upright(frame)
                yield last

    @staticmethod
    def _upright(frame) -> np.ndarray:
        """BGR pixels turned as the file says to show them (phone videos are stored sideways)."""
        pixels = frame.to_ndarray(format="bgr24")
        turns = round(getattr(frame, "rotation", 0) / 90) % 4
        return np.ascontiguousarray(np.rot90(pixels, turns)) if turns else pixels

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            rate = self.stream.average_rate or self.stream.guessed_rate
            return float(rate) if rate else 0.0
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.stream.codec_context.width)
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.stream.codec_context.height)
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(self.stream.frames or 0)
        return 0.0

    def read(self) -> tuple[bool, np.ndarray | None]:
        try:
            frame = next(self._frames)
        except StopIteration:
            return False, None
        except self._av.error.FFmpegError:
            self.skipped += 1
            return False, None
        return True, frame

    def release(self) -> None:
        self.container.close()


class FrameSource:
    """RGB uint8 frames (H, W, 3) from an opened `cv2.VideoCapture` (or an object with its API).

    `live` sources (cameras) tolerate transient read failures: only `max_failed_reads`
    consecutive failures count as the camera being lost. For a file the first failed read is
    the end of the input. `read()` returns None at the end (see `lost` for why).
    Use `open_source` to build one; the constructor is for captures opened elsewhere.
    """

    def __init__(self, capture, name: str, *, live: bool, fallback_fps: float = FALLBACK_FPS,
                 max_failed_reads: int = 10, retry_delay: float = 0.02) -> None:
        self.capture = capture
        self.name = name
        self.live = live
        self.fps = _usable_fps(capture.get(cv2.CAP_PROP_FPS), fallback_fps)
        self.size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
        """(width, height) as the capture reports it (0 where it does not know)."""
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count: int | None = int(count) if not live and math.isfinite(count) and count > 0 else None
        """Frames in a file as its container reports them (an estimate for some formats); None for cameras."""
        self.max_failed_reads = max(1, int(max_failed_reads))
        self.retry_delay = retry_delay
        self.frames_read = 0
        self.path: Path | None = None
        """The file a file source reads (its audio goes into the output), None for a camera."""
        self.lost = False
        """True once a live source stopped delivering frames (camera unplugged, stream ended)."""
        self.closed = False

    def read(self) -> np.ndarray | None:
        """The next frame, RGB uint8 (H, W, 3), or None at the end of a file / when a camera is lost."""
        if self.closed or self.lost:
            return None
        for attempt in range(self.max_failed_reads if self.live else 1):
            ok, frame = self.capture.read()
            if ok and frame is not None and frame.size:
                self.frames_read += 1
                if frame.ndim == 2:
                    return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
                if frame.shape[2] == 4:
                    return cv2.cvtColor(frame, cv2.COLOR_BGRA2RGB)
                return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            if self.live and attempt + 1 < self.max_failed_reads and self.retry_delay > 0:
                time.sleep(self.retry_delay)  # a camera may hiccup; give it a moment before retrying
        self.lost = self.live
        return None

    @property
    def frames_skipped(self) -> int:
        """Corrupt frames a file source skipped (PyAV decoding only)."""
        return int(getattr(self.capture, "skipped", 0))

    def close(self) -> None:
        """Release the capture (idempotent)."""
        if not self.closed:
            self.closed = True
            self.capture.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame


def open_source(camera: int | None = None, path: str | os.PathLike[str] | None = None, *,
                fallback_fps: float = FALLBACK_FPS) -> FrameSource:
    """Open a camera by index or a video file (exactly one of them) as a `FrameSource`.

    Raises VideoError naming the camera index or the file when it cannot be opened, or when
    a file opens but holds no decodable frame.
    """
    if (camera is None) == (path is None):
        raise VideoError("give exactly one video source: a camera index or an input video file")
    if camera is not None:
        if isinstance(camera, bool) or not isinstance(camera, int) or camera < 0:
            raise VideoError(f"camera index must be a non-negative integer, got {camera!r}")
        capture = cv2.VideoCapture(camera)
        if not capture.isOpened():
            capture.release()
            raise VideoError(f"camera {camera} could not be opened (no such device, no permission, "
                             "or it is in use by another program)")
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # fresh frames, not a backlog (ignored where unsupported)
        return FrameSource(capture, f"camera {camera}", live=True, fallback_fps=fallback_fps)
    file = Path(path)
    if not file.exists():
        raise VideoError(f"video file {file} does not exist")
    if not file.is_file():
        raise VideoError(f"video file {file} is not a file")
    if pyav_available():
        capture = _PyAvCapture(file)
    else:
        capture = cv2.VideoCapture(str(file))
        if not capture.isOpened():
            capture.release()
            raise VideoError(f"video file {file} could not be opened: not a video OpenCV can decode, or corrupt")
    source = FrameSource(capture, str(file), live=False, fallback_fps=fallback_fps)
    source.path = file
    return source
