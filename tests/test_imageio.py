"""Image files: read_image / write_image / list_images / to_rgb8 (warpres.media.imageio)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from warpres.errors import ImageError
from warpres.images import to_model_input
from warpres.media.imageio import (
    IMAGE_EXTENSIONS,
    list_images,
    read_image,
    to_rgb8,
    truncation_problem,
    write_image,
)

REPO = Path(__file__).resolve().parents[1]


def random_rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth_rgb(height: int = 64, width: int = 80) -> np.ndarray:
    """A gradient that JPEG compresses well (random noise does not survive JPEG)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // (width - 1), y * 255 // (height - 1), (x + y) * 255 // (width + height - 2)],
                    axis=2).astype(np.uint8)


def encode(image_bgr: np.ndarray, suffix: str, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(suffix, image_bgr, list(params))
    assert ok
    return data.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 Exif segment holding only the Orientation tag (0x0112) after SOI."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack("<I", 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd
    payload = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + jpeg[2:]


# --- read / write round trips ---------------------------------------------------------------

def test_png_write_then_read_returns_the_same_rgb_pixels(tmp_path):
    image = random_rgb()
    write_image(tmp_path / "a.png", image)
    read = read_image(tmp_path / "a.png")
    assert read.dtype == np.uint8 and read.shape == image.shape
    np.testing.assert_array_equal(read, image)


def test_written_red_is_red_on_disk_for_other_readers(tmp_path):
    red = np.zeros((4, 4, 3), np.uint8)
    red[..., 0] = 255
    write_image(tmp_path / "red.png", red)
    on_disk_bgr = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_UNCHANGED)
    assert on_disk_bgr[0, 0].tolist() == [0, 0, 255]  # OpenCV's own reader is BGR
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]


def test_a_path_without_suffix_is_written_as_png(tmp_path):
    write_image(tmp_path / "no_suffix", random_rgb())
    assert (tmp_path / "no_suffix").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_jpeg_write_then_read_is_close_at_quality_95(tmp_path):
    image = smooth_rgb()
    write_image(tmp_path / "a.jpg", image)
    read = read_image(tmp_path / "a.jpg")
    assert read.shape == image.shape and read.dtype == np.uint8
    assert np.abs(read.astype(int) - image).mean() < 2.0  # quality 95 on a smooth gradient


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_png_keeps_uint16_and_every_value(tmp_path, channels):
    image = np.random.default_rng(1).integers(0, 65536, (8, 9, channels), dtype=np.uint16)
    image = image[..., 0] if channels == 1 else image
    write_image(tmp_path / "deep.png", image)
    read = read_image(tmp_path / "deep.png")
    assert read.dtype == np.uint16
    np.testing.assert_array_equal(read, image)


def test_gray_png_reads_as_a_2d_array(tmp_path):
    gray = np.arange(48, dtype=np.uint8).reshape(6, 8)
    (tmp_path / "gray.png").write_bytes(encode(gray, ".png"))
    read = read_image(tmp_path / "gray.png")
    assert read.shape == (6, 8)
    np.testing.assert_array_equal(read, gray)


def test_rgba_png_reads_in_rgba_order_with_alpha(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 100                     # semi-transparent red
    (tmp_path / "rgba.png").write_bytes(encode(cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA), ".png"))
    read = read_image(tmp_path / "rgba.png")
    assert read.shape == (2, 3, 4)
    assert read[0, 0].tolist() == [200, 0, 0, 100]


def test_non_ascii_path_reads_and_writes(tmp_path):
    path = tmp_path / "фото 写真 é" / "лицо.png"
    image = random_rgb(seed=2)
    write_image(path, image)
    np.testing.assert_array_equal(read_image(path), image)


def test_jpeg_exif_orientation_is_applied(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, :20] = 255                                        # left half white
    # Orientation 6: the stored pixels must be turned 90 degrees clockwise to display upright.
    (tmp_path / "phone.jpg").write_bytes(with_exif_orientation(encode(image, ".jpg"), 6))
    read = read_image(tmp_path / "phone.jpg")
    assert read.shape == (40, 20, 3)
    assert read[:18].min() > 200 and read[22:].max() < 50   # the white left half is now on top


def test_write_leaves_no_temporary_file_behind(tmp_path):
    write_image(tmp_path / "a.png", random_rgb())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


# --- read errors name the file --------------------------------------------------------------

def test_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")


def test_a_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "folder.png").mkdir()
    with pytest.raises(ImageError, match=r"folder\.png: is a folder"):
        read_image(tmp_path / "folder.png")


def test_zero_byte_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        read_image(tmp_path / "empty.jpg")


@pytest.mark.parametrize("data", [b"definitely not an image", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
                                  bytes(np.random.default_rng(3).integers(0, 256, 4096, dtype=np.uint8))])
def test_corrupt_bytes_are_an_error_naming_the_file(tmp_path, data):
    (tmp_path / "corrupt.png").write_bytes(data)
    with pytest.raises(ImageError, match=r"corrupt\.png: "):
        read_image(tmp_path / "corrupt.png")


@pytest.mark.parametrize("cut", [12, 1000])
def test_truncated_png_is_an_error_naming_the_file(tmp_path, cut):
    data = encode(random_rgb(64, 64), ".png")
    (tmp_path / "cut.png").write_bytes(data[:-cut])             # 12: exactly the IEND chunk
    with pytest.raises(ImageError, match=r"cut\.png: .*(truncated|not a readable image)"):
        read_image(tmp_path / "cut.png")


@pytest.mark.parametrize("cut", [2, 500])
def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path, cut):
    data = encode(smooth_rgb(), ".jpg")
    (tmp_path / "cut.jpg").write_bytes(data[:-cut])             # 2: exactly the EOI marker
    with pytest.raises(ImageError, match=r"cut\.jpg: .*(truncated|not a readable image)"):
        read_image(tmp_path / "cut.jpg")


def test_float_tiff_is_rejected_naming_the_sample_type(tmp_path):
    (tmp_path / "float.tiff").write_bytes(encode(np.zeros((4, 4, 3), np.float32), ".tiff"))
    with pytest.raises(ImageError, match=r"float\.tiff: unsupported sample type float32"):
        read_image(tmp_path / "float.tiff")


# --- the structural truncation check (some OpenCV builds decode cut-off files silently) ------

def test_truncation_check_passes_complete_png_and_jpeg_variants():
    image = smooth_rgb()
    assert truncation_problem(encode(image, ".png")) is None
    assert truncation_problem(encode(image, ".jpg")) is None
    assert truncation_problem(encode(image, ".jpg", (cv2.IMWRITE_JPEG_PROGRESSIVE, 1))) is None  # many scans
    assert truncation_problem(encode(image, ".jpg", (cv2.IMWRITE_JPEG_RST_INTERVAL, 1))) is None  # RSTn markers
    assert truncation_problem(encode(image, ".jpg") + b"appended video bytes") is None  # "motion photo"
    assert truncation_problem(b"BM not png or jpeg") is None


def test_truncation_check_finds_missing_end_markers():
    png, jpeg = encode(random_rgb(), ".png"), encode(smooth_rgb(), ".jpg")
    assert "IEND" in truncation_problem(png[:-12])
    assert "needs" in truncation_problem(png[: len(png) // 2])
    assert "EOI" in truncation_problem(jpeg[:-2])
    assert truncation_problem(jpeg[: len(jpeg) // 2]) is not None


def test_truncation_check_is_not_fooled_by_an_end_marker_inside_an_exif_thumbnail():
    thumbnail = encode(smooth_rgb(8, 8), ".jpg")                # ends with its own EOI
    payload = b"Exif\x00\x00" + thumbnail
    main = encode(smooth_rgb(), ".jpg")
    with_thumbnail = main[:2] + b"\xff\xe1" + struct.pack(">H", 2 + len(payload)) + payload + main[2:]
    assert truncation_problem(with_thumbnail) is None
    assert truncation_problem(with_thumbnail[:-200]) is not None


# --- to_rgb8 -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_to_rgb8_follows_the_model_input_conventions(dtype, channels):
    top = 255 if dtype == np.uint8 else 65535
    image = np.random.default_rng(4).integers(0, top + 1, (6, 6, channels)).astype(dtype)
    rgb = to_rgb8(image)
    assert rgb.shape == (6, 6, 3) and rgb.dtype == np.uint8
    # Same gray / alpha-over-white / uint16 / 257 rules as to_model_input, up to rounding to 8 bits.
    np.testing.assert_allclose(to_model_input(rgb, 6), to_model_input(image, 6), atol=0.5 / 127.5 + 1e-6, rtol=0)


def test_to_rgb8_composites_transparent_pixels_over_white():
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1, 3] = 255                                          # pixel 0 transparent, pixel 1 opaque black
    assert to_rgb8(rgba)[0].tolist() == [[255, 255, 255], [0, 0, 0]]


# --- write errors name the path --------------------------------------------------------------

def test_unknown_suffix_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(ImageError, match=r"out\.gif: cannot write suffix"):
        write_image(tmp_path / "out.gif", random_rgb())
    assert not (tmp_path / "out.gif").exists()


def test_uint16_to_jpeg_is_an_error_not_a_silent_conversion(tmp_path):
    with pytest.raises(ImageError, match=r"deep\.jpg: .* 8-bit"):
        write_image(tmp_path / "deep.jpg", np.zeros((4, 4, 3), np.uint16))


def test_write_into_a_path_blocked_by_a_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "blocker").write_bytes(b"")
    with pytest.raises(ImageError, match=re.escape(f"{tmp_path / 'blocker' / 'a.png'}: cannot write")):
        write_image(tmp_path / "blocker" / "a.png", random_rgb())


def test_float_pixels_are_rejected_by_write(tmp_path):
    with pytest.raises(ImageError, match=r"a\.png: expected uint8 or uint16 pixels, got float32"):
        write_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.float32))


# --- list_images ------------------------------------------------------------------------------

@pytest.fixture
def folder(tmp_path) -> Path:
    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.png", "z.tiff"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.png").write_bytes(b"x")
    return tmp_path


def test_a_folder_expands_to_its_images_sorted_by_name_not_recursively_passing_over_the_rest(folder):
    paths, skipped = list_images([folder])
    assert [p.name for p in paths] == ["a.JPG", "b.png", "c.webp", "z.tiff"]
    assert skipped == []  # notes.txt and sub/ sit beside the images: not inputs, nothing to warn about


def test_files_keep_their_order_and_a_file_named_twice_is_listed_once(folder):
    paths, _ = list_images([folder / "z.tiff", folder / "a.JPG", folder])
    assert [p.name for p in paths] == ["z.tiff", "a.JPG", "b.png", "c.webp"]


def test_a_named_non_image_file_is_skipped_with_a_warning(folder):
    paths, skipped = list_images([folder / "b.png", folder / "notes.txt"])
    assert [p.name for p in paths] == ["b.png"]
    assert skipped == [f"{folder / 'notes.txt'}: skipped, not an image file (suffix not one of "
                       f"{', '.join(IMAGE_EXTENSIONS)})"]


def test_a_missing_input_is_an_error_naming_it(folder):
    with pytest.raises(ImageError, match=r"missing\.png: no such file or folder"):
        list_images([folder / "b.png", folder / "missing.png"])


def test_a_folder_without_images_is_an_error_naming_it(tmp_path):
    (tmp_path / "readme.md").write_text("no images here")
    with pytest.raises(ImageError, match=re.escape(f"no image files found in {tmp_path};")):
        list_images([tmp_path])


def test_media_image_modules_import_neither_torch_nor_the_runtime_nor_the_exporter():
    code = ("import sys, warpres.media.imageio, warpres.media.faces; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('warpres.export', 'warpres.runtime', 'warpres.models'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert result.stdout.strip() == "[]"
