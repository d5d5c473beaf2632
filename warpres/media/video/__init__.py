"""Live and offline video editing: capture -> edit -> display / write, in threads.

`warpres video` opens a source (`open_source`: a camera index or a video file), and
`run_video` pushes its frames through an edit function and writes and/or shows the result:

```
capture thread:  source.read() (PyAV or OpenCV, RGB) ──► FrameSlot ──┐
main thread:     edit_frames(batch) ─► compose (side by side; overlay in the window) ─► cv2.imshow
writer thread:   ◄── bounded queue ── PyAV H.264 + the input's audio, or cv2.VideoWriter
                 (temp file, renamed at the end)
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

numpy, OpenCV and PyAV only: media takes the editor as a callable and imports neither torch nor the runtime.

Modules: `source` (cameras and files), `writer` (the video file writer thread), `display` (window,
overlay, side by side), `tracking` (faces across frames, scene cuts), `pipeline` (the frame loop,
`run_video`).
"""

from __future__ import annotations

from warpres.errors import WarpresError


class VideoError(WarpresError):
    """A camera or video file cannot be opened or read, or an output video cannot be written."""


def pyav_available() -> bool:
    """PyAV (FFmpeg's bindings) is installed: files are read and written through it."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True
