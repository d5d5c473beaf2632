"""The frame loop: capture thread -> edit -> compose -> display / writer thread (`run_video`)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from warpres.files import atomic_path
from warpres.media.video import VideoError
from warpres.media.video.display import (
    OVERLAY_KEYS,
    QUIT_KEYS,
    WINDOW_NAME,
    check_display,
    draw_overlay,
    side_by_side,
)
from warpres.media.video.source import FrameSource
from warpres.media.video.writer import VideoFileWriter

EditFrames = Callable[[list[np.ndarray]], Sequence[np.ndarray] | np.ndarray]
"""RGB uint8 frames (H, W, 3) in -> one RGB uint8 frame (R, R', 3) each out, any output size."""


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
    """Edited frames per second of wall time, from the first frame read to the last one edited (the
    overlay shows the same number, as it stands at each frame)."""
    frames_skipped: int = 0
    """Corrupt frames of a file that could not be decoded and were skipped."""
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
              show: bool = False, overlay: bool = False, compare: bool = False, drop_frames: bool | None = None,
              batch_size: int = 1, pace_output: bool | None = None,
              progress: Callable[[VideoStats], None] | None = None) -> VideoStats:
    """Edit every frame of `source` (or the latest one, live) and write `output` and/or show it.

    source: an opened `FrameSource` (see `open_source`); run_video releases it before returning.
    edit_frames: RGB uint8 frames (H, W, 3) -> edited RGB uint8 frames, one per input, all of
        one size (any size). Called in the calling thread, so it may own GPU contexts.
    output: video file to write (H.264 .mp4 through PyAV, with a file source's audio; see
        `warpres.media.video.writer`), written to a temporary file beside it and renamed when
        done. None: write nothing.
    show: display the result in a window with the FPS and latency overlay (q or Esc quits, o
        toggles the overlay); raises VideoError up front when OpenCV has no GUI or no display.
    overlay: also burn the overlay (FPS so far, the frame's latency in ms) into the output file.
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
        self.display_overlay = True
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
                self.stats.codec = self.writer.codec
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
            self.last_time = now
            for item, frame in zip(batch, edited, strict=True):
                latency = now - item.time
                self.latency_total += latency
                self.stats.frames_edited += 1
                fps = self._fps_so_far(now)
                if self.compare:
                    frame = side_by_side(item.frame, frame)
                if self.temporary is not None:  # the writer thread gets its own copy: edit outputs may be reused
                    burned = draw_overlay(np.array(frame, copy=True), fps, 1000.0 * latency) if self.overlay else None
                    self._write(burned if burned is not None else frame.copy(), item)
                if self.show:
                    shown = draw_overlay(np.array(frame, copy=True), fps, 1000.0 * latency) \
                        if self.display_overlay else frame
                    if reason := self._display(shown):
                        return reason
            self.stats.frames_read = capture.frames_read
            self.stats.frames_dropped = self.slot.dropped
            if self.progress is not None:
                self.progress(self.stats)

    def _fps_so_far(self, now: float) -> float | None:
        """The summary's definition: frames edited per second since the first frame was read."""
        elapsed = now - self.first_time
        return self.stats.frames_edited / elapsed if elapsed > 0 else None

    def _write(self, frame: np.ndarray, item: _Captured) -> None:
        if self.writer is None:
            audio = None if self.pace else self.source.path   # paced (live) output has no audio to keep in step
            self.writer = VideoFileWriter(self.temporary, self.source.fps, (frame.shape[1], frame.shape[0]),
                                          name=str(self.output), audio_from=audio)
        repeats = 1
        if self.pace:  # cover the time until this frame with it: real-time playback at source.fps
            due = int((item.time - self.first_time) * self.source.fps) + 1
            repeats = max(1, due - self.frames_queued)
        self.writer.write(frame, repeats)
        self.frames_queued += repeats

    def _display(self, frame: np.ndarray) -> str | None:
        cv2.imshow(WINDOW_NAME, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        key = cv2.waitKey(1) & 0xFF
        if key in QUIT_KEYS:
            return "quit"
        if key in OVERLAY_KEYS:
            self.display_overlay = not self.display_overlay
        if cv2.getWindowProperty(WINDOW_NAME, cv2.WND_PROP_VISIBLE) < 1:
            return "window_closed"
        return None

    def _finish_stats(self, capture: _CaptureThread) -> None:
        stats = self.stats
        stats.frames_read = capture.frames_read
        stats.frames_dropped = self.slot.dropped
        stats.frames_skipped = self.source.frames_skipped
        if stats.frames_edited:
            stats.mean_latency_ms = 1000.0 * self.latency_total / stats.frames_edited
        if self.first_time is not None and self.last_time is not None and self.last_time > self.first_time:
            stats.fps = stats.frames_edited / (self.last_time - self.first_time)
