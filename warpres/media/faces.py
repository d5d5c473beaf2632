"""FFHQ face alignment from five landmarks, and paste-back by its exact inverse.

The official StyleGAN / e4e / StyleRes preprocessing (the FFHQ recipe) frames a face by an
oriented square, the *quad*, computed from the eye centres and the mouth corners only: with
eye_avg, eye_to_eye = right eye - left eye, and eye_to_mouth = mouth midpoint - eye_avg, the
quad's x axis is eye_to_eye minus eye_to_mouth turned a quarter clockwise (so both the eye line
and the nose-mouth line level it), its half side is max(2 |eye_to_eye|, 1.8 |eye_to_mouth|) and
its centre eye_avg + 0.1 eye_to_mouth. The quad fills the crop. Where it reaches past the frame,
the frame is reflect-padded, blurred towards the padding (sigma 0.02 quad sides, fading in from a
third of the pad inside the frame) and faded towards the median colour outwards, with a pad of at
least 0.3 quad sides, as the official code does; a quad much larger than the crop is area-
downscaled first, so a 10k x 10k photo costs memory for the face region at twice the crop size.

A `Framing` places the quad in the crop: FFHQ's fills it; the demo models were trained on
renders whose quad (measured with `yuface` on 200 renders: side 0.767 +- 0.072 of the image,
centre (0.515, 0.454) +- (0.067, 0.031)) sits smaller and a little high, so their framing puts the
quad there.

yuface's eye point is the centre of the eye as the detector learned it, where the official code
averages dlib's six eye-contour points. Measured against hand-marked pupil centres on the
astronaut portrait, yuface's eyes sit 1.8 px lower (4 % of the 43 px eye distance) and 0.6 px
wider apart, about the detector's own noise (`benchmarks/alignment.py`); with one marked face
and no contour landmarks to compare with (dlib's model needs a download), no offset is applied.

`FaceCrop.matrix` is the similarity frame -> crop; `paste_back` warps an edit (at any
resolution) back with its exact inverse through a feathered face mask (an ellipse over the quad,
so the crop's square corners never show) and, in the seam, shifts the edit's colours to the
frame's by their smoothed difference, so a global colour change of the edit does not draw a
ring. Pixels outside the mask are returned exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from warpres.errors import ImageError
from warpres.media.detection import PRECISE, DetectionSettings, Face, FaceDetector, apply_affine, compose_affine

MIN_FACE_EYE_DISTANCE = 8.0       # px in the frame; a 32 px face has eyes about 12 px apart
QUAD_EYE_FACTOR = 2.0             # half side >= this x |eye_to_eye|
QUAD_MOUTH_FACTOR = 1.8           # half side >= this x |eye_to_mouth|
QUAD_CENTRE_TOWARDS_MOUTH = 0.1   # centre = eye_avg + this x eye_to_mouth
PAD_BLUR = 0.02                   # blur sigma / quad side in the padding
PAD_MIN = 0.3                     # pad width / quad side when any padding is needed
MASK_RADII = (0.80, 0.92)         # face mask ellipse half axes / quad half side (x, y)
MASK_FEATHER = 0.25               # soft band of the face mask, fraction of its radius
SEAM_SMOOTHING = 0.08             # seam colour correction blur sigma / the crop's side in the frame


class FaceNotFoundError(ImageError):
    """No face (large enough to edit) in an image."""


@dataclass(frozen=True)
class Framing:
    """Where the FFHQ quad sits in a model's input: its side and centre as fractions of the crop."""

    name: str
    quad_side: float = 1.0
    quad_centre: tuple[float, float] = (0.5, 0.5)


FFHQ = Framing("ffhq")
DEMO = Framing("demo", quad_side=0.767, quad_centre=(0.515, 0.454))
FRAMINGS = {framing.name: framing for framing in (FFHQ, DEMO)}


@dataclass(frozen=True)
class FaceCrop:
    """A face aligned out of a frame.

    image: uint8 RGB (S, S, 3). matrix: float64 (2, 3) similarity frame -> crop, pixel centres at
    integer coordinates (``cv2.warpAffine(frame, matrix, (S, S))`` reads the same pixels away from
    the frame's border, for faces not much larger than the crop; larger ones are area-shrunk
    first). face: the detection it came from. quad: (4, 2) the FFHQ quad's corners in
    the frame (top-left, bottom-left, bottom-right, top-right). framing: how the quad was placed
    (it places the paste-back mask too). padded: the quad reached past the frame. info: one line
    saying how the crop was made.
    """

    image: np.ndarray
    matrix: np.ndarray
    face: Face
    quad: np.ndarray
    framing: Framing
    frame_shape: tuple[int, int]
    padded: bool
    info: str

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def rotation_deg(self) -> float:
        """Counter-clockwise turn applied to level the face (`cv2.getRotationMatrix2D` sign)."""
        return math.degrees(math.atan2(-self.matrix[1, 0], self.matrix[0, 0])) + 0.0   # + 0.0: no -0.0

    @property
    def inverse_matrix(self) -> np.ndarray:
        """(2, 3) crop -> frame."""
        return cv2.invertAffineTransform(self.matrix)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.matrix, points)

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.inverse_matrix, points)


def ffhq_quad(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five landmarks (5, 2) -> (centre, x, y) of the FFHQ quad: x and y are its half-side vectors
    (y points towards the chin)."""
    points = np.asarray(points, np.float64).reshape(5, 2)
    eye_avg = (points[0] + points[1]) / 2
    eye_to_eye = points[1] - points[0]
    eye_to_mouth = (points[3] + points[4]) / 2 - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.linalg.norm(x) * max(QUAD_EYE_FACTOR * np.linalg.norm(eye_to_eye),
                                    QUAD_MOUTH_FACTOR * np.linalg.norm(eye_to_mouth))
    y = np.array([-x[1], x[0]])
    return eye_avg + QUAD_CENTRE_TOWARDS_MOUTH * eye_to_mouth, x, y


def alignment_matrix(points: np.ndarray, size: int, framing: Framing = FFHQ) -> np.ndarray:
    """The similarity (2, 3) frame -> crop that puts the quad of ``points`` where ``framing`` says."""
    centre, x, _ = ffhq_quad(points)
    half = float(np.linalg.norm(x))
    scale = framing.quad_side * size / (2 * half)
    axis_x = x / half
    rotation = np.array([axis_x, [-axis_x[1], axis_x[0]]])
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    target = np.array(framing.quad_centre) * size - 0.5
    matrix[:, 2] = target - matrix[:, :2] @ centre
    return matrix


def align_face(frame: np.ndarray, face: Face, size: int, framing: Framing = FFHQ) -> FaceCrop:
    """Crop ``face`` out of ``frame`` (uint8 RGB) as ``framing`` places it, ``size`` x ``size``."""
    check_rgb8(frame, "frame", "align_face")
    matrix = alignment_matrix(face.points, size, framing)
    centre, x, y = ffhq_quad(face.points)
    quad = np.stack([centre - x - y, centre - x + y, centre + x + y, centre + x - y])
    quad_side = 2 * float(np.linalg.norm(x))
    inverse = cv2.invertAffineTransform(matrix)
    footprint = apply_affine(inverse, np.array([[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5],
                                          [size - 0.5, size - 0.5]]))
    border = max(round(quad_side * 0.1), 3)
    low = np.floor(footprint.min(axis=0)).astype(int) - border
    high = np.ceil(footprint.max(axis=0)).astype(int) + border
    height, width = frame.shape[:2]
    inside_low = np.maximum(low, 0)
    inside_high = np.minimum(high, (width, height))
    if np.any(inside_high <= inside_low):
        raise FaceNotFoundError(f"align_face: the face at {face.box} lies outside the {width}x{height} frame")
    region = frame[inside_low[1]:inside_high[1], inside_low[0]:inside_high[0]]
    # Region pixel (0, 0) is frame pixel inside_low; shrink where the crop is much smaller.
    shrink = max(1, math.floor(quad_side / framing.quad_side / size * 0.5))
    to_region = np.array([[1.0, 0, -inside_low[0]], [0, 1.0, -inside_low[1]]])
    if shrink > 1:
        small_size = (max(1, round(region.shape[1] / shrink)), max(1, round(region.shape[0] / shrink)))
        sx, sy = small_size[0] / region.shape[1], small_size[1] / region.shape[0]
        region = cv2.resize(region, small_size, interpolation=cv2.INTER_AREA)
        to_region = compose_affine(np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]]), to_region)
    region_px = float(to_region[0, 0])                               # region px per frame px
    before = np.maximum(inside_low - low, 0)                          # frame px missing left / top
    after = np.maximum(high - inside_high, 0)                         # right / bottom
    # As the official code: padded only where the crop itself comes within 4 px of the frame's
    # edge or past it; a border that merely reaches past the frame is read by reflection.
    reach = np.concatenate([-np.floor(footprint.min(axis=0)), np.ceil(footprint.max(axis=0)) - (width, height)])
    padded = bool((reach > -4).any())
    pixels = region.astype(np.float32)
    if padded:
        pad_low = np.where(before > 0, np.maximum(before, round(PAD_MIN * quad_side)), 0)
        pad_high = np.where(after > 0, np.maximum(after, round(PAD_MIN * quad_side)), 0)
        pad_low = np.ceil(pad_low * region_px).astype(int)
        pad_high = np.ceil(pad_high * region_px).astype(int)
        pixels = _pad_like_ffhq(pixels, pad_low, pad_high, PAD_BLUR * quad_side * region_px)
        to_region[:, 2] += pad_low
    local = compose_affine(matrix, cv2.invertAffineTransform(to_region))   # region -> crop
    image = cv2.warpAffine(pixels, local, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    image = np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)
    turn = math.degrees(math.atan2(x[1], x[0]))
    info = (f"aligned on 5 landmarks ({'the frame padded where the face reaches past it, ' if padded else ''}"
            f"rotated by {turn:+.1f} degrees, {framing.name} framing)")
    return FaceCrop(image=image, matrix=matrix, face=face, quad=quad, framing=framing, frame_shape=(height, width),
                    padded=padded, info=info)


def _pad_like_ffhq(pixels: np.ndarray, pad_low: np.ndarray, pad_high: np.ndarray, blur: float) -> np.ndarray:
    """Reflect-pad (x, y) sides by pad_low / pad_high px, blur towards the padding and fade it to the
    median colour (the official FFHQ recipe)."""
    padded = np.pad(pixels, ((pad_low[1], pad_high[1]), (pad_low[0], pad_high[0]), (0, 0)), mode="reflect")
    height, width = padded.shape[:2]
    cols = np.arange(width, dtype=np.float32)[None, :]
    rows = np.arange(height, dtype=np.float32)[:, None]
    # How far into the padding, 0 at the frame's edge and 1 at the pad's outer edge (negative inside).
    depth = np.full((height, width), -np.inf, np.float32)
    for coord, size, low, high in ((cols, width, pad_low[0], pad_high[0]), (rows, height, pad_low[1], pad_high[1])):
        if low:
            depth = np.maximum(depth, 1 - coord / low)
        if high:
            depth = np.maximum(depth, 1 - (size - 1 - coord) / high)
    depth = depth[:, :, None]
    padded += (cv2.GaussianBlur(padded, (0, 0), max(blur, 0.5)) - padded) * np.clip(3 * depth + 1, 0, 1)
    padded += (np.median(padded, axis=(0, 1)) - padded) * np.clip(depth, 0, 1)
    return padded


class FaceAligner:
    """Detect the faces of frames and align them for a model whose input is ``size`` px.

    framing: a `Framing` or its name ("ffhq", "demo"). detector: "auto" (yuface where installed,
    else OpenCV's Haar cascades), "yuface" or "haar"; settings: how hard it looks (`PRECISE` for
    photos, `FAST` for video). The detector loads once.
    """

    def __init__(self, size: int = 256, framing: Framing | str = FFHQ, detector: str = "auto",
                 settings: DetectionSettings = PRECISE) -> None:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 16:
            raise ValueError(f"crop size must be an integer >= 16, got {size!r}")
        self.size = int(size)
        self.framing = FRAMINGS[framing] if isinstance(framing, str) else framing
        self.detector = FaceDetector(detector, settings)

    def detect(self, frame: np.ndarray, name: str = "the image") -> list[Face]:
        """The faces large enough to edit, largest first; raises FaceNotFoundError naming ``name``."""
        check_rgb8(frame, "frame", name)
        found = self.detector.detect(frame)
        faces = [face for face in found if face.eye_distance >= MIN_FACE_EYE_DISTANCE]
        if faces:
            return faces
        if found:
            raise FaceNotFoundError(f"{name}: no face large enough to edit ({len(found)} found, the largest with "
                                    f"eyes {max(f.eye_distance for f in found):.0f} px apart; at least "
                                    f"{MIN_FACE_EYE_DISTANCE:.0f} needed: a face of about 32 px)")
        raise FaceNotFoundError(f"{name}: no face found ({self.detector.name} detector)")

    def follow(self, frame: np.ndarray, face: Face) -> Face | None:
        """``face`` of an earlier frame, found again in ``frame`` near where it was (or None)."""
        found = self.detector.follow(frame, face)
        return found if found is not None and found.eye_distance >= MIN_FACE_EYE_DISTANCE else None

    def crop(self, frame: np.ndarray, face: Face) -> FaceCrop:
        return align_face(frame, face, self.size, self.framing)

    def align_all(self, frame: np.ndarray, name: str = "the image", largest_only: bool = False) -> list[FaceCrop]:
        faces = self.detect(frame, name)
        return [self.crop(frame, face) for face in (faces[:1] if largest_only else faces)]

    def align(self, frame: np.ndarray, name: str = "the image") -> FaceCrop:
        """The largest face's crop."""
        return self.align_all(frame, name, largest_only=True)[0]


def face_mask(size: int, framing: Framing = FFHQ) -> np.ndarray:
    """float32 (size, size) in [0, 1]: 1 on the face (an ellipse over the quad), a smooth fall to 0
    over its outer `MASK_FEATHER`, 0 outside and on the crop's outermost pixel ring."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    half = framing.quad_side / 2
    qx = (coords[None, :] - framing.quad_centre[0]) / (half * MASK_RADII[0])
    qy = (coords[:, None] - framing.quad_centre[1]) / (half * MASK_RADII[1])
    radius = np.sqrt(qx * qx + qy * qy)
    ramp = np.clip((1 - radius) / MASK_FEATHER, 0, 1)
    mask = ramp * ramp * (3 - 2 * ramp)
    mask[[0, -1], :] = 0
    mask[:, [0, -1]] = 0
    return mask.astype(np.float32)


def paste_back(frame: np.ndarray, edited_crop: np.ndarray, face_crop: FaceCrop, match_colours: bool = True
               ) -> np.ndarray:
    """Warp ``edited_crop`` (uint8 RGB (R, R, 3), any R) into ``frame`` (the frame ``face_crop`` was
    cut from) through the face mask, by the exact inverse of the alignment -> a new frame."""
    check_rgb8(frame, "frame", "paste_back")
    check_rgb8(edited_crop, "edited crop", "paste_back")
    if edited_crop.shape[0] != edited_crop.shape[1]:
        raise ImageError(f"paste_back: the edited crop must be square, got shape {edited_crop.shape}")
    if tuple(frame.shape[:2]) != tuple(face_crop.frame_shape):
        raise ImageError(f"paste_back: frame shape {frame.shape[:2]} differs from the frame the face was "
                         f"cropped from {face_crop.frame_shape}")
    side = edited_crop.shape[0]
    step = side / face_crop.size
    crop_to_edit = np.array([[step, 0, 0.5 * step - 0.5], [0, step, 0.5 * step - 0.5]])
    edit_to_frame = cv2.invertAffineTransform(compose_affine(crop_to_edit, face_crop.matrix))
    corners = apply_affine(edit_to_frame, np.array([[-0.5, -0.5], [side - 0.5, -0.5], [-0.5, side - 0.5],
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
    source = edited_crop   # warped as uint8: OpenCV's integer path is several times faster than float
    zoom = math.sqrt(abs(np.linalg.det(edit_to_roi[:, :2])))      # frame px per edit px
    footprint_side = zoom * side                                  # the crop's side in the frame, px
    if zoom < 0.5:   # an edit much finer than its footprint: area-downscale it first (no aliasing)
        reduced = max(2, round(side * zoom / 0.7))
        source = cv2.resize(source, (reduced, reduced), interpolation=cv2.INTER_AREA)
        factor = side / reduced
        to_source = np.array([[factor, 0, 0.5 * factor - 0.5], [0, factor, 0.5 * factor - 0.5]])
        edit_to_roi = compose_affine(edit_to_roi, to_source)
        side = reduced
    warped = cv2.warpAffine(source, edit_to_roi, roi_size, flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    mask = cv2.warpAffine(face_mask(side, face_crop.framing), edit_to_roi, roi_size, flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = np.clip(mask, 0, 1)[:, :, None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    if match_colours:
        warped = warped + (1 - mask) * _seam_correction(roi, warped, mask, SEAM_SMOOTHING * footprint_side)
    blended = np.clip(np.floor(roi + mask * (warped - roi) + 0.5), 0, 255)
    result[y0:y1, x0:x1] = np.where(mask > 0, blended, roi).astype(np.uint8)
    return result


def _seam_correction(frame: np.ndarray, edit: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """The frame-minus-edit colour difference measured in the seam (where the mask is between 0
    and 1), spread smoothly over the region by normalised Gaussian filtering. The correction is
    smooth by construction, so it is computed at a resolution where sigma is 4 px and resized."""
    band = (4 * mask * (1 - mask)).astype(np.float32)
    height, width = band.shape[:2]
    factor = max(1.0, sigma / 4)
    small = (max(1, round(width / factor)), max(1, round(height / factor)))
    shrink = {"dsize": small, "interpolation": cv2.INTER_AREA}
    band_small = cv2.resize(band[:, :, 0], **shrink)
    weighted = cv2.resize(band * (frame - edit), **shrink).reshape(small[1], small[0], -1)
    sigma_small = max(sigma / factor, 1.0)
    weight = cv2.GaussianBlur(band_small, (0, 0), sigma_small)[:, :, None]
    spread = cv2.GaussianBlur(weighted, (0, 0), sigma_small).reshape(small[1], small[0], -1)
    correction = np.where(weight > 1e-3, spread / np.maximum(weight, 1e-3), 0).astype(np.float32)
    return cv2.resize(correction, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)


def check_rgb8(image: np.ndarray, what: str, name: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"{name}: expected the {what} as uint8 RGB (H, W, 3), got {got}; convert with "
                         f"warpres.media.imageio.to_rgb8")
    if min(image.shape[:2]) == 0:
        raise ImageError(f"{name}: the {what} has zero size, shape {image.shape}")
