"""Live and offline video editing: capture -> edit -> display / write, in threads.

`warpres video` opens a source (`open_source`: a camera index or a video file), and
`run_video` pushes its frames through an edit function and writes and/or shows the result:

```
capture thread:  source.read() (BGR -> RGB) ──► FrameSlot ──┐
main thread:     edit_frames(batch) ─► compose (side by side, overlay) ─► cv2.imshow
writer thread:   ◄── bounded queue ── RGB -> BGR ─► cv2.VideoWriter (temp file, renamed at the end)
```

- A live camera drops stale frames (`drop_frames=True`, its default): the slot between capture
  and editing keeps only the latest frame, so the output follows the camera instead of lagging
  further behind with every slow edit. A file is processed frame by frame (`drop_frames=False`,
  its default): the capture thread waits for the editor, nothing is dropped.
- Temporal smoothing is not done here: `LatentSmoother` is handed to the session as its
  `latent_filter`, so it smooths the inverted W+ codes before decoding, frame by frame.
- Every exit finalizes the output: end of file, camera loss, Ctrl-C (KeyboardInterrupt in the
  main thread) and closing the window all stop the threads, release the capture and writer and
  rename the finished file to its final name (a playable file with the frames edited so far). An
  exception (in the edit function, the capture or the writer) also stops and releases
  everything, then propagates, and the half-written file is removed: under the final name there
  is either a finished video or nothing (warpres.files.atomic_path, ARCHITECTURE §5).

numpy and OpenCV only: this module is part of the deployable runtime and must not import torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from warpres.errors import WarpresError
from warpres.files import atomic_path

EditFrames = Callable[[list[np.ndarray]], Sequence[np.ndarray] | np.ndarray]
"""RGB uint8 frames (H, W, 3) in -> one RGB uint8 frame (R, R', 3) each out, any output size."""

FALLBACK_FPS = 30.0
"""Frame rate assumed when a container or camera reports none (0, NaN or absurd values)."""

# Output container -> fourccs to try, in order. This module writes through OpenCV's FFmpeg
# backend; pip's opencv-python(-headless) wheels ship the MPEG-4 Part 2 encoder (mp4v) and
# MJPEG but no H.264 encoder, so mp4v is the codec for .mp4 and MJPG the one for .avi.
OUTPUT_CODECS: dict[str, tuple[str, ...]] = {
    ".mp4": ("mp4v",),
    ".m4v": ("mp4v",),
    ".mov": ("mp4v",),
    ".avi": ("MJPG", "XVID"),
    ".mkv": ("mp4v", "MJPG"),
}

WINDOW_NAME = "warpres"
_QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q, Esc
_OVERLAY_KEYS = {ord("o"), ord("O")}


class VideoError(WarpresError):
    """A camera or video file cannot be opened or read, or an output video cannot be written."""


# --------------------------------------------------------------------------------------------
# Temporal smoothing of W+ codes
# --------------------------------------------------------------------------------------------


class LatentSmoother:
    """Exponential moving average of W+ codes across frames, for `Session.invert(latent_filter=)`.

    Convention: ``new = alpha * current + (1 - alpha) * previous``, per frame, where `previous`
    is the smoothed code of the frame before. `alpha` is in (0, 1]: 1 passes codes through
    unchanged (bit for bit), smaller values smooth more (a step in the input closes the fraction
    `alpha` of the remaining gap every frame). The first frame after construction or `reset()`
    initializes the state and passes through, so there is no pull towards zero.

    A batch (B, L, D) is smoothed sequentially, frame 0 first: calling with a batch of B frames
    equals calling B times with one frame. The state is float32 (L, D).
    """

    def __init__(self, alpha: float) -> None:
        alpha = float(alpha)
        if not (0.0 < alpha <= 1.0):  # also rejects NaN
            raise VideoError(f"smoothing alpha must be in (0, 1] (1 = no smoothing), got {alpha}")
        self.alpha = alpha
        self._state: np.ndarray | None = None

    @property
    def state(self) -> np.ndarray | None:
        """The smoothed code of the last frame, (L, D) float32, or None before the first frame."""
        return None if self._state is None else self._state.copy()

    def reset(self) -> None:
        """Forget the past: the next frame passes through (e.g. after a scene cut)."""
        self._state = None

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        """(B, L, D) W+ codes of consecutive frames -> their smoothed codes, (B, L, D) float32."""
        wplus = np.asarray(wplus, dtype=np.float32)
        if wplus.ndim != 3:
            raise ValueError(f"LatentSmoother expects W+ codes shaped (B, L, D), got {wplus.shape}")
        if self._state is not None and wplus.shape[1:] != self._state.shape:
            raise ValueError(f"LatentSmoother: W+ codes changed from (B, L, D) = (B, {self._state.shape[0]}, "
                             f"{self._state.shape[1]}) to {wplus.shape}; call reset() when switching models")
        smoothed = np.empty_like(wplus)
        state = self._state
        for index, current in enumerate(wplus):
            if state is None or self.alpha == 1.0:
                state = current.copy()
            else:
                state = self.alpha * current + (1.0 - self.alpha) * state
            smoothed[index] = state
        self._state = state
        return smoothed


# --------------------------------------------------------------------------------------------
# Frame sources
# --------------------------------------------------------------------------------------------


def _usable_fps(value: float, fallback: float) -> float:
    return float(value) if math.isfinite(value) and 0.5 <= value <= 1000.0 else fallback


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
    capture = cv2.VideoCapture(str(file))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"video file {file} could not be opened: not a video OpenCV can decode, or corrupt")
    return FrameSource(capture, str(file), live=False, fallback_fps=fallback_fps)


# --------------------------------------------------------------------------------------------
# Between the threads
# --------------------------------------------------------------------------------------------


class FrameSlot:
    """A bounded, closable hand-over point between one producer and one consumer thread.

    With `drop_stale=True` a `put` into a full slot discards the oldest pending item (counted in
    `dropped`) instead of waiting: with capacity 1 the consumer always gets the latest frame,
    as a live camera needs. With `drop_stale=False` a `put` into a full slot waits for the
    consumer (back-pressure, nothing is lost), as a file needs.

    `close()` ends the exchange from either side: pending items can still be taken, `put`
    returns False, and waiting calls wake up.
    """

    def __init__(self, capacity: int = 1, *, drop_stale: bool = True) -> None:
        if capacity < 1:
            raise ValueError(f"FrameSlot capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.drop_stale = drop_stale
        self.dropped = 0
        self._items: deque = deque()
        self._closed = False
        self._cond = threading.Condition()

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item) -> bool:
        """Hand over `item`; False (item discarded) once the slot is closed."""
        with self._cond:
            while not self._closed and len(self._items) >= self.capacity:
                if self.drop_stale:
                    self._items.popleft()
                    self.dropped += 1
                else:
                    self._cond.wait()
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get_batch(self, max_items: int = 1, timeout: float | None = None, *, full: bool = False) -> list:
        """Up to `max_items` pending items, oldest first, waiting until there is at least one
        (`full=True`: until there are `max_items`, or the slot is closed).

        Returns [] when the slot is closed and empty (the end); after `timeout` seconds, whatever
        is pending (possibly nothing).
        """
        need = min(max_items, self.capacity) if full else 1
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) < need and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                # Wake up now and then so a Ctrl-C in the main thread is never held up here.
                self._cond.wait(0.1 if remaining is None else min(remaining, 0.1))
            batch = [self._items.popleft() for _ in range(min(max_items, len(self._items)))]
            self._cond.notify_all()
            return batch

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True)
class _Captured:
    index: int            # position in the source, 0-based
    frame: np.ndarray     # RGB uint8 (H, W, 3)
    time: float           # time.perf_counter() when read


class _CaptureThread(threading.Thread):
    """Reads the source as fast as it delivers into the slot, until the end, loss or `stop`.

    The thread that reads also releases the source, when it ends: a capture is never released
    while a read is still under way (a camera read can block for a while).
    """

    def __init__(self, source: FrameSource, slot: FrameSlot) -> None:
        super().__init__(name="warpres-video-capture", daemon=True)
        self.source = source
        self.slot = slot
        self.stop_requested = threading.Event()
        self.frames_read = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop_requested.is_set():
                frame = self.source.read()
                if frame is None:
                    break
                item = _Captured(self.frames_read, frame, time.perf_counter())
                self.frames_read += 1
                if not self.slot.put(item):
                    break
        except BaseException as error:  # handed to the main thread, raised there
            self.error = error
        finally:
            self.slot.close()
            self.source.close()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_requested.set()
        self.slot.close()
        self.join(timeout)


def _fourcc_name(code: float) -> str:
    code = int(code)
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


class VideoFileWriter:
    """Writes RGB uint8 frames to a video file through `cv2.VideoWriter` in a background thread.

    The codec follows the extension (`OUTPUT_CODECS`). The frame size is fixed by the first
    frame; frames with odd width or height are padded to even with black (MPEG-4 crops odd
    sizes). `close()` flushes the queue, releases the writer (which finalizes the container)
    and raises any error the thread met.
    """

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int], *,
                 queue_size: int = 8, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or str(self.path)
        """How errors name the output (its final name while writing to a temporary file)."""
        suffix = Path(self.name).suffix.lower() or self.path.suffix.lower()
        if suffix not in OUTPUT_CODECS:
            raise VideoError(f"output video {self.name}: unsupported extension {suffix or '(none)'!r}; "
                             f"use one of {', '.join(OUTPUT_CODECS)}")
        width, height = size
        self.frame_size = (width + width % 2, height + height % 2)
        self.fps = fps
        self.writer = None
        for fourcc in OUTPUT_CODECS[suffix]:
            writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), fps, self.frame_size)
            if writer.isOpened():
                self.writer, self.fourcc = writer, fourcc
                break
            writer.release()
        if self.writer is None:
            hint = " (try an .avi output, written as MJPEG)" if suffix != ".avi" else ""
            raise VideoError(f"output video {self.name}: this OpenCV build cannot encode "
                             f"{'/'.join(OUTPUT_CODECS[suffix])} into {suffix}{hint}")
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
                bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
                height, width = bgr.shape[:2]
                if (width, height) != self.frame_size:
                    bgr = cv2.copyMakeBorder(bgr, 0, self.frame_size[1] - height, 0, self.frame_size[0] - width,
                                             cv2.BORDER_CONSTANT, value=(0, 0, 0))
                for _ in range(repeats):
                    self.writer.write(bgr)
                    self.frames_written += 1
            except BaseException as error:  # re-raised by close()
                self.error = error

    def close(self) -> None:
        """Write what is queued, release the writer (finalizing the file) and raise a thread error."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()
        self.writer.release()
        if self.error is not None:
            raise VideoError(f"writing {self.name} failed: {self.error}") from self.error


# --------------------------------------------------------------------------------------------
# Display and overlay
# --------------------------------------------------------------------------------------------


def highgui_backend(build_info: str | None = None) -> str | None:
    """The GUI backend OpenCV was built with ("QT5", "GTK3", "WIN32UI", ...), None if it has none.

    Read from `cv2.getBuildInformation()`; opencv-python-headless reports ``GUI: NONE``.
    """
    info = cv2.getBuildInformation() if build_info is None else build_info
    match = re.search(r"^\s*GUI:\s*(\S+)", info, flags=re.MULTILINE)
    if match is None:
        return "unknown"  # not reported: let cv2.imshow decide
    backend = match.group(1)
    return None if backend.upper() in {"NONE", "NO"} else backend


def check_display() -> None:
    """Raise VideoError unless `cv2.imshow` can open a window here (GUI build, and a display)."""
    if highgui_backend() is None:
        raise VideoError("--show needs OpenCV with a GUI, but this OpenCV has none (opencv-python-headless); "
                         "install opencv-python instead, or write a file with -o")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise VideoError("--show needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set; "
                         "write a file with -o instead")


class FpsMeter:
    """Frames per second, exponentially smoothed over the intervals between `tick`s."""

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing = smoothing
        self.fps: float | None = None
        self._last: float | None = None

    def tick(self, now: float, frames: int = 1) -> float | None:
        if self._last is not None and now > self._last:
            rate = frames / (now - self._last)
            self.fps = rate if self.fps is None else self.fps + self.smoothing * (rate - self.fps)
        self._last = now
        return self.fps


def draw_overlay(frame: np.ndarray, fps: float | None, latency_ms: float | None) -> np.ndarray:
    """Draw "<fps> fps  <latency> ms" in the top-left corner of an RGB uint8 frame, in place."""
    text = f"{'--' if fps is None else f'{fps:.1f}'} fps  {'--' if latency_ms is None else f'{latency_ms:.0f}'} ms"
    font = cv2.FONT_HERSHEY_SIMPLEX
    (unit_width, _), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(0.3, min(1.5, 0.35 * frame.shape[1] / unit_width))
    thickness = max(1, round(2 * scale))
    (_, text_height), baseline = cv2.getTextSize(text, font, scale, thickness)
    origin = (max(2, round(6 * scale)), max(2, round(6 * scale)) + text_height)
    cv2.putText(frame, text, origin, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)  # outline: readable anywhere
    cv2.putText(frame, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return frame


def side_by_side(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """input | edited: the input scaled to the edited frame's height, placed on its left."""
    height = edited.shape[0]
    width = max(1, round(original.shape[1] * height / original.shape[0]))
    if original.shape[:2] != (height, width):
        interpolation = cv2.INTER_AREA if height < original.shape[0] else cv2.INTER_LINEAR
        original = cv2.resize(original, (width, height), interpolation=interpolation)
    return np.concatenate([original, edited], axis=1)


# --------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------


@dataclass
class VideoStats:
    """What a `run_video` call did."""

    source: str
    frames_read: int = 0
    frames_edited: int = 0
    frames_dropped: int = 0
    """Captured but never edited because a newer frame replaced them (live mode only). Read minus
    edited minus dropped is what was still waiting when the run stopped early (0 or 1 live)."""
    frames_written: int = 0
    """Frames in the output file (more than frames_edited when live output is paced, see run_video)."""
    mean_latency_ms: float = 0.0
    """Mean time from reading a frame to its edited version being ready."""
    fps: float = 0.0
    """Edited frames per second of wall time, from the first frame read to the last one edited."""
    stop_reason: str = ""
    """end_of_input | camera_lost | interrupted (Ctrl-C) | quit (q/Esc) | window_closed."""
    output: Path | None = None
    """The finished output video, None when nothing was written."""
    codec: str | None = None


def _check_edited(edited, count: int) -> list[np.ndarray]:
    frames = list(edited)
    if len(frames) != count:
        raise VideoError(f"the edit function returned {len(frames)} frames for {count} input frames")
    for frame in frames:
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3):
            raise VideoError("the edit function must return RGB uint8 frames shaped (H, W, 3), got "
                             f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}")
    return frames


def run_video(source: FrameSource, edit_frames: EditFrames, *, output: str | os.PathLike[str] | None = None,
              show: bool = False, overlay: bool = True, compare: bool = False, drop_frames: bool | None = None,
              batch_size: int = 1, pace_output: bool | None = None,
              progress: Callable[[VideoStats], None] | None = None) -> VideoStats:
    """Edit every frame of `source` (or the latest one, live) and write `output` and/or show it.

    source: an opened `FrameSource` (see `open_source`); run_video releases it before returning.
    edit_frames: RGB uint8 frames (H, W, 3) -> edited RGB uint8 frames, one per input, all of
        one size (any size). Called in the calling thread, so it may own GPU contexts.
    output: video file to write (.mp4 -> mp4v, .avi -> MJPG; see OUTPUT_CODECS), written to a
        temporary file beside it and renamed when done. None: write nothing.
    show: display the result in a window (q or Esc quits, o toggles the overlay); raises
        VideoError up front when OpenCV has no GUI or there is no display.
    overlay: draw the smoothed FPS and the frame's latency (ms) on the output frames.
    compare: output input | edited side by side instead of the edited frame alone.
    drop_frames: keep only the latest captured frame and drop older unedited ones (True), or
        edit every frame in order (False). Default: True for a live source, False for a file.
    batch_size: frames per edit_frames call (files: bigger batches use a GPU better; every
        batch is full but the last); live sources that drop frames edit one frame at a time,
        the latest.
    pace_output: repeat frames in the output so it plays back at the speed of reality at the
        source's frame rate (frames dropped while editing are covered by the previous edited
        frame). Default: True for a live source; a file keeps its own frame rate and timing.
    progress: called with the running stats after each batch (e.g. to update a progress bar).

    Returns VideoStats. Ctrl-C (KeyboardInterrupt) ends the run like the end of the input, and
    the file written so far is finalized: stop_reason tells which. Exceptions propagate after
    the threads are stopped and the capture and writer released, and no output is left.
    """
    pipeline = None
    try:
        if batch_size < 1:
            raise VideoError(f"batch size must be >= 1, got {batch_size}")
        if output is None and not show:
            raise VideoError("nothing to do: give an output video file, or show the result in a window")
        if show:
            check_display()
        drop = source.live if drop_frames is None else drop_frames
        pace = source.live if pace_output is None else pace_output
        if drop:
            batch_size = 1
        slot = FrameSlot(capacity=1 if drop else 2 * batch_size, drop_stale=drop)  # files: read ahead one batch
        stats = VideoStats(source=source.name)
        with atomic_path(output) if output is not None else contextlib.nullcontext() as temporary:
            pipeline = _Pipeline(source, edit_frames, slot, stats, temporary=temporary, output=output, show=show,
                                 overlay=overlay, compare=compare, batch_size=batch_size, pace=pace, progress=progress)
            pipeline.run()
        if output is not None:
            stats.output = Path(output)
        return stats
    finally:
        if pipeline is None or pipeline.capture is None:  # else the capture thread releases it as it ends
            source.close()


class _Pipeline:
    """One run of run_video: the main-thread loop and the cleanup shared by every exit."""

    def __init__(self, source: FrameSource, edit_frames: EditFrames, slot: FrameSlot, stats: VideoStats, *,
                 temporary: Path | None, output, show: bool, overlay: bool, compare: bool, batch_size: int,
                 pace: bool, progress) -> None:
        self.source, self.edit_frames, self.slot, self.stats = source, edit_frames, slot, stats
        self.temporary, self.output, self.show, self.overlay, self.compare = temporary, output, show, overlay, compare
        self.batch_size, self.pace, self.progress = batch_size, pace, progress
        self.writer: VideoFileWriter | None = None
        self.frames_queued = 0
        self.capture: _CaptureThread | None = None
        self.meter = FpsMeter()
        self.latency_total = 0.0
        self.first_time: float | None = None
        self.last_time: float | None = None

    def run(self) -> None:
        capture = _CaptureThread(self.source, self.slot)
        capture.start()
        self.capture = capture  # from here on the capture thread owns (and releases) the source
        try:
            try:
                self.stats.stop_reason = self._loop(capture)
            except KeyboardInterrupt:  # Ctrl-C: a normal way to end a live session; finalize below
                self.stats.stop_reason = "interrupted"
        finally:
            capture.stop()  # joins it, and the thread releases the source as it ends
            self._finish_stats(capture)
            if self.writer is not None:
                self.writer.close()  # flushes and finalizes the container before atomic_path renames it
                self.stats.frames_written = self.writer.frames_written
                self.stats.codec = self.writer.fourcc
            if self.show:
                with contextlib.suppress(cv2.error):
                    cv2.destroyWindow(WINDOW_NAME)
                    cv2.waitKey(1)
        if capture.error is not None:
            raise capture.error
        if self.output is not None and self.stats.frames_written == 0:
            raise VideoError(f"no frames were written to {self.output}: {self.source.name} "
                             f"({self.stats.stop_reason.replace('_', ' ')}) delivered no frame that was edited")

    def _loop(self, capture: _CaptureThread) -> str:
        while True:
            batch: list[_Captured] = self.slot.get_batch(self.batch_size, full=True)  # full batches but the last
            if not batch:
                return "camera_lost" if self.source.lost else "end_of_input"
            if self.first_time is None:
                self.first_time = batch[0].time
            edited = _check_edited(self.edit_frames([item.frame for item in batch]), len(batch))
            now = time.perf_counter()
            self.meter.tick(now, len(batch))
            self.last_time = now
            for item, frame in zip(batch, edited, strict=True):
                latency = now - item.time
                self.latency_total += latency
                self.stats.frames_edited += 1
                if self.compare:
                    frame = side_by_side(item.frame, frame)
                if self.overlay:
                    frame = draw_overlay(np.array(frame, copy=True), self.meter.fps, 1000.0 * latency)
                if self.temporary is not None:  # the writer thread gets its own copy: edit outputs may be reused
                    self._write(frame if self.overlay or self.compare else frame.copy(), item)
                if self.show and (reason := self._display(frame)):
                    return reason
            self.stats.frames_read = capture.frames_read
            self.stats.frames_dropped = self.slot.dropped
            if self.progress is not None:
                self.progress(self.stats)

    def _write(self, frame: np.ndarray, item: _Captured) -> None:
        if self.writer is None:
            self.writer = VideoFileWriter(self.temporary, self.source.fps, (frame.shape[1], frame.shape[0]),
                                          name=str(self.output))
        repeats = 1
        if self.pace:  # cover the time until this frame with it: real-time playback at source.fps
            due = int((item.time - self.first_time) * self.source.fps) + 1
            repeats = max(1, due - self.frames_queued)
        self.writer.write(frame, repeats)
        self.frames_queued += repeats

    def _display(self, frame: np.ndarray) -> str | None:
        cv2.imshow(WINDOW_NAME, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in _QUIT_KEYS:
            return "quit"
        if key in _OVERLAY_KEYS:
            self.overlay = not self.overlay
        if cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1:
            return "window_closed"
        return None

    def _finish_stats(self, capture: _CaptureThread) -> None:
        stats = self.stats
        stats.frames_read = capture.frames_read
        stats.frames_dropped = self.slot.dropped
        if stats.frames_edited:
            stats.mean_latency_ms = 1000.0 * self.latency_total / stats.frames_edited
        if self.first_time is not None and self.last_time is not None and self.last_time > self.first_time:
            stats.fps = stats.frames_edited / (self.last_time - self.first_time)
