"""Face detection with five landmarks: `yuface` (libfacedetection's CNN compiled into the wheel,
no download), OpenCV's Haar cascades as the fallback where `yuface` is not installed.

A `Face` carries its box and the five points FFHQ alignment needs (`warpres.media.faces`): the
eye on the image's left, the other eye, the nose tip, the mouth corner on the image's left, the
other corner, in frame pixels with pixel centres at integer coordinates (OpenCV's convention).

yuface returns integer points at the scale it ran on, and it degrades on frames larger than
about 960 px (its own warning). So detection is two-pass: the frame is area-downscaled to at
most `DETECT_MAX_SIDE` px to find the faces (a frame much larger than that is also searched at
twice that scale in overlapping tiles, for faces too small to survive the downscale), then each
face is detected again in a crop around it, turned upright by its eye line and resampled so
that the face box is `REFINE_FACE_SIDE` px wide, twice, and in the mirrored crop too (the mean
of the two halves left / right bias). The refinement gives points to about 1.5 px on a face
with 45 px between the eyes (benchmarks/alignment.py: the detector's own noise; averaging more
jittered views does not reduce it) and resolves small ones; a face it does not find again keeps
its first-pass points.

The Haar fallback (frontal-face cascade, then an eye pair inside the box, refined to the dark
pupil centroid) has no mouth or nose detector: those points are placed where they sit relative
to the eyes in an average frontal face (`_HAAR_MOUTH_BELOW_EYES`, `_HAAR_MOUTH_HALF_WIDTH`,
`_HAAR_NOSE_BELOW_EYES`), and a box without an eye pair is dropped.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from warpres.errors import WarpresError

DETECT_MAX_SIDE = 640
REFINE_FACE_SIDE = 160         # face box width in the refinement crop, px
REFINE_CONTEXT = 2.0            # refinement crop side / face box side
REFINE_PASSES = 2               # the second pass starts from a levelled face
MIN_SCORE = 0.5                 # yuface confidence (0..1) a face needs
TILE_ABOVE = 1.5                # frames longer than this x detect_max_side are also searched in tiles
TILE_OVERLAP = 0.25             # of a tile's side, so a face on a tile's edge is whole in the next
MIN_DUPLICATE_OVERLAP = 0.3     # a tile's face overlapping a kept one this much is the same face

_HAAR_MOUTH_BELOW_EYES = 1.15   # eye-to-mouth distance / eye distance, frontal faces
_HAAR_MOUTH_HALF_WIDTH = 0.4    # half the mouth width / eye distance
_HAAR_NOSE_BELOW_EYES = 0.6
_HAAR_FACE_CASCADE = "haarcascade_frontalface_default.xml"
_HAAR_EYE_CASCADE = "haarcascade_eye.xml"
_HAAR_EYE_ROI_WIDTH = 160       # face box width in the eye-search image, px
_HAAR_EYE_BAND = 0.65           # eye search: the top 65 % of the face box
_HAAR_EYE_SIZE = (0.125, 0.45)  # eye box side / face box width, min and max
_HAAR_EYE_DISTANCE = 0.45       # eye distance / face box width in a frontal face
_HAAR_EYE_HEIGHT = 0.37         # eye line below the box top / box height


@dataclass(frozen=True)
class Face:
    """One detected face. box: (x, y, w, h) in frame pixels (left / top edges); points: float64
    (5, 2) as the module docstring orders them; score: detector confidence in [0, 1]."""

    box: tuple[float, float, float, float]
    points: np.ndarray
    score: float

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.points[1] - self.points[0]))


@dataclass(frozen=True)
class DetectionSettings:
    """How hard `FaceDetector` looks. detect_max_side: the first pass's frame size; refine_side:
    the face box width of the refinement crops; refine_passes: how many (0: first-pass points);
    mirrored: also detect in the mirrored refinement crop and average (halves left / right bias)."""

    detect_max_side: int = DETECT_MAX_SIDE
    refine_side: int = REFINE_FACE_SIDE
    refine_passes: int = REFINE_PASSES
    mirrored: bool = True
    tiled: bool = True


PRECISE = DetectionSettings()
# Video: a quarter of the pixels in the first pass, no tiles, plain refinements; between full
# detections a known face is followed by one refinement around it (`FaceDetector.follow`).
FAST = DetectionSettings(detect_max_side=320, refine_side=128, refine_passes=2, mirrored=False, tiled=False)


class FaceDetector:
    """`detect(frame)` -> the faces of a uint8 RGB frame, largest first; `follow(frame, face)` ->
    that face again in a new frame, looked for around where it was. ``backend``: "yuface",
    "haar" or "auto" (yuface where installed)."""

    def __init__(self, backend: str = "auto", settings: DetectionSettings = PRECISE) -> None:
        if backend not in ("auto", "yuface", "haar"):
            raise ValueError(f"face detector must be auto, yuface or haar, got {backend!r}")
        self.settings = settings
        self._yuface = None
        if backend in ("auto", "yuface"):
            try:
                import yuface
            except ImportError:
                if backend == "yuface":
                    raise WarpresError("the yuface face detector is not installed: pip install yuface") from None
            else:
                self._yuface = yuface
        self.name = "yuface" if self._yuface is not None else "haar"
        self._haar = None if self._yuface is not None else _HaarCascades()

    def detect(self, frame: np.ndarray) -> list[Face]:
        faces = self._detect_yuface(frame) if self._yuface is not None else self._haar.detect(frame)
        return sorted(faces, key=lambda face: -face.box[2] * face.box[3])

    def follow(self, frame: np.ndarray, face: Face) -> Face | None:
        """``face`` (from an earlier frame) in ``frame``, or None where it is no longer there."""
        if self._yuface is None:
            faces = self._haar.detect(frame)
            near = [f for f in faces if np.linalg.norm(f.points.mean(axis=0) - face.points.mean(axis=0))
                    < 0.5 * max(face.box[2:])]
            return min(near, key=lambda f: np.linalg.norm(f.points.mean(axis=0) - face.points.mean(axis=0)),
                       default=None)
        return self._refine_once(frame, face)

    def _detect_yuface(self, frame: np.ndarray) -> list[Face]:
        side = self.settings.detect_max_side
        small, to_small = _downscaled(frame, side)
        from_small = cv2.invertAffineTransform(to_small)
        first = [Face(_map_box(from_small, box), apply_affine(from_small, points), score)
                 for score, box, points in self._run_yuface(small)]
        if self.settings.tiled and max(frame.shape[:2]) > TILE_ABOVE * side:
            first = _merged(first, self._detect_in_tiles(frame, min(1.0, 2 * side / max(frame.shape[:2]))))
        faces = []
        for face in first:
            for _ in range(self.settings.refine_passes):
                face = self._refine_once(frame, face) or face
            faces.append(face)
        return _distinct(faces)

    def _detect_in_tiles(self, frame: np.ndarray, scale: float) -> list[Face]:
        """Faces too small for the downscaled first pass: the frame at ``scale`` (twice the first
        pass's), in overlapping tiles of the first pass's size."""
        side = self.settings.detect_max_side
        tile = side / scale                                       # frame px per tile
        step = tile * (1 - TILE_OVERLAP)
        height, width = frame.shape[:2]
        faces = []
        for top in np.arange(0, max(1.0, height - tile * TILE_OVERLAP), step):
            for left in np.arange(0, max(1.0, width - tile * TILE_OVERLAP), step):
                to_tile = np.array([[scale, 0, 0.5 * scale - 0.5 - scale * left],
                                    [0, scale, 0.5 * scale - 0.5 - scale * top]])
                from_tile = cv2.invertAffineTransform(to_tile)
                faces += [Face(_map_box(from_tile, box), apply_affine(from_tile, points), score)
                          for score, box, points in self._run_yuface(_warp(frame, to_tile, side))]
        return faces

    def _refine_once(self, frame: np.ndarray, face: Face) -> Face | None:
        """Detect ``face`` again in a crop around it, turned upright by its eye line and resampled
        so that the face box is `refine_side` px wide; None where it is not found there."""
        x, y, w, h = face.box
        side = self.settings.refine_side
        zoom = side / max(w, h)                                    # refinement px per frame px
        size = round(REFINE_CONTEXT * side)
        eyes = face.points[1] - face.points[0]
        roll = math.atan2(eyes[1], eyes[0])
        cos, sin = math.cos(roll) * zoom, math.sin(roll) * zoom
        centre = face.points[[0, 1, 3, 4]].mean(axis=0)
        to_crop = np.array([[cos, sin, 0.0], [-sin, cos, 0.0]])
        to_crop[:, 2] = size / 2 - 0.5 - to_crop[:, :2] @ centre
        crop = _warp(frame, to_crop, size)
        found = self._nearest_middle(crop)
        if found is None:
            return None
        score, box, points = found
        if self.settings.mirrored:
            mirror = self._nearest_middle(crop[:, ::-1])
            if mirror is not None:   # its points mirrored back: left and right swap
                points = (points + mirror[2][[1, 0, 2, 4, 3]] * (-1, 1) + (size - 1, 0)) / 2
        from_crop = cv2.invertAffineTransform(to_crop)
        points = apply_affine(from_crop, points)
        if np.linalg.norm(points[[0, 1, 3, 4]].mean(axis=0) - centre) > 0.5 * max(w, h):
            return None                                            # another face
        return Face(_upright_box(from_crop, box, zoom), points, score)

    def _nearest_middle(self, crop: np.ndarray) -> tuple[float, tuple[float, ...], np.ndarray] | None:
        """The detection nearest the middle of ``crop``, or None."""
        found = self._run_yuface(np.ascontiguousarray(crop))
        if not found:
            return None
        middle = (crop.shape[1] - 1) / 2, (crop.shape[0] - 1) / 2
        return min(found, key=lambda item: np.linalg.norm(item[2][[0, 1, 3, 4]].mean(axis=0) - middle))

    def _run_yuface(self, rgb: np.ndarray) -> list[tuple[float, tuple[float, ...], np.ndarray]]:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the size warning: callers keep frames below it
            scores, boxes, points = self._yuface.detect(bgr, MIN_SCORE)
        return [(float(score) / 100, tuple(float(v) for v in box), np.asarray(pts, np.float64).reshape(5, 2))
                for score, box, pts in zip(scores.astype(np.int64), boxes.astype(np.int64),
                                           points.astype(np.int64), strict=True)]


def _distinct(faces: list[Face]) -> list[Face]:
    """One face per face: a part found in a tile may refine onto a face found whole; of faces whose
    landmark centres lie within half an eye distance, the first (the first pass's) is kept."""
    kept: list[Face] = []
    for face in faces:
        centre = face.points[[0, 1, 3, 4]].mean(axis=0)
        if all(np.linalg.norm(centre - other.points[[0, 1, 3, 4]].mean(axis=0)) > 0.5 * other.eye_distance
               for other in kept):
            kept.append(face)
    return kept


def _merged(faces: list[Face], more: list[Face]) -> list[Face]:
    """``faces`` plus those of ``more`` that overlap none of them (nor each other) by
    `MIN_DUPLICATE_OVERLAP` intersection over union."""
    kept = list(faces)
    for face in sorted(more, key=lambda f: -f.score):
        if all(box_overlap(face.box, other.box) < MIN_DUPLICATE_OVERLAP for other in kept):
            kept.append(face)
    return kept


def box_overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = width * height
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _upright_box(from_crop: np.ndarray, box: tuple[float, ...], zoom: float) -> tuple[float, float, float, float]:
    """A box (x, y, w, h) found in a turned, zoomed crop as an upright frame box of the same size
    around the same centre (the face's extent, not its exact outline, is what callers use)."""
    x, y, w, h = box
    centre = apply_affine(from_crop, np.array([[x + w / 2 - 0.5, y + h / 2 - 0.5]]))[0]
    width, height = w / zoom, h / zoom
    return float(centre[0] + 0.5 - width / 2), float(centre[1] + 0.5 - height / 2), float(width), float(height)


def _downscaled(frame: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """The frame area-downscaled so its longer side is at most ``max_side``, and the (2, 3) map
    frame -> downscaled (pixel centres)."""
    height, width = frame.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return frame, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / width, small.shape[0] / height
    return small, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])


def _warp(frame: np.ndarray, to_crop: np.ndarray, size: int) -> np.ndarray:
    """``cv2.warpAffine(frame, to_crop, (size, size))`` reading only the region it needs (bounded
    memory on huge frames), area-downscaled first where the map shrinks."""
    inverse = cv2.invertAffineTransform(to_crop)
    edge = size - 0.5
    corners = apply_affine(inverse, np.array([[-0.5, -0.5], [edge, -0.5], [-0.5, edge], [edge, edge]]))
    height, width = frame.shape[:2]
    left, top = (max(0, math.floor(v) - 2) for v in corners.min(axis=0))
    right, bottom = (min(limit, math.ceil(v) + 3)
                     for v, limit in zip(corners.max(axis=0), (width, height), strict=True))
    if right - left < 2 or bottom - top < 2:
        return np.zeros((size, size, *frame.shape[2:]), frame.dtype)
    region = frame[top:bottom, left:right]
    to_local = compose_affine(to_crop, np.array([[1.0, 0, left], [0, 1.0, top]]))
    scale = math.sqrt(abs(np.linalg.det(to_crop[:, :2])))
    if scale < 0.7:
        small_w, small_h = max(2, round(region.shape[1] * scale)), max(2, round(region.shape[0] * scale))
        sx, sy = region.shape[1] / small_w, region.shape[0] / small_h        # region px per small px
        region = cv2.resize(region, (small_w, small_h), interpolation=cv2.INTER_AREA)
        to_local = compose_affine(to_local, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]))
    return cv2.warpAffine(region, to_local, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def compose_affine(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine maps (OpenCV's layout): ``outer o inner`` (inner first)."""
    return outer[:, :2] @ inner + np.concatenate([np.zeros((2, 2)), outer[:, 2:]], axis=1)


def _map_box(matrix: np.ndarray, box: tuple[float, ...]) -> tuple[float, float, float, float]:
    x, y, w, h = box
    (left, top), (right, bottom) = apply_affine(matrix, np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5]]))
    return float(left + 0.5), float(top + 0.5), float(right - left), float(bottom - top)


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A (2, 3) affine map applied to points (N, 2) -> (N, 2)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


class _HaarCascades:
    """The fallback detector: OpenCV's frontal-face and eye cascades (see the module docstring)."""

    def __init__(self) -> None:
        self._faces = _load_cascade(_HAAR_FACE_CASCADE)
        self._eyes = _load_cascade(_HAAR_EYE_CASCADE)

    def detect(self, frame: np.ndarray) -> list[Face]:
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        small, to_small = _downscaled(gray, DETECT_MAX_SIDE)
        boxes = self._faces.detectMultiScale(cv2.equalizeHist(small), scaleFactor=1.1, minNeighbors=5,
                                             minSize=(40, 40))
        from_small = cv2.invertAffineTransform(to_small)
        faces = []
        for box in np.asarray(boxes, np.float64).reshape(-1, 4):
            frame_box = _map_box(from_small, box)
            eyes = self._find_eyes(gray, frame_box)
            if eyes is not None:
                faces.append(Face(frame_box, _points_from_eyes(eyes), 0.5))
        return faces

    def _find_eyes(self, gray: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray | None:
        x, y, w, h = box
        zoom = _HAAR_EYE_ROI_WIDTH / w
        to_roi = np.array([[zoom, 0, (0.5 - x) * zoom - 0.5], [0, zoom, (0.5 - y) * zoom - 0.5]])
        band = round(_HAAR_EYE_BAND * h * zoom)
        roi = np.ascontiguousarray(_warp(gray, to_roi, max(_HAAR_EYE_ROI_WIDTH, band))[:band, :_HAAR_EYE_ROI_WIDTH])
        low, high = (round(f * _HAAR_EYE_ROI_WIDTH) for f in _HAAR_EYE_SIZE)
        found = self._eyes.detectMultiScale(cv2.equalizeHist(roi), scaleFactor=1.1, minNeighbors=3,
                                            minSize=(low, low), maxSize=(high, high))
        pair = _best_eye_pair(np.asarray(found, np.float64).reshape(-1, 4), _HAAR_EYE_ROI_WIDTH, h * zoom)
        if pair is None:
            return None
        return apply_affine(cv2.invertAffineTransform(to_roi), np.array([_pupil_centre(roi, eye) for eye in pair]))


def _points_from_eyes(eyes: np.ndarray) -> np.ndarray:
    left, right = eyes
    across = right - left
    down = np.array([-across[1], across[0]])          # y points down: a quarter turn towards the chin
    middle = (left + right) / 2
    mouth = middle + _HAAR_MOUTH_BELOW_EYES * down
    return np.stack([left, right, middle + _HAAR_NOSE_BELOW_EYES * down,
                     mouth - _HAAR_MOUTH_HALF_WIDTH * across, mouth + _HAAR_MOUTH_HALF_WIDTH * across])


def _best_eye_pair(eyes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The eye boxes (x, y, w, h) most like a frontal pair in a face box ``width`` x ``height``,
    image-left first; None when no pair is plausible."""
    best, best_score = None, math.inf
    centres = eyes[:, :2] + eyes[:, 2:] / 2
    for i in range(len(eyes)):
        for j in range(len(eyes)):
            left, right = centres[i], centres[j]
            if not (left[0] < 0.55 * width and right[0] > 0.45 * width and left[0] < right[0]):
                continue
            distance = float(np.linalg.norm(right - left))
            roll = abs(math.degrees(math.atan2(right[1] - left[1], right[0] - left[0])))
            sizes = sorted((eyes[i, 2], eyes[j, 2]))
            if not (0.25 * width <= distance <= 0.75 * width and roll <= 30 and sizes[1] <= 1.5 * sizes[0]):
                continue
            middle = (left + right) / 2
            score = (abs(middle[0] - width / 2) / width + abs(middle[1] - _HAAR_EYE_HEIGHT * height) / height
                     + abs(distance / width - _HAAR_EYE_DISTANCE))
            if score < best_score:
                best, best_score = (eyes[i], eyes[j]), score
    return best


def _pupil_centre(gray: np.ndarray, eye: np.ndarray) -> tuple[float, float]:
    """Centroid of the darkest pixels (iris and pupil) in the middle of an eye box: steadier than
    the box centre, which moves in whole detector steps."""
    x, y, w, h = eye
    x0, x1 = int(x + 0.15 * w), int(math.ceil(x + 0.85 * w))
    y0, y1 = int(y + 0.3 * h), int(math.ceil(y + 0.8 * h))   # below the brow
    if y1 <= y0 or x1 <= x0:
        return float(x + w / 2 - 0.5), float(y + h / 2 - 0.5)
    patch = cv2.GaussianBlur(gray[y0:y1, x0:x1].astype(np.float32), (0, 0), 0.03 * w)
    weight = np.clip(np.percentile(patch, 15) - patch + 1, 0, None)
    rows, cols = np.mgrid[y0:y1, x0:x1]
    total = float(weight.sum())
    return float((weight * cols).sum() / total), float((weight * rows).sum() / total)


def _load_cascade(file_name: str) -> cv2.CascadeClassifier:
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / file_name
    cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
    if cascade is None or cascade.empty():
        raise WarpresError(f"{path}: OpenCV Haar cascade not found or unreadable; the fallback face detector "
                           f"needs opencv-python-headless>=4.8,<5 (or pip install yuface)")
    return cascade
