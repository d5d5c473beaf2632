"""Editing video frames (for `run_video`): each frame's faces, followed as tracks, or the frame's
centred square; the result always has the frame's own size.

With faces: every frame is checked for a scene cut (which ends every track). Every
`REDETECT_EVERY` frames, after a cut and while no face is tracked, the whole frame is searched
for faces; in between, each tracked face is looked for again around where it was (a crop of
the face's size: a few milliseconds instead of a full-frame search). The faces are matched to
tracks, their landmarks smoothed per track (`FaceTracker`), aligned, inverted with each track's
own W+ smoother, edited and pasted back. A frame without a face passes through and is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from warpres.app.batch.pipeline import compose
from warpres.edits import LatentSmoother
from warpres.media.faces import FaceAligner, FaceNotFoundError
from warpres.media.fit import fit_square
from warpres.media.video.tracking import FaceTracker, SceneCutDetector

REDETECT_EVERY = 10   # frames; a face entering the picture is picked up within a third of a second


@dataclass
class VideoCounts:
    frames_without_face: int = 0
    faces_edited: int = 0
    scene_cuts: int = 0


class FrameEditor:
    """RGB frames -> edited RGB frames of the same size (see the module docstring).

    aligner: edit faces (None: the centred square, `fit` "crop" or "pad"). smoothing: W+
    smoothing alpha per face (1: off). fps: the source's rate (landmark smoothing runs in seconds).
    """

    def __init__(self, session, edits: Sequence, *, aligner: FaceAligner | None = None, smoothing: float = 1.0,
                 fps: float = 30.0, largest_face: bool = False, fit: str = "crop") -> None:
        self.session, self.edits, self.aligner = session, tuple(edits), aligner
        self.smoothing, self.largest_face, self.fit = smoothing, largest_face, fit
        self.counts = VideoCounts()
        self._tracker = FaceTracker(fps)
        self._cuts = SceneCutDetector()
        self._frame_index = 0
        self._whole_frame_smoother = LatentSmoother(smoothing)

    def __call__(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        if self.aligner is None:
            return self._edit_squares(frames)
        return self._edit_faces(frames)

    def _edit_squares(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        fits, squares, smoothers = [], [], []
        for frame in frames:
            if self._cuts(frame):
                self.counts.scene_cuts += 1
                self._whole_frame_smoother = LatentSmoother(self.smoothing)   # a new shot: its own codes
            fits.append(fit_square(frame.shape, self.fit))
            squares.append(fits[-1].cut(frame))
            smoothers.append(self._whole_frame_smoother)
        inversion = self.session.invert(squares, latent_filter=_per_row(smoothers))
        (edited,) = self.session.edit_many(inversion, [self.edits])
        return [fit.place(frame, image) for fit, frame, image in zip(fits, frames, edited, strict=True)]

    def _edit_faces(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        jobs = []   # (frame position in the batch, track, crop)
        for position, frame in enumerate(frames):
            cut = self._cuts(frame)
            if cut:
                self.counts.scene_cuts += 1
                self._tracker.reset()
            faces = self._faces_in(frame, search=cut or self._frame_index % REDETECT_EVERY == 0)
            if self.largest_face:
                faces = faces[:1]
            for track, face in self._tracker.update(faces, self._frame_index):
                jobs.append((position, track, self.aligner.crop(frame, face)))
            if not faces:
                self.counts.frames_without_face += 1
            self._frame_index += 1
        out = list(frames)
        if not jobs:
            return out
        smoothers = [track.state.setdefault("wplus", LatentSmoother(self.smoothing)) for _, track, _ in jobs]
        inversion = self.session.invert([crop.image for _, _, crop in jobs], latent_filter=_per_row(smoothers))
        (edited,) = self.session.edit_many(inversion, [self.edits])
        self.counts.faces_edited += len(jobs)
        for position in sorted({position for position, _, _ in jobs}):
            mine = [(crop, image) for (at, _, crop), image in zip(jobs, edited, strict=True) if at == position]
            out[position] = compose(frames[position], [crop for crop, _ in mine], [image for _, image in mine])
        return out


    def _faces_in(self, frame: np.ndarray, search: bool) -> list:
        followed = [] if search else [self.aligner.follow(frame, track.face) for track in self._tracker.tracks
                                      if track.missed == 0]
        followed = [face for face in followed if face is not None]
        if followed:
            return sorted(followed, key=lambda face: -face.box[2] * face.box[3])
        try:
            return self.aligner.detect(frame, f"frame {self._frame_index}")
        except FaceNotFoundError:
            return []


def _per_row(smoothers: list[LatentSmoother]) -> Callable[[np.ndarray], np.ndarray]:
    """A latent filter giving row i of the codes (in the order `Session.invert` hands them over,
    chunk by chunk) to ``smoothers[i]``."""
    rows = iter(smoothers)

    def smooth(wplus: np.ndarray) -> np.ndarray:
        return np.concatenate([next(rows)(code[None]) for code in wplus])

    return smooth
