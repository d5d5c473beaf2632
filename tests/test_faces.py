"""Face crop and alignment with OpenCV's Haar cascades (warpres.media.faces).

The portrait is scikit-image's ``astronaut.png`` (NASA, public domain), read from the installed
package's data folder with our own reader (skimage itself is not imported). Eye centres hand-
marked on that 512 x 512 image, in pixel-centre coordinates: (202.5, 100.5) and (246.0, 103.0),
about +-1 px; the eye line slopes down to the right by 3.3 degrees.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.errors import ImageError
from warpres.media.faces import (
    CENTER_BELOW_EYES,
    CROP_SIDE_PER_EYE_DISTANCE,
    DetectionParams,
    FaceAligner,
    FaceCrop,
    FaceNotFoundError,
    paste_back,
)
from warpres.media.imageio import read_image

MARKED_EYES = np.array([[202.5, 100.5], [246.0, 103.0]])
SIZE = 256


def astronaut_path() -> Path | None:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    return path if path.is_file() else None


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    path = astronaut_path()
    if path is None:
        pytest.skip("needs scikit-image (its data folder ships the astronaut.png portrait)")
    image = read_image(path)
    assert image.shape == (512, 512, 3)
    return image


@pytest.fixture(scope="module")
def aligner() -> FaceAligner:
    return FaceAligner(SIZE)


@pytest.fixture(scope="module")
def crop(portrait, aligner) -> FaceCrop:
    return aligner.align(portrait, "astronaut.png")


def rotate(image: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Counter-clockwise about the centre, same size, reflected borders; and its (2, 3) map."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), degrees, 1.0)
    return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT_101), matrix


def transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def eye_line_degrees(eyes: np.ndarray) -> float:
    (x0, y0), (x1, y1) = eyes
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def footprint(face_crop: FaceCrop, inset: int = 0) -> np.ndarray:
    """bool (H, W): frame pixels whose preimage lies in the crop, ``inset`` crop pixels in."""
    square = np.zeros((face_crop.size, face_crop.size), np.float32)
    square[inset:face_crop.size - inset, inset:face_crop.size - inset] = 1
    height, width = face_crop.frame_shape
    warped = cv2.warpAffine(square, face_crop.matrix, (width, height), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    return warped > 0


# --- alignment ----------------------------------------------------------------------------------

def test_the_astronaut_face_is_found_and_aligned_on_its_eyes(crop):
    assert crop.method == "eyes" and "aligned on the eyes" in crop.info
    assert crop.image.shape == (SIZE, SIZE, 3) and crop.image.dtype == np.uint8
    assert crop.matrix.shape == (2, 3)


def test_the_crop_size_is_the_requested_size(portrait):
    assert FaceAligner(128).align(portrait).image.shape == (128, 128, 3)


def test_the_marked_eyes_are_level_in_the_crop_within_2_degrees(crop):
    # Each marked eye is good to +-1 px and the detected pupils to about 1 px over a 44 px eye
    # distance: atan(2 / 44) = 2.6 degrees worst case when both errors add; measured 0.3.
    assert abs(eye_line_degrees(crop.to_crop(MARKED_EYES))) < 2.0
    assert abs(eye_line_degrees(MARKED_EYES)) > 3.0            # so the alignment did level them


def test_the_marked_eyes_land_where_ffhq_puts_them(crop):
    eye_distance = SIZE / CROP_SIDE_PER_EYE_DISTANCE                # 62.4 px at 256
    centre = (SIZE - 1) / 2
    expected = np.array([[centre - eye_distance / 2, centre - CENTER_BELOW_EYES * eye_distance],
                         [centre + eye_distance / 2, centre - CENTER_BELOW_EYES * eye_distance]])
    np.testing.assert_allclose((expected + 0.5) / SIZE, [[0.378, 0.471], [0.622, 0.471]], atol=0.001)
    # 1 px of marking error is 1.4 crop px at this zoom; the pupils are found to about 1.5 frame px.
    np.testing.assert_allclose(crop.to_crop(MARKED_EYES), expected, atol=0.02 * SIZE, rtol=0)


def test_the_crop_is_the_frame_warped_by_the_returned_matrix(portrait, crop):
    warped = cv2.warpAffine(portrait, crop.matrix, (SIZE, SIZE), flags=cv2.INTER_CUBIC,
                            borderMode=cv2.BORDER_REFLECT_101)
    np.testing.assert_array_equal(warped, crop.image)


@pytest.mark.parametrize("degrees", [15.0, -15.0])
def test_a_frame_rotated_15_degrees_needs_15_degrees_less_rotation(portrait, aligner, crop, degrees):
    rotated, _ = rotate(portrait, degrees)
    turned = aligner.align(rotated, "rotated")
    assert turned.method == "eyes"
    # Pupil centroids are good to about 0.5 px per eye over 44 px: 1.3 degrees; measured 0.15.
    assert turned.rotation_deg - crop.rotation_deg == pytest.approx(-degrees, abs=2.0)


def test_a_roll_beyond_the_cascade_range_is_found_by_the_search_angles(portrait, aligner, crop):
    rotated, matrix = rotate(portrait, 40.0)                   # the upright cascade misses this
    turned = aligner.align(rotated, "rotated")
    assert turned.search_angle != 0 and "rotated by" in turned.info
    assert turned.rotation_deg - crop.rotation_deg == pytest.approx(-40.0, abs=2.0)
    assert abs(eye_line_degrees(turned.to_crop(transform(matrix, MARKED_EYES)))) < 2.0


def test_a_large_frame_is_detected_downscaled_and_framed_the_same(portrait, aligner, crop):
    large = cv2.resize(portrait, (2048, 2048), interpolation=cv2.INTER_CUBIC)   # detected at 640 px
    big = aligner.align(large, "large")
    corners = np.array([[0, 0], [SIZE - 1, 0], [0, SIZE - 1], [SIZE - 1, SIZE - 1]], np.float64)
    # In 512-frame pixels: the crop's corners agree to 2 px (< 1 % of the 185 px footprint).
    np.testing.assert_allclose((big.to_frame(corners) + 0.5) / 4 - 0.5, crop.to_frame(corners), atol=2.0, rtol=0)


def test_without_an_eye_pair_the_crop_falls_back_to_the_unrotated_face_box(portrait, aligner, crop):
    barred = portrait.copy()
    cv2.line(barred, (190, 101), (258, 104), (0, 0, 0), 6)     # a black bar over both eyes
    boxed = aligner.align(barred, "barred")
    assert boxed.method == "face_box" and boxed.eyes is None
    assert "no eye pair found" in boxed.info and "not rotated" in boxed.info
    assert boxed.rotation_deg == 0.0 and boxed.matrix[0, 1] == 0.0 and boxed.matrix[1, 0] == 0.0
    # Framed like the eye-based crop: Haar boxes jump by 10 % scale steps and the box-to-eye
    # ratios were measured on this one portrait, so allow 20 % in scale and 5 % of S in centre.
    centre = np.array([[(SIZE - 1) / 2] * 2])
    np.testing.assert_allclose(boxed.to_crop(crop.to_frame(centre)), centre, atol=0.05 * SIZE, rtol=0)
    assert boxed.matrix[0, 0] / np.linalg.norm(crop.matrix[:, 0]) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_an_image_without_a_face_raises_a_no_face_error_naming_it(aligner, kind):
    rng = np.random.default_rng(0)
    image = (np.full((240, 320, 3), 128, np.uint8) if kind == "blank"
             else rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    with pytest.raises(FaceNotFoundError, match=r"no face found in holiday\.jpg.*without --align-faces") as error:
        aligner.align(image, "holiday.jpg")
    assert isinstance(error.value, ImageError)


def test_align_wants_uint8_rgb_and_says_how_to_convert(aligner):
    with pytest.raises(ImageError, match=r"frame\.png: expected the frame as uint8 RGB.*to_rgb8"):
        aligner.align(np.zeros((64, 64), np.uint8), "frame.png")


def test_detection_parameters_are_checked():
    with pytest.raises(ValueError, match="scale_factor"):
        DetectionParams(scale_factor=1.0)
    with pytest.raises(ValueError, match="min_face_size"):
        DetectionParams(min_face_size=8)


# --- paste_back ------------------------------------------------------------------------------------

@pytest.mark.parametrize("resolution, mean_tolerance", [(256, 1.5), (1024, 2.5)])
def test_pasting_back_the_unedited_crop_reproduces_the_frame(portrait, crop, resolution, mean_tolerance):
    # A 1024 "generator output" of the unedited 256 crop (bicubic), as the model would return.
    edited = crop.image if resolution == SIZE else cv2.resize(crop.image, (resolution, resolution),
                                                               interpolation=cv2.INTER_CUBIC)
    pasted = paste_back(portrait, edited, crop)
    error = np.abs(pasted.astype(int) - portrait).max(axis=2)
    inside = footprint(crop, inset=round(0.1 * SIZE) + 2)      # where the mask is 1
    # Two bicubic resamplings (frame -> crop -> frame) soften hair-scale detail: measured mean
    # 0.8 (256) and 1.8 (1024, also area-downsampled) levels, 99th percentile 4 and 7.
    assert error[inside].mean() < mean_tolerance
    assert np.percentile(error[inside], 99) <= 12
    np.testing.assert_array_equal(pasted[~footprint(crop)], portrait[~footprint(crop)])


def test_paste_back_blends_through_a_soft_edge_and_leaves_the_rest_exactly(crop):
    white = np.full((*crop.frame_shape, 3), 255, np.uint8)
    pasted = paste_back(white, np.zeros((SIZE, SIZE, 3), np.uint8), crop)   # paste black
    weight = 1 - pasted[..., 0].astype(np.float64) / 255      # the blend weight, to 1/255
    assert np.all(pasted[..., 0] == pasted[..., 1]) and np.all(pasted[..., 1] == pasted[..., 2])
    assert weight.max() == 1.0 and np.all(weight[~footprint(crop)] == 0)
    assert np.all(pasted[footprint(crop, inset=round(0.1 * SIZE) + 2)] == 0)
    # No seam: smoothstep over 0.1 S crop px = 18.5 frame px has slope <= 1.5 / 18.5 = 0.08 per
    # px; rounding adds 1/255 per neighbour.
    steepest = max(np.abs(np.diff(weight, axis=0)).max(), np.abs(np.diff(weight, axis=1)).max())
    assert steepest < 0.1


def test_paste_back_rejects_a_frame_of_another_size(portrait, crop):
    with pytest.raises(ImageError, match="differs from the frame the face was cropped from"):
        paste_back(portrait[:100], crop.image, crop)
