"""Writing RGB frames to a video file in a background thread (codec by extension)."""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from warpres.media.video import VideoError

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
