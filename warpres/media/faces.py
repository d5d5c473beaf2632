"""Optional face crop and alignment with the Haar cascades OpenCV ships (numpy + OpenCV only).

The encoder expects FFHQ-like framing: an upright face, eyes level, forehead and chin inside.
`FaceAligner.align` finds the face, levels the eyes and returns a square crop plus the affine
map from the frame to the crop; `paste_back` puts an edited crop (any resolution) back into the
frame with a feathered mask, leaving every pixel outside the crop's footprint untouched.

Framing (FFHQ's recipe, `ffhq-dataset` alignment, restated with the eyes only since Haar finds
no mouth): with eye centres e_l, e_r and eye distance d = |e_r - e_l|, the crop is a square of
side ``CROP_SIDE_PER_EYE_DISTANCE * d`` = 4.1 d centred ``CENTER_BELOW_EYES * d`` = 0.12 d below
the eye midpoint, along the face's own down axis. FFHQ uses side 2 * max(2 d, 1.8 m) and centre
0.1 m below the eyes (m = eye-to-mouth distance, about 1.15 d), i.e. 4.1 d and 0.115 d. In an
S x S crop the eyes land at (0.378 S, 0.471 S) and (0.622 S, 0.471 S), 0.244 S apart; hairline
to chin spans about the middle half of the crop (chin near 0.85 S), hair and neck around it.

Detection: the frame is converted to grayscale, downscaled (INTER_AREA) so its longer side is at
most ``DetectionParams.detect_max_side`` px (the cascade's cost grows with the pixel count;
faces smaller than ``min_face_size`` px at that scale are not searched for), histogram-equalised
and searched with ``haarcascade_frontalface_default.xml``. For each face box (largest first) the
upper part of the box is resampled from the full-resolution gray frame to a fixed width
(``_EYE_ROI_WIDTH`` px) and searched with ``haarcascade_eye.xml``; the most plausible pair (one
per half of the box, similar size, distance and height as in a frontal face) is refined to the
centroid of the dark pupil/iris pixels inside each eye box. The largest face with an eye pair
wins; with no pair anywhere, the largest face is framed from its box and not rotated beyond the
search angle it was found at (``FACE_BOX_EYE_DISTANCE``, ``FACE_BOX_EYE_HEIGHT``: where the
eyes sit in a Haar box, measured on the test portrait; Haar boxes vary by about +-10 % between
scale steps). The frontal cascade finds faces rolled by up to about 20 degrees; when it finds
none, the frame is searched again rotated by each angle of ``search_angles``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from warpres.errors import ImageError, WarpresError

CROP_SIDE_PER_EYE_DISTANCE = 4.1
CENTER_BELOW_EYES = 0.12
FACE_BOX_EYE_DISTANCE = 0.45   # eye distance / Haar face-box width
FACE_BOX_EYE_HEIGHT = 0.37     # eye line below the box top / box height
DEFAULT_FEATHER = 0.1          # paste_back: soft band width / crop side

FACE_CASCADE = "haarcascade_frontalface_default.xml"
EYE_CASCADE = "haarcascade_eye.xml"

_EYE_ROI_WIDTH = 160             # face box width in the eye-search image, px
_EYE_ROI_HEIGHT = 0.65           # eye-search band: the top 65 % of the face box
_EYE_SIZE = (0.125, 0.45)        # eye box side / face box width, min and max
_MAX_EYE_ROLL_DEG = 30.0         # eye line vs face box axis, larger is not an eye pair
_MAX_FACES_TRIED = 3             # faces (largest first) searched for eyes
_ANTIALIAS_BELOW = 0.5           # warps shrinking more than this area-downsample the source first,
_ANTIALIAS_LEAVES = 0.7          # to a size the warp then shrinks by this (less blur than to 1.0)


class FaceNotFoundError(ImageError):
    """The face detector found no face in an image."""


@dataclass(frozen=True)
class DetectionParams:
    """Haar cascade settings (OpenCV `detectMultiScale` names in brackets).

    scale_factor [scaleFactor]: image pyramid step, > 1; smaller finds more, slower.
    min_neighbors [minNeighbors]: overlapping detections a face needs; higher, fewer false faces.
    min_face_size [minSize]: smallest face side searched, in px of the detection image.
    detect_max_side: longer side of the detection image; larger frames are downscaled first.
    eye_scale_factor, eye_min_neighbors: the same for the eye cascade inside the face box.
    search_angles: in-plane rotations (degrees, counter-clockwise) tried in order until a face
    is found; the first should be 0.
    """

    scale_factor: float = 1.1
    min_neighbors: int = 5
    min_face_size: int = 40
    detect_max_side: int = 640
    eye_scale_factor: float = 1.1
    eye_min_neighbors: int = 3
    search_angles: tuple[float, ...] = (0.0, -25.0, 25.0)

    def __post_init__(self) -> None:
        if not self.scale_factor > 1 or not self.eye_scale_factor > 1:
            raise ValueError("scale_factor and eye_scale_factor must be > 1")
        if self.min_neighbors < 0 or self.eye_min_neighbors < 0:
            raise ValueError("min_neighbors and eye_min_neighbors must be >= 0")
        if self.min_face_size < 20:
            raise ValueError(f"min_face_size must be >= 20 px (the cascade's window), got {self.min_face_size}")
        if self.detect_max_side < self.min_face_size:
            raise ValueError(f"detect_max_side ({self.detect_max_side}) must be >= min_face_size")
        if not self.search_angles:
            raise ValueError("search_angles must name at least one angle (0.0 for upright only)")


@dataclass(frozen=True)
class FaceCrop:
    """A face cropped from a frame.

    image: uint8 RGB (S, S, 3).
    matrix: float64 (2, 3) affine map frame -> crop, pixel centres at integer coordinates
    (OpenCV's convention): ``crop = cv2.warpAffine(frame, matrix, (S, S))``.
    rotation_deg: the rotation applied to level the face, degrees, counter-clockwise positive
    as seen on screen (the `cv2.getRotationMatrix2D` convention): a frame rotated by +15 degrees
    gives about 15 less than the original.
    method: "eyes" (framed and levelled from the eye pair) or "face_box" (from the box alone).
    face_box: (x, y, w, h), frame pixels (left / top edges): the detected face box, or, when
    it was found at a non-zero ``search_angle``, the upright bounding box of that rotated box.
    eyes: the eye centres (image-left first) in frame pixels, None for "face_box".
    info: one line saying how the crop was made, for logs and the CLI.
    """

    image: np.ndarray
    matrix: np.ndarray
    rotation_deg: float
    method: str
    face_box: tuple[float, float, float, float]
    eyes: tuple[tuple[float, float], tuple[float, float]] | None
    search_angle: float
    frame_shape: tuple[int, int]
    info: str

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) affine map crop -> frame."""
        return cv2.invertAffineTransform(self.matrix)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """Frame pixel coordinates (N, 2) -> crop pixel coordinates (N, 2)."""
        return _apply(self.matrix, points)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """Crop pixel coordinates (N, 2) -> frame pixel coordinates (N, 2)."""
        return _apply(self.inverse_matrix, points)


@dataclass(frozen=True)
class _Face:
    box: tuple[float, float, float, float]   # in detection-image pixels
    eyes: np.ndarray | None                   # (2, 2) frame pixels, image-left first


@dataclass
class FaceAligner:
    """Detect, level and crop the largest face of a frame to ``size`` x ``size``.

    The cascades load once per aligner; `align` may be called for every frame of a video.
    """

    size: int = 256
    params: DetectionParams = field(default_factory=DetectionParams)

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or self.size < 16:
            raise ValueError(f"crop size must be an integer >= 16, got {self.size!r}")
        self._faces = _load_cascade(FACE_CASCADE)
        self._eyes = _load_cascade(EYE_CASCADE)

    def align(self, frame: np.ndarray, name: str = "the image") -> FaceCrop:
        """uint8 RGB (H, W, 3) -> the aligned `FaceCrop` of its largest face.

        ``name`` (e.g. the file name) appears in the error message. Raises
        :class:`FaceNotFoundError` when no face is found, :class:`ImageError` on bad input.
        """
        _check_rgb8(frame, "frame", name)
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        height, width = gray.shape
        scale = min(1.0, self.params.detect_max_side / max(height, width))
        small = gray if scale == 1.0 else cv2.resize(
            gray, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
        scale_x, scale_y = small.shape[1] / width, small.shape[0] / height
        to_small = np.array([[scale_x, 0, 0.5 * scale_x - 0.5], [0, scale_y, 0.5 * scale_y - 0.5]])
        for angle in self.params.search_angles:
            rotated, to_rotated = _rotate_expanded(small, angle)
            boxes = self._detect_faces(rotated)
            if len(boxes):
                to_detection = _compose(to_rotated, to_small)   # frame -> detection image
                return self._crop(frame, gray, boxes, to_detection, float(angle), name)
        raise FaceNotFoundError(
            f"no face found in {name} (looked for a frontal face of at least "
            f"{round(self.params.min_face_size / scale)} px with OpenCV's Haar cascade); run without "
            f"--align-faces to edit the whole image, or crop the image tighter around a frontal face")

    def _detect_faces(self, gray: np.ndarray) -> np.ndarray:
        equalized = cv2.equalizeHist(gray)
        side = self.params.min_face_size
        if min(gray.shape) < side:
            return np.zeros((0, 4), np.int32)
        boxes = self._faces.detectMultiScale(equalized, scaleFactor=self.params.scale_factor,
                                             minNeighbors=self.params.min_neighbors, minSize=(side, side))
        boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
        return boxes[np.argsort(-(boxes[:, 2] * boxes[:, 3]), kind="stable")]

    def _crop(self, frame: np.ndarray, gray: np.ndarray, boxes: np.ndarray, to_detection: np.ndarray,
              angle: float, name: str) -> FaceCrop:
        faces = [_Face(tuple(float(v) for v in box), self._find_eyes(gray, box, to_detection))
                 for box in boxes[:_MAX_FACES_TRIED]]
        face = next((face for face in faces if face.eyes is not None), faces[0])
        from_detection = cv2.invertAffineTransform(to_detection)
        x, y, w, h = face.box
        # Frame-space axes of the detection image (rotated by `angle`, scaled): unit x and y.
        axis_x = from_detection[:, 0] / np.linalg.norm(from_detection[:, 0])
        detection_px = float(np.linalg.norm(from_detection[:, 0]))   # frame px per detection px
        if face.eyes is not None:
            left, right = face.eyes
            eye_vector = right - left
            distance = float(np.linalg.norm(eye_vector))
            axis_x = eye_vector / distance
            middle = (left + right) / 2
            method = "eyes"
        else:
            distance = FACE_BOX_EYE_DISTANCE * w * detection_px
            middle = _apply(from_detection, np.array([[x + w / 2 - 0.5, y + FACE_BOX_EYE_HEIGHT * h - 0.5]]))[0]
            method = "face_box"
        # Screen y points down, so (-x_y, x_x) is x turned a quarter towards the chin.
        axis_y = np.array([-axis_x[1], axis_x[0]])
        center = middle + CENTER_BELOW_EYES * distance * axis_y
        pixels_per_frame_px = self.size / (CROP_SIDE_PER_EYE_DISTANCE * distance)
        half = (self.size - 1) / 2
        matrix = np.empty((2, 3))
        matrix[0, :2] = pixels_per_frame_px * axis_x
        matrix[1, :2] = pixels_per_frame_px * axis_y
        matrix[:, 2] = half - matrix[:, :2] @ center
        image = _warp(frame, matrix, (self.size, self.size), cv2.BORDER_REFLECT_101, cv2.INTER_CUBIC)
        # An eye line sloping down to the right (y down) is levelled by turning counter-clockwise.
        rotation = math.degrees(math.atan2(axis_x[1], axis_x[0])) + 0.0   # + 0.0: no -0.0
        corners = _apply(from_detection, np.array([[x - 0.5, y - 0.5], [x + w - 0.5, y - 0.5],
                                                   [x - 0.5, y + h - 0.5], [x + w - 0.5, y + h - 0.5]]))
        (left_x, top_y), (right_x, bottom_y) = corners.min(axis=0), corners.max(axis=0)
        frame_box = (float(left_x), float(top_y), float(right_x - left_x), float(bottom_y - top_y))
        searched = f"face found with the frame rotated by {angle:+.0f} degrees; " if angle else ""
        if method == "eyes":
            info = f"{searched}aligned on the eyes: rotated by {rotation:+.1f} degrees to level them"
        else:
            info = (f"{searched}no eye pair found: framed from the face box, "
                    f"{'rotated by the search angle' if angle else 'not rotated'}")
        eyes = None if face.eyes is None else (tuple(face.eyes[0].tolist()), tuple(face.eyes[1].tolist()))
        return FaceCrop(image=image, matrix=matrix, rotation_deg=float(rotation), method=method,
                        face_box=frame_box, eyes=eyes, search_angle=angle,
                        frame_shape=(int(frame.shape[0]), int(frame.shape[1])), info=info)

    def _find_eyes(self, gray: np.ndarray, box: np.ndarray, to_detection: np.ndarray) -> np.ndarray | None:
        """Eye centres (2, 2) in frame pixels, image-left first, or None without a plausible pair."""
        x, y, w, h = (float(v) for v in box)
        zoom = _EYE_ROI_WIDTH / w
        roi_size = (_EYE_ROI_WIDTH, round(_EYE_ROI_HEIGHT * h * zoom))
        # frame -> detection image -> eye ROI (the box's top band, scaled to _EYE_ROI_WIDTH).
        to_roi = _compose(np.array([[zoom, 0, (0.5 - x) * zoom - 0.5], [0, zoom, (0.5 - y) * zoom - 0.5]]),
                          to_detection)
        roi = _warp(gray, to_roi, roi_size, cv2.BORDER_REPLICATE)
        low, high = (round(fraction * _EYE_ROI_WIDTH) for fraction in _EYE_SIZE)
        found = self._eyes.detectMultiScale(cv2.equalizeHist(roi), scaleFactor=self.params.eye_scale_factor,
                                            minNeighbors=self.params.eye_min_neighbors,
                                            minSize=(low, low), maxSize=(high, high))
        pair = _best_eye_pair(np.asarray(found, dtype=np.float64).reshape(-1, 4), _EYE_ROI_WIDTH, h * zoom)
        if pair is None:
            return None
        centres = np.array([_pupil_centre(roi, eye) for eye in pair])
        return _apply(cv2.invertAffineTransform(to_roi), centres)


def paste_back(frame: np.ndarray, edited_crop: np.ndarray, face_crop: FaceCrop,
               feather: float = DEFAULT_FEATHER) -> np.ndarray:
    """Warp ``edited_crop`` (uint8 RGB (R, R, 3), any R, e.g. 1024 for a 256 crop) back into
    ``frame`` (uint8 RGB (H, W, 3), the frame ``face_crop`` was cut from) -> a new frame.

    The crop is blended with a mask that is 1 inside the crop and falls smoothly (smoothstep)
    to 0 over the outer ``feather`` x R pixels of each side, so no seam shows. Pixels where the
    warped mask is 0 (outside the crop's footprint and its outermost ring) are returned exactly.
    A crop much larger than its footprint in the frame is area-downsampled first (no aliasing).
    """
    _check_rgb8(frame, "frame", "paste_back")
    _check_rgb8(edited_crop, "edited crop", "paste_back")
    if edited_crop.shape[0] != edited_crop.shape[1]:
        raise ImageError(f"paste_back: the edited crop must be square, got shape {edited_crop.shape}")
    if tuple(frame.shape[:2]) != tuple(face_crop.frame_shape):
        raise ImageError(f"paste_back: frame shape {frame.shape[:2]} differs from the frame the face was "
                         f"cropped from {face_crop.frame_shape}")
    if not 0 < feather <= 0.5:
        raise ValueError(f"feather must be in (0, 0.5], got {feather}")
    side = edited_crop.shape[0]
    step = side / face_crop.size                               # R px per crop px
    crop_to_edit = np.array([[step, 0, 0.5 * step - 0.5], [0, step, 0.5 * step - 0.5]])
    frame_to_edit = _compose(crop_to_edit, face_crop.matrix)
    edit_to_frame = cv2.invertAffineTransform(frame_to_edit)
    # Only the bounding box of the crop's footprint in the frame is touched.
    corners = _apply(edit_to_frame, np.array([[-0.5, -0.5], [side - 0.5, -0.5], [-0.5, side - 0.5],
                                              [side - 0.5, side - 0.5]]))
    height, width = frame.shape[:2]
    x0, y0 = (max(0, math.floor(v) - 1) for v in corners.min(axis=0))
    x1, y1 = (min(limit, math.ceil(v) + 2) for v, limit in zip(corners.max(axis=0), (width, height), strict=True))
    result = frame.copy()
    if x0 >= x1 or y0 >= y1:
        return result
    edit_to_roi = edit_to_frame.copy()
    edit_to_roi[:, 2] -= (x0, y0)
    roi_size = (x1 - x0, y1 - y0)
    warped = _warp(edited_crop.astype(np.float32), edit_to_roi, roi_size, cv2.BORDER_REPLICATE, cv2.INTER_CUBIC)
    mask = _warp(_feather_mask(side, feather), edit_to_roi, roi_size, cv2.BORDER_CONSTANT)[:, :, None]
    mask = np.clip(mask, 0, 1)
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    blended = np.floor(roi + mask * (warped - roi) + 0.5)
    result[y0:y1, x0:x1] = np.where(mask > 0, np.clip(blended, 0, 255), roi).astype(np.uint8)
    return result


def _feather_mask(side: int, feather: float) -> np.ndarray:
    """float32 (side, side): 0 on the outermost pixel ring, rising by smoothstep to 1 at
    ``feather * side`` pixels from the border."""
    distance = np.arange(side, dtype=np.float32)
    distance = np.minimum(distance, distance[::-1])                      # px to the nearest edge
    ramp = np.clip(distance / max(feather * side, 1.0), 0, 1)
    ramp = ramp * ramp * (3 - 2 * ramp)
    return np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)


def _best_eye_pair(eyes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray] | None:
    """The eye boxes (x, y, w, h) most like a frontal pair in a face box ``width`` x ``height``
    (eye-ROI pixels), image-left first; None when no pair is plausible."""
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
            if not (0.25 * width <= distance <= 0.75 * width and roll <= _MAX_EYE_ROLL_DEG
                    and sizes[1] <= 1.5 * sizes[0]):
                continue
            middle = (left + right) / 2
            score = (abs(middle[0] - width / 2) / width + abs(middle[1] - FACE_BOX_EYE_HEIGHT * height) / height
                     + abs(distance / width - FACE_BOX_EYE_DISTANCE))
            if score < best_score:
                best, best_score = (eyes[i], eyes[j]), score
    return best


def _pupil_centre(gray: np.ndarray, eye: np.ndarray) -> tuple[float, float]:
    """Centroid of the darkest pixels (iris and pupil) in the middle of an eye box (x, y, w, h):
    steadier than the box centre, which moves in whole detector steps."""
    x, y, w, h = eye
    x0, x1 = int(x + 0.15 * w), int(math.ceil(x + 0.85 * w))
    y0, y1 = int(y + 0.3 * h), int(math.ceil(y + 0.8 * h))   # below the brow
    patch = cv2.GaussianBlur(gray[y0:y1, x0:x1].astype(np.float32), (0, 0), 0.03 * w)
    if patch.size == 0:
        return float(x + w / 2 - 0.5), float(y + h / 2 - 0.5)
    weight = np.clip(np.percentile(patch, 15) - patch + 1, 0, None)
    rows, cols = np.mgrid[y0:y1, x0:x1]
    total = float(weight.sum())
    return float((weight * cols).sum() / total), float((weight * rows).sum() / total)


def _warp(source: np.ndarray, matrix: np.ndarray, size: tuple[int, int], border: int,
          interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
    """``cv2.warpAffine(source, matrix, size)``, but when the map shrinks the source by more
    than `_ANTIALIAS_BELOW`, the part of the source it reads is first area-downsampled so that
    the warp itself shrinks by `_ANTIALIAS_LEAVES`: no aliasing, and less blur than an area
    resize all the way to the output scale followed by a second interpolation."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))    # output px per source px
    if scale < _ANTIALIAS_BELOW:
        inverse = cv2.invertAffineTransform(matrix)
        w, h = size
        corners = _apply(inverse, np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]]))
        src_h, src_w = source.shape[:2]
        x0, y0 = (max(0, math.floor(v) - 2) for v in corners.min(axis=0))
        x1, y1 = (min(limit, math.ceil(v) + 3) for v, limit in zip(corners.max(axis=0), (src_w, src_h), strict=True))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = scale / _ANTIALIAS_LEAVES
            small_w, small_h = max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor))
            small = cv2.resize(source[y0:y1, x0:x1], (small_w, small_h), interpolation=cv2.INTER_AREA)
            step_x, step_y = (x1 - x0) / small_w, (y1 - y0) / small_h   # source px per small px
            small_to_source = np.array([[step_x, 0, x0 + 0.5 * step_x - 0.5], [0, step_y, y0 + 0.5 * step_y - 0.5]])
            source, matrix = small, _compose(matrix, small_to_source)
    return cv2.warpAffine(source, matrix, size, flags=interpolation, borderMode=border, borderValue=0)


def _rotate_expanded(image: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate counter-clockwise by ``angle`` degrees onto a canvas that holds the whole image;
    returns the rotated image and the (2, 3) map image -> rotated."""
    height, width = image.shape[:2]
    if angle == 0:
        return image, np.array([[1.0, 0, 0], [0, 1.0, 0]])
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    new_w, new_h = math.ceil(width * cos + height * sin), math.ceil(width * sin + height * cos)
    matrix[:, 2] += ((new_w - width) / 2, (new_h - height) / 2)
    return cv2.warpAffine(image, matrix, (new_w, new_h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE), matrix


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """(2, 3) affine maps: ``outer o inner`` (inner first)."""
    return outer[:, :2] @ inner + np.concatenate([np.zeros((2, 2)), outer[:, 2:]], axis=1)


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return points @ matrix[:, :2].T + matrix[:, 2]


def _check_rgb8(image: np.ndarray, what: str, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"{name}: expected the {what} as uint8 RGB (H, W, 3), got {got}; convert with "
                         f"warpres.media.imageio.to_rgb8")
    if min(image.shape[:2]) == 0:
        raise ImageError(f"{name}: the {what} has zero size, shape {image.shape}")


def _load_cascade(file_name: str) -> cv2.CascadeClassifier:
    path = Path(getattr(getattr(cv2, "data", None), "haarcascades", "")) / file_name
    cascade = cv2.CascadeClassifier(str(path)) if path.is_file() else None
    if cascade is None or cascade.empty():
        raise WarpresError(f"{path}: OpenCV Haar cascade not found or unreadable; face alignment needs "
                           f"opencv-python-headless>=4.8,<5, which ships cv2.data.haarcascades")
    return cascade
