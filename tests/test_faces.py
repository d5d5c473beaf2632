"""Face detection (yuface, Haar fallback), FFHQ alignment and paste-back (warpres.media).

The portrait is scikit-image's ``astronaut.png`` (NASA, public domain), read from the installed
package's data folder. Eye centres hand-marked on that 512 x 512 image, in pixel-centre
coordinates: (202.5, 100.5) and (246.0, 103.0), about +-1 px. The group photo is the
``insightface`` wheel's ``t1.jpg`` (six faces), read from the installed wheel when present.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.errors import ImageError
from warpres.media.detection import Face, FaceDetector
from warpres.media.faces import (
    DEMO,
    FFHQ,
    FaceAligner,
    FaceNotFoundError,
    align_face,
    alignment_matrix,
    face_mask,
    ffhq_quad,
    paste_back,
)
from warpres.media.imageio import read_image, to_rgb8

MARKED_EYES = np.array([[202.5, 100.5], [246.0, 103.0]])
SIZE = 256
SAMPLES = Path(__file__).resolve().parents[1] / "warpres" / "demo" / "assets" / "samples"
BACKGROUND = (90, 110, 130)


def data_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    path = data_file("skimage", "data", "astronaut.png")
    if path is None:
        pytest.skip("needs scikit-image (its data folder ships the astronaut.png portrait)")
    return to_rgb8(read_image(path))


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(SIZE)


@pytest.fixture(scope="module")
def crop(portrait, aligner):
    return aligner.align(portrait, "astronaut.png")


def moved(image: np.ndarray, degrees: float, scale: float, offset: tuple[float, float],
          canvas: tuple[int, int] = (1400, 1300)) -> tuple[np.ndarray, np.ndarray]:
    """``image`` rotated (counter-clockwise) and scaled about its centre, shifted by ``offset``,
    on a plain canvas (no reflected copies of the face); and the (2, 3) map image -> canvas."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, scale)
    matrix[:, 2] += offset
    return cv2.warpAffine(image, matrix, canvas, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=BACKGROUND), matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def eye_line_degrees(eyes: np.ndarray) -> float:
    (x0, y0), (x1, y1) = eyes
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


# --- detection ------------------------------------------------------------------------------------

def test_yuface_finds_the_astronaut_with_five_ordered_landmarks(portrait):
    (face,) = FaceDetector("yuface").detect(portrait)
    left_eye, right_eye, nose, left_mouth, right_mouth = face.points
    # Within 3 px of the hand-marked eyes (a 44 px eye distance), in image order.
    np.testing.assert_allclose(face.points[:2], MARKED_EYES, atol=3.0)
    assert left_eye[0] < nose[0] < right_eye[0] and left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert face.score > 0.8


def test_every_face_of_a_group_photo_is_found_largest_first():
    path = data_file("insightface", "data", "images", "t1.jpg")
    if path is None:
        pytest.skip("needs the insightface wheel (pip install --no-deps insightface): its t1.jpg has six faces")
    frame = to_rgb8(read_image(path))
    crops = FaceAligner(SIZE).align_all(frame, "t1.jpg")
    assert len(crops) == 6
    areas = [crop.face.box[2] * crop.face.box[3] for crop in crops]
    assert areas == sorted(areas, reverse=True)
    assert len(FaceAligner(SIZE).align_all(frame, "t1.jpg", largest_only=True)) == 1


def test_the_haar_fallback_finds_the_face_and_places_the_mouth_below_the_eyes(portrait):
    (face,) = FaceDetector("haar").detect(portrait)
    np.testing.assert_allclose(face.points[:2], MARKED_EYES, atol=4.0)
    crop = align_face(portrait, face, SIZE)
    # Framed like the yuface crop, within the fallback's guessed mouth: 5 % of S.
    reference = FaceAligner(SIZE, detector="yuface").align(portrait)
    np.testing.assert_allclose(crop.to_crop(MARKED_EYES), reference.to_crop(MARKED_EYES), atol=0.05 * SIZE)


@pytest.mark.parametrize("kind", ["blank", "noise", "cat"])
def test_a_photo_without_a_face_raises_a_no_face_error_naming_it(aligner, kind):
    rng = np.random.default_rng(0)
    if kind == "cat":
        path = data_file("skimage", "data", "chelsea.png")
        if path is None:
            pytest.skip("needs scikit-image's chelsea.png")
        image = to_rgb8(read_image(path))
    else:
        image = (np.full((240, 320, 3), 128, np.uint8) if kind == "blank"
                 else rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    with pytest.raises(FaceNotFoundError, match=r"holiday\.jpg: no face found") as error:
        aligner.align(image, "holiday.jpg")
    assert isinstance(error.value, ImageError)


def test_a_tiny_face_is_refused_as_too_small(portrait, aligner):
    canvas = np.full((400, 400, 3), BACKGROUND, np.uint8)
    canvas[100:180, 100:180] = cv2.resize(portrait, (80, 80), interpolation=cv2.INTER_AREA)   # eyes 7 px apart
    # yuface still finds this face (eyes 6 px apart), too small for an edit to mean anything.
    with pytest.raises(FaceNotFoundError, match=r"small\.png: no face large enough to edit \(1 found"):
        aligner.align(canvas, "small.png")


def test_align_wants_uint8_rgb_and_says_how_to_convert(aligner):
    with pytest.raises(ImageError, match=r"frame\.png: expected the frame as uint8 RGB.*to_rgb8"):
        aligner.align(np.zeros((64, 64), np.uint8), "frame.png")


def test_a_grayscale_photo_is_aligned_like_the_colour_one(portrait, crop, aligner):
    gray = to_rgb8(cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY))
    grey_crop = aligner.align(gray, "gray.png")
    np.testing.assert_allclose(grey_crop.to_crop(MARKED_EYES), crop.to_crop(MARKED_EYES), atol=0.03 * SIZE)


# --- the FFHQ quad ---------------------------------------------------------------------------------

def test_the_quad_of_an_upright_face_follows_the_ffhq_recipe():
    # Eyes 100 px apart, mouth 120 px below their midpoint: half side max(2 * 100, 1.8 * 120) = 216,
    # centre 0.1 * 120 = 12 px below the eyes.
    points = np.array([[450.0, 400], [550, 400], [500, 460], [460, 520], [540, 520]])
    centre, x, y = ffhq_quad(points)
    np.testing.assert_allclose(centre, [500, 412])
    np.testing.assert_allclose(x, [216, 0], atol=1e-9)
    np.testing.assert_allclose(y, [0, 216], atol=1e-9)
    # The quad fills an FFHQ crop: its corners land on the crop's corners (pixel edges).
    matrix = alignment_matrix(points, SIZE)
    corners = apply(matrix, np.stack([centre - x - y, centre + x + y]))
    np.testing.assert_allclose(corners, [[-0.5, -0.5], [SIZE - 0.5, SIZE - 0.5]], atol=1e-9)


def test_the_demo_framing_places_the_quad_where_the_renders_hold_it():
    points = np.array([[450.0, 400], [550, 400], [500, 460], [460, 520], [540, 520]])
    centre, x, _ = ffhq_quad(points)
    matrix = alignment_matrix(points, 128, DEMO)
    np.testing.assert_allclose(apply(matrix, centre[None])[0] + 0.5, np.array(DEMO.quad_centre) * 128, atol=1e-9)
    assert np.linalg.norm(matrix[:, 0]) * 2 * np.linalg.norm(x) == pytest.approx(DEMO.quad_side * 128)


def test_the_crop_is_the_frame_warped_by_the_returned_matrix(portrait, crop):
    warped = cv2.warpAffine(portrait, crop.matrix, (SIZE, SIZE), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REFLECT_101)
    # Equal where the crop reads the frame itself, away from the padding (the hair reaches the top).
    height, width = crop.frame_shape
    source = crop.to_frame(np.stack(np.meshgrid(np.arange(SIZE), np.arange(SIZE)), -1).reshape(-1, 2))
    inside = ((source[:, 0] > 3) & (source[:, 0] < width - 4) & (source[:, 1] > 30)
              & (source[:, 1] < height - 4)).reshape(SIZE, SIZE)
    assert inside.mean() > 0.8
    assert np.abs(warped.astype(int) - crop.image)[inside].max() <= 1


def test_a_face_near_the_border_but_inside_it_is_not_padded(portrait, aligner):
    # The portrait on a larger canvas, cut 8 px outside the crop's footprint on every side.
    canvas = cv2.copyMakeBorder(portrait, 200, 200, 200, 200, cv2.BORDER_CONSTANT, value=BACKGROUND)
    placed = aligner.align(canvas, "canvas.png")
    edge = SIZE - 0.5
    corners = placed.to_frame(np.array([[-0.5, -0.5], [edge, -0.5], [-0.5, edge], [edge, edge]]))
    (left, top), (right, bottom) = np.floor(corners.min(axis=0)) - 8, np.ceil(corners.max(axis=0)) + 8
    near = np.ascontiguousarray(canvas[int(top):int(bottom), int(left):int(right)])
    again = aligner.align(near, "near.png")
    assert not again.padded and "padded" not in again.info


def test_a_face_cut_by_the_border_is_padded_not_refused(portrait, aligner):
    cut = np.ascontiguousarray(portrait[60:, 150:])                      # the hair reaches the top edge
    crop = aligner.align(cut, "cut.png")
    assert crop.padded and "padded" in crop.info
    # The padding is the reflected, blurred frame faded to its median colour: no black, no stripes.
    top = crop.image[:20].astype(float)
    assert top.min() > 30 and top.std(axis=(0, 1)).max() < 40


# --- round trips on transformed faces --------------------------------------------------------------

@pytest.mark.parametrize("degrees, scale", [(0, 1.0), (-30, 0.5), (15, 2.0), (30, 1.0), (-15, 1.5)])
def test_a_moved_portrait_is_recovered_as_the_same_crop(portrait, crop, aligner, degrees, scale):
    canvas, matrix = moved(portrait, degrees, scale, (350, 300))
    recovered = aligner.align(canvas, "canvas")
    # The marked eyes land where they land in the crop of the original: the detector's landmark
    # noise (about 1.5 px on this 44 px eye distance, either crop: benchmarks/alignment.py) moves
    # them by up to 3 % of the crop and turns the quad by up to 5 degrees.
    eyes = recovered.to_crop(apply(matrix, MARKED_EYES))
    np.testing.assert_allclose(eyes, crop.to_crop(MARKED_EYES), atol=0.035 * SIZE)
    assert eye_line_degrees(eyes) == pytest.approx(eye_line_degrees(crop.to_crop(MARKED_EYES)), abs=5.0)
    assert recovered.rotation_deg - crop.rotation_deg == pytest.approx(-degrees, abs=5.0)


@pytest.mark.parametrize("sample", ["sample-0.png", "sample-2.png"])
def test_a_shipped_sample_moved_into_a_canvas_is_recovered(sample):
    image = read_image(SAMPLES / sample)
    direct = FaceAligner(128, DEMO).align(image)
    canvas, matrix = moved(image, 20, 2.0, (300, 250), canvas=(900, 800))
    recovered = FaceAligner(128, DEMO).align(canvas)
    probe = direct.to_frame(np.array([[40.0, 50], [88, 50], [64, 90]]))   # eyes and mouth of the crop
    np.testing.assert_allclose(recovered.to_crop(apply(matrix, probe)), direct.to_crop(probe), atol=0.04 * 128)


# --- paste-back ------------------------------------------------------------------------------------

def mask_in_frame(crop) -> np.ndarray:
    height, width = crop.frame_shape
    return cv2.warpAffine(face_mask(crop.size, crop.framing), crop.matrix, (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


@pytest.mark.parametrize("resolution", [256, 1024])
def test_pasting_back_the_unedited_crop_reproduces_the_frame_and_leaves_the_rest(portrait, crop, resolution):
    edited = crop.image if resolution == SIZE else cv2.resize(crop.image, (resolution, resolution),
                                                               interpolation=cv2.INTER_CUBIC)
    pasted = paste_back(portrait, edited, crop)
    error = np.abs(pasted.astype(int) - portrait).max(axis=2)
    weight = mask_in_frame(crop)
    # Outside the face mask the frame is returned exactly (not within 1 level: bit for bit).
    np.testing.assert_array_equal(pasted[weight == 0], portrait[weight == 0])
    # Inside, two cubic resamplings soften hair-scale detail: measured mean 1.0 / 1.9 levels.
    assert error[weight > 0.99].mean() < 2.5
    assert np.percentile(error[weight > 0.99], 99) <= 14


def test_paste_back_blends_through_a_soft_mask(crop):
    white = np.full((*crop.frame_shape, 3), 255, np.uint8)
    pasted = paste_back(white, np.zeros((SIZE, SIZE, 3), np.uint8), crop, match_colours=False)
    weight = 1 - pasted[..., 0].astype(np.float64) / 255
    assert weight.max() == 1.0
    steepest = max(np.abs(np.diff(weight, axis=0)).max(), np.abs(np.diff(weight, axis=1)).max())
    assert steepest < 0.1                                             # no hard seam


@pytest.mark.parametrize("resolution", [256, 1024])
def test_colour_matching_removes_the_ring_of_a_tinted_edit(portrait, crop, resolution):
    tinted = np.clip(crop.image.astype(int) + (30, 0, -30), 0, 255).astype(np.uint8)
    tinted = cv2.resize(tinted, (resolution, resolution), interpolation=cv2.INTER_CUBIC)
    weight = mask_in_frame(crop)
    seam = (weight > 0.05) & (weight < 0.5)

    def seam_error(match: bool) -> float:
        pasted = paste_back(portrait, tinted, crop, match_colours=match)
        return float(np.abs(pasted.astype(int) - portrait)[seam].mean())

    assert seam_error(True) < 0.5 * seam_error(False)


def test_paste_back_rejects_a_frame_of_another_size(portrait, crop):
    with pytest.raises(ImageError, match="differs from the frame the face was cropped from"):
        paste_back(portrait[:100], crop.image, crop)


def test_faces_are_aligned_with_their_framing(portrait):
    assert FaceAligner(SIZE, "demo").framing is DEMO and FaceAligner(SIZE).framing is FFHQ
    face = Face((0, 0, 10, 10), np.array([[202.5, 100.5], [246.0, 103.0], [224, 120], [205, 140], [243, 142]]), 1.0)
    assert align_face(portrait, face, 64, DEMO).framing is DEMO
