"""Faces followed across video frames: landmark smoothing per face, tracks, scene cuts.

Landmarks from a per-frame detector jitter by a pixel or two, and an alignment that follows the
jitter makes the edited face shimmer. Each track smooths its five points with the One-Euro
filter (Casiez, Roussel and Vogel, CHI 2012): a low-pass filter whose cutoff rises with the
points' speed, so a still face is held steady and a moving one is followed without lag. With
the signal's speed ``dx`` (itself low-passed at ``derivative_cutoff`` Hz) the cutoff is
``min_cutoff + beta * |dx|`` and the smoothing factor of an exponential filter at sampling
interval ``te`` is ``1 / (1 + tau / te)`` with ``tau = 1 / (2 pi cutoff)``. Here speed is measured
in eye distances per second, so one setting serves small and large faces.

A detection joins the track whose last box overlaps it most (intersection over union at least
`MIN_OVERLAP`), else it starts a track; a track not seen for `MAX_MISSED` frames ends. A scene
cut (the frame's colour histogram changes abruptly) ends every track, so neither the landmarks
nor the W+ smoothing of one shot leaks into the next.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from warpres.media.detection import Face, box_overlap

MIN_OVERLAP = 0.3
MAX_MISSED = 5
SCENE_CUT_DISTANCE = 0.5     # Bhattacharyya distance between consecutive frames' histograms


class OneEuroFilter:
    """The One-Euro filter on arrays of any fixed shape (see the module docstring)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, derivative_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or derivative_cutoff <= 0 or beta < 0:
            raise ValueError("One-Euro cutoffs must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.derivative_cutoff = min_cutoff, beta, derivative_cutoff
        self._value: np.ndarray | None = None
        self._speed: np.ndarray | None = None
        self._time: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, interval: float) -> np.ndarray | float:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / interval)

    def __call__(self, value: np.ndarray, time: float, scale: float = 1.0) -> np.ndarray:
        """The filtered value at ``time`` (seconds); ``scale`` divides the speed (e.g. face size)."""
        value = np.asarray(value, np.float64)
        if self._value is None or self._time is None or time <= self._time:
            self._value, self._speed, self._time = value.copy(), np.zeros_like(value), time
            return value.copy()
        interval = time - self._time
        speed = (value - self._value) / interval
        self._speed = self._speed + self._alpha(self.derivative_cutoff, interval) * (speed - self._speed)
        cutoff = self.min_cutoff + self.beta * np.abs(self._speed) / max(scale, 1e-9)
        self._value = self._value + self._alpha(cutoff, interval) * (value - self._value)
        self._time = time
        return self._value.copy()


@dataclass
class Track:
    """One face followed across frames; ``state`` holds what callers keep per face (a W+ smoother)."""

    id: int
    face: Face                    # the last detection, unsmoothed (where to look in the next frame)
    points: OneEuroFilter
    missed: int = 0
    state: dict[str, Any] = field(default_factory=dict)


class FaceTracker:
    """Detections per frame -> (track, smoothed face) pairs; see the module docstring."""

    def __init__(self, fps: float, min_cutoff: float = 1.0, beta: float = 0.5) -> None:
        self.fps = fps
        self.min_cutoff, self.beta = min_cutoff, beta
        self.tracks: list[Track] = []
        self._next_id = 0

    def reset(self) -> None:
        self.tracks = []

    def update(self, faces: list[Face], frame_index: int) -> list[tuple[Track, Face]]:
        time = frame_index / self.fps
        unmatched = list(self.tracks)
        matched: list[tuple[Track, Face]] = []
        for face in faces:
            best = max(unmatched, key=lambda track: box_overlap(track.face.box, face.box), default=None)
            if best is None or box_overlap(best.face.box, face.box) < MIN_OVERLAP:
                best = Track(self._next_id, face, OneEuroFilter(self.min_cutoff, self.beta))
                self._next_id += 1
                self.tracks.append(best)
            else:
                unmatched.remove(best)
            best.face, best.missed = face, 0
            smoothed = best.points(face.points, time, scale=face.eye_distance)
            matched.append((best, Face(face.box, smoothed, face.score)))
        for track in unmatched:
            track.missed += 1
        self.tracks = [track for track in self.tracks if track.missed <= MAX_MISSED]
        return matched


class SceneCutDetector:
    """True for a frame whose colour histogram is far from the previous frame's."""

    def __init__(self, threshold: float = SCENE_CUT_DISTANCE) -> None:
        self.threshold = threshold
        self._previous: np.ndarray | None = None

    def __call__(self, frame: np.ndarray) -> bool:
        small = cv2.resize(frame, (64, 64), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV)
        histogram = cv2.calcHist([hsv], [0, 1, 2], None, [8, 4, 4], [0, 180, 0, 256, 0, 256])
        histogram = cv2.normalize(histogram, None).astype(np.float32)
        previous, self._previous = self._previous, histogram
        if previous is None:
            return False
        return cv2.compareHist(previous, histogram, cv2.HISTCMP_BHATTACHARYYA) > self.threshold
