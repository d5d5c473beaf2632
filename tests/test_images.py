"""Pixel conventions: uint8 RGB (H, W, 3) <-> float32 (B, 3, S, S) in [-1, 1]."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.errors import ImageError
from warpres.images import to_model_input, to_uint8

REPO = Path(__file__).resolve().parents[1]


def random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, channels), dtype=np.uint8)


def every_uint8_value() -> np.ndarray:
    """(16, 16, 3) uint8 holding each of 0..255 in every channel."""
    return np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16, 1), 3, axis=2)


def test_pixel_0_maps_to_minus_1_and_255_to_plus_1():
    image = np.zeros((2, 2, 3), np.uint8)
    image[1] = 255
    x = to_model_input(image, 2)
    assert x.dtype == np.float32 and x.shape == (1, 3, 2, 2)
    np.testing.assert_array_equal(x[0, :, 0], -1.0)
    np.testing.assert_array_equal(x[0, :, 1], 1.0)


def test_pixels_map_through_p_minus_127_5_over_127_5_exactly():
    image = every_uint8_value()
    expected = ((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)
    np.testing.assert_array_equal(to_model_input(image, 16)[0], expected)


def test_float_127_5_maps_to_0_which_maps_back_to_128():
    assert to_model_input(np.full((1, 1, 3), 127.5, np.float32), 1).ravel().tolist() == [0.0] * 3
    assert to_uint8(np.zeros((1, 3, 1, 1), np.float32)).ravel().tolist() == [128] * 3


def test_to_uint8_clips_out_of_range_values_and_returns_nhwc():
    y = np.array([-2.0, -1.0, 0.0, 1.0, 2.0], np.float32).reshape(1, 1, 1, 5)
    pixels = to_uint8(np.repeat(y, 3, axis=1))
    assert pixels.shape == (1, 1, 5, 3) and pixels.dtype == np.uint8
    assert pixels[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_uint8_to_model_input_and_back_is_the_identity():
    image = every_uint8_value()
    np.testing.assert_array_equal(to_uint8(to_model_input(image, 16))[0], image)


def test_image_already_at_size_is_not_resampled():
    image = random_image(8, 8)
    expected = ((image.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)
    np.testing.assert_array_equal(to_model_input(image, 8)[0], expected)


def test_shrinking_uses_inter_area():
    image = random_image(12, 20)
    expected = cv2.resize(image.astype(np.float32), (6, 6), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(to_model_input(image, 6)[0].transpose(1, 2, 0),
                               (expected - 127.5) / 127.5, rtol=0, atol=1e-6)


def test_enlarging_uses_inter_cubic_clipped_to_the_pixel_range():
    image = random_image(5, 9)
    expected = cv2.resize(image.astype(np.float32), (16, 16), interpolation=cv2.INTER_CUBIC)
    x = to_model_input(image, 16)[0].transpose(1, 2, 0)
    np.testing.assert_allclose(x, (np.clip(expected, 0, 255) - 127.5) / 127.5, rtol=0, atol=1e-6)
    assert x.min() >= -1.0 and x.max() <= 1.0


@pytest.mark.parametrize("gray", [np.arange(12, dtype=np.uint8).reshape(3, 4),
                                  np.arange(12, dtype=np.uint8).reshape(3, 4, 1)])
def test_gray_image_is_replicated_to_three_channels(gray):
    rgb = np.repeat(gray.reshape(3, 4, 1), 3, axis=2)
    np.testing.assert_array_equal(to_model_input(gray, 4), to_model_input(rgb, 4))


def test_opaque_rgba_equals_its_rgb():
    rgb = random_image(4, 4)
    rgba = np.concatenate([rgb, np.full((4, 4, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(to_model_input(rgba, 4), to_model_input(rgb, 4))


def test_transparent_pixels_are_composited_over_white():
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (0, 0, 0, 51)  # black at 20 % opacity over white -> 204
    pixels = to_uint8(to_model_input(rgba, 2))
    assert pixels[0, 0, 0].tolist() == [255, 255, 255]
    assert pixels[0, 0, 1].tolist() == [204, 204, 204]


def test_gray_with_alpha_is_composited_and_replicated():
    gray_alpha = np.array([[[100, 255], [100, 0]]], np.uint8)  # (1, 2, 2)
    np.testing.assert_array_equal(to_uint8(to_model_input(gray_alpha, 2))[0, 0],
                                  [[100, 100, 100], [255, 255, 255]])


def test_uint16_is_divided_by_257_into_the_8bit_range():
    image = every_uint8_value()
    np.testing.assert_array_equal(to_model_input(image.astype(np.uint16) * 257, 16),
                                  to_model_input(image, 16))


def test_batch_array_and_list_give_the_same_result_as_single_images():
    images = [random_image(6, 6, seed=seed) for seed in range(3)]
    singles = np.concatenate([to_model_input(image, 4) for image in images])
    np.testing.assert_array_equal(to_model_input(np.stack(images), 4), singles)
    np.testing.assert_array_equal(to_model_input(images, 4), singles)


def test_list_may_mix_sizes_and_non_square_images():
    x = to_model_input([random_image(10, 30), random_image(3, 3, channels=1)], 8)
    assert x.shape == (2, 3, 8, 8)


@pytest.mark.parametrize("images, size, message", [
    (np.zeros((0, 4, 3), np.uint8), 4, r"image 0: zero size, shape \(0, 4, 3\)"),
    (np.zeros((0, 4, 4, 3), np.uint8), 4, "empty batch"),
    ([], 4, "no images given"),
    (np.zeros(5, np.uint8), 4, r"got shape \(5,\)"),
    (np.zeros((1, 1, 4, 4, 3), np.uint8), 4, r"got shape \(1, 1, 4, 4, 3\)"),
    (np.zeros((4, 4, 5), np.uint8), 4, "expected 1, 2, 3 or 4 channels"),
    (np.zeros((4, 4, 3), np.int32), 4, "expected uint8, uint16 or float pixels, got int32"),
    (np.full((4, 4, 3), np.nan, np.float32), 4, "image 0: contains NaN or inf"),
    ([np.zeros((4, 4, 3)), np.full((4, 4, 3), np.inf)], 4, "image 1: contains NaN or inf"),
    (np.full((4, 4, 3), -0.5, np.float32), 4, r"must lie in \[0, 255\]"),
    ([np.zeros((4, 4, 3), np.uint8), "a.png"], 4, "image 1: expected an array"),
    ("a.png", 4, "expected a numpy array or a list"),
    (np.zeros((4, 4, 3), np.uint8), 0, "size must be a positive integer"),
    (np.zeros((4, 4, 3), np.uint8), 2.5, "size must be a positive integer"),
])
def test_bad_input_is_an_image_error_saying_what_is_wrong(images, size, message):
    with pytest.raises(ImageError, match=message):
        to_model_input(images, size)


@pytest.mark.parametrize("images, message", [
    (np.zeros((3, 4, 4), np.float32), r"expected shape \(B, 3, H, W\)"),
    (np.zeros((1, 4, 4, 3), np.float32), r"expected shape \(B, 3, H, W\)"),
    (np.zeros((1, 3, 4, 4), np.uint8), "expected a float array"),
    (np.full((1, 3, 4, 4), np.nan, np.float32), "NaN or inf"),
])
def test_bad_model_output_is_an_image_error(images, message):
    with pytest.raises(ImageError, match=message):
        to_uint8(images)


def test_images_module_imports_without_torch():
    script = "import sys; sys.modules['torch'] = None; import warpres.images"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
