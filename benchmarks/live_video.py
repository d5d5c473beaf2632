"""Live face editing with the demo models: frames per second and capture-to-result latency of
`warpres video --align-faces` on a generated 640 x 480 stream, and where the time goes.

The stream is a shipped demo face (scaled to 256 px) drifting over a textured background,
delivered at 30 frames per second in real time by a camera stand-in (a source marked live, so
`run_video` keeps only the newest frame, as with a camera). Every step of the product runs:
scene-cut check, detection or following of the face, alignment, inversion with W+ smoothing,
the edit, paste-back. Latency is from the frame's capture to its edited frame being ready (the
display call that follows takes under a millisecond). A file run (every frame, batch 1) and the
per-step times on the same frames follow.

    python benchmarks/live_video.py [--seconds 6] [--backend auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from warpres.app.editing import FrameEditor
from warpres.benchmark import cpu_description, publish
from warpres.app.models import resolve_model
from warpres.app.sessions import open_session
from warpres.demo import SAMPLES
from warpres.edits import EditRequest
from warpres.media.detection import FAST
from warpres.media.faces import FaceAligner, paste_back
from warpres.media.imageio import read_image
from warpres.media.video.pipeline import run_video
from warpres.media.video.source import FrameSource

RESULTS = Path(__file__).with_name("results") / "live_video.md"
WIDTH, HEIGHT, RATE = 640, 480, 30.0


def stream_frame(index: int, face: np.ndarray) -> np.ndarray:
    """RGB (480, 640, 3): a textured background and the face drifting along a slow ellipse."""
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH]
    background = np.stack([(xs * 0.3 + index) % 256, (ys * 0.4) % 256, ((xs + ys) * 0.2) % 256], -1)
    frame = (0.5 * background + 60).astype(np.uint8)
    x = int(WIDTH / 2 - 128 + 80 * np.cos(index / 40))
    y = int(HEIGHT / 2 - 128 + 40 * np.sin(index / 30))
    frame[y:y + 256, x:x + 256] = face
    return frame


class GeneratedCapture:
    """The `cv2.VideoCapture` API over generated frames; ``paced``: each is available only when
    its time comes at RATE (a camera), else at once (a file)."""

    def __init__(self, frames: list[np.ndarray], paced: bool) -> None:
        self.frames, self.paced, self.index, self.start = frames, paced, 0, None

    def get(self, prop: int) -> float:
        return {cv2.CAP_PROP_FPS: RATE, cv2.CAP_PROP_FRAME_WIDTH: WIDTH, cv2.CAP_PROP_FRAME_HEIGHT: HEIGHT}.get(prop, 0)

    def read(self):
        if self.start is None:
            self.start = time.perf_counter()
        if self.index >= len(self.frames):
            return False, None
        if self.paced:
            time.sleep(max(0.0, self.start + self.index / RATE - time.perf_counter()))
        frame = self.frames[self.index]
        self.index += 1
        return True, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)

    def release(self) -> None:
        pass


def step_times(session, choice, frames: list[np.ndarray], edits) -> dict[str, float]:
    """Median milliseconds of each step on the stream's frames, one frame at a time."""
    aligner = FaceAligner(session.info.image_size, choice.framing, settings=FAST)
    times: dict[str, list[float]] = {"full-frame detection": [], "follow": [], "align": [], "invert + edit": [],
                                     "paste-back": []}
    face = aligner.detect(frames[0])[0]
    for frame in frames[:30]:
        start = time.perf_counter()
        aligner.detect(frame)
        times["full-frame detection"].append(time.perf_counter() - start)
        start = time.perf_counter()
        face = aligner.follow(frame, face) or face
        times["follow"].append(time.perf_counter() - start)
        start = time.perf_counter()
        crop = aligner.crop(frame, face)
        times["align"].append(time.perf_counter() - start)
        start = time.perf_counter()
        (edited,) = session.edit(session.invert([crop.image]), edits)
        times["invert + edit"].append(time.perf_counter() - start)
        start = time.perf_counter()
        paste_back(frame, edited, crop)
        times["paste-back"].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(values)) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    edits = [EditRequest("smile", 1.0)]
    face = cv2.resize(read_image(SAMPLES / "sample-1.png"), (256, 256), interpolation=cv2.INTER_CUBIC)
    frames = [stream_frame(index, face) for index in range(int(args.seconds * RATE))]
    lines = [f"# Live face editing with the demo models ({cpu_description()}; {len(frames)} frames of {WIDTH}x{HEIGHT} "
             f"at {RATE:.0f} fps, edit smile=1)", "",
             "| model | backend | run | edited fps | mean latency ms | frames edited / delivered | faces edited |",
             "|---|---|---|---|---|---|---|"]
    for name in ("demo:e0", "demo:styleres", "demo:warpres"):
        choice = resolve_model(name, args.backend)
        session = open_session(choice.path, args.backend, directions=choice.directions, max_batch=1)

        def editor():
            aligner = FaceAligner(session.info.image_size, choice.framing, settings=FAST)
            return FrameEditor(session, edits, aligner=aligner, smoothing=0.5, fps=RATE)

        editor()(frames[:3])   # warm-up: the first calls compile
        live, file_editor = editor(), editor()
        with tempfile.TemporaryDirectory() as work:
            stats = run_video(FrameSource(GeneratedCapture(frames, paced=True), "generated camera", live=True),
                              live, output=Path(work) / "live.mp4")
            file_stats = run_video(FrameSource(GeneratedCapture(frames, paced=False), "generated file", live=False),
                                   file_editor, output=Path(work) / "file.mp4", batch_size=1)
        for run, result, counts in (("live (newest frame only)", stats, live.counts),
                                    ("file (every frame)", file_stats, file_editor.counts)):
            lines.append(f"| {name} | {session.backend.name} | {run} | {result.fps:.1f} | "
                         f"{result.mean_latency_ms:.0f} | {result.frames_edited} / {result.frames_read} | "
                         f"{counts.faces_edited} |")
        steps = step_times(session, choice, frames, edits)
    lines += ["", "File latency includes the read-ahead queue (a file is read faster than it is edited).", "",
              "Per step, demo:warpres, one frame (median ms): "
              + ", ".join(f"{name} {ms:.1f}" for name, ms in steps.items())
              + ". A full-frame detection runs every 10th frame; the others follow the face."]
    publish("\n".join(lines) + "\n", RESULTS)


if __name__ == "__main__":
    main()
