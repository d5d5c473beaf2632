"""Reading, listing and writing image files (numpy + OpenCV only; no torch, no runtime).

Contract of `read_image`: the decoded pixels in RGB channel order, as stored:
(H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA; uint8 or uint16 (16-bit PNG / TIFF keep their
depth). `to_rgb8` turns any of these into the uint8 RGB (H, W, 3) that face alignment and
`warpres.images` expect, with the same conventions (alpha over white, uint16 / 257).

Files are read as bytes (`np.fromfile`) and decoded in memory (`cv2.imdecode`), so paths with
non-ASCII characters work on every platform, and the same bytes are checked for truncation:
PNG and JPEG files must reach their end marker (IEND chunk, EOI marker) by their own
structure, because some OpenCV builds decode a cut-off file to a partly grey image without an
error. Other formats rely on the decoder. JPEG EXIF orientation is applied (phone photos come
upright); other formats are returned as stored.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from warpres.errors import ImageError
from warpres.files import atomic_path
from warpres.images import rgb_8bit_range

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
"""Suffixes `list_images` keeps and `write_image` writes (compared case-insensitively)."""

DEFAULT_JPEG_QUALITY = 95

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOI = b"\xff\xd8"
# Inside JPEG entropy-coded data a 0xFF byte is followed by 0x00 (stuffing) or a restart
# marker 0xD0-0xD7; anything else (fill bytes 0xFF aside) is the next marker.
_JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
# JPEG markers that stand alone (no length field): TEM, RST0-7, SOI, EOI.
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}


class ImageListing(NamedTuple):
    """What `list_images` found: image files in a deterministic order, and one line per input
    it skipped (a file without an image suffix, a sub-folder); unpacks as ``paths, skipped``."""

    paths: list[Path]
    skipped: list[str]


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file -> (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16.

    Raises :class:`ImageError` naming the file when it is missing, a folder, empty, truncated
    (PNG / JPEG), not decodable, of zero size, or has a sample type or channel count other than
    the above (e.g. float or signed TIFF, 2- or 5-channel TIFF).
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, expected an image file")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as error:
        raise ImageError(f"{path}: cannot read: {error.strerror or error}") from error
    return decode_image(data.tobytes(), str(path))


def decode_image(data: bytes, name: str) -> np.ndarray:
    """`read_image` on a file's bytes (read from anywhere: an object store, an archive); errors name `name`."""
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    problem = truncation_problem(data)
    if problem:
        raise ImageError(f"{name}: truncated or corrupt image ({problem})")
    data = np.frombuffer(data, dtype=np.uint8)
    # JPEG has no alpha: decode it with EXIF orientation applied (IMREAD_UNCHANGED ignores it).
    flags = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH if _is_jpeg(data) else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error as error:
        raise ImageError(f"{name}: cannot decode image ({_first_line(error)})") from error
    if image is None:
        raise ImageError(f"{name}: not a readable image (unknown format, or corrupt or truncated data); "
                         f"supported: {', '.join(IMAGE_EXTENSIONS)}")
    if image.size == 0:
        raise ImageError(f"{name}: image has zero size, shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{name}: unsupported sample type {image.dtype}; expected 8- or 16-bit unsigned pixels")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(image)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ImageError(f"{name}: unsupported channel count, shape {image.shape}; "
                         f"expected gray, RGB or RGBA")
    code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA
    return cv2.cvtColor(image, code)


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Any `read_image` result -> uint8 RGB (H, W, 3), by the `warpres.images` conventions:
    gray is replicated, uint16 is divided by 257, alpha is composited over white
    (``rgb * a + 255 * (1 - a)``); values are rounded to the nearest integer."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageError(f"expected an image array (H, W) or (H, W, C), got {shape}")
    pixels = image[:, :, None] if image.ndim == 2 else image
    if pixels.shape[2] not in (1, 2, 3, 4):
        raise ImageError(f"expected 1, 2, 3 or 4 channels (gray, gray+alpha, RGB, RGBA), got shape {image.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"expected uint8 or uint16 pixels, got {pixels.dtype}")
    if pixels.dtype == np.uint8 and pixels.shape[2] in (1, 3):
        return np.ascontiguousarray(np.repeat(pixels, 3, axis=2) if pixels.shape[2] == 1 else pixels)
    values = rgb_8bit_range(image, 0)
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)


def list_images(inputs: Sequence[str | os.PathLike[str]]) -> ImageListing:
    """Expand files and folders into image files, not recursively.

    Each input is a file (kept when its suffix is one of `IMAGE_EXTENSIONS`, any case) or a
    folder (its direct image files, sorted by name; hidden files, e.g. the temporary files of an
    unfinished atomic write, other files and sub-folders are passed over silently). Inputs keep
    their order; a file named twice is listed once. A named input that is not an image file is
    reported in ``skipped``, one line each. Raises :class:`ImageError` naming a
    missing input, or when no image is left.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths: list[Path] = []
    skipped: list[str] = []
    seen: set[Path] = set()

    def keep(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            paths.append(path)

    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(path.iterdir(), key=lambda child: child.name):
                # Anything else beside the images (samples.json, an output folder inside the input
                # folder) is not an input: passed over without a warning, so a rerun does not edit its outputs.
                if not child.name.startswith(".") and child.is_file() and _has_image_suffix(child):
                    keep(child)
        elif path.is_file():
            if _has_image_suffix(path):
                keep(path)
            else:
                skipped.append(f"{path}: skipped, not an image file (suffix not one of {', '.join(IMAGE_EXTENSIONS)})")
        elif path.exists():
            skipped.append(f"{path}: skipped, not a regular file or folder")
        else:
            raise ImageError(f"{path}: no such file or folder")
    if not paths:
        names = ", ".join(str(item) for item in inputs) or "(no inputs)"
        raise ImageError(f"no image files found in {names}; supported: {', '.join(IMAGE_EXTENSIONS)}")
    return ImageListing(paths, skipped)


def write_image(path: str | os.PathLike[str], image: np.ndarray, *, jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> Path:
    """Write an RGB (H, W, 3), RGBA (H, W, 4) or gray (H, W) uint8 / uint16 image atomically.

    The format follows the suffix (one of `IMAGE_EXTENSIONS`); a path without a suffix is
    written as PNG under the name given. JPEG and WebP are 8-bit and have no alpha in JPEG:
    writing uint16 or RGBA there is an error rather than a silent conversion. ``jpeg_quality``
    (1-100) applies to JPEG and WebP. Returns the path; raises :class:`ImageError` naming it.
    """
    path = Path(path)
    suffix = path.suffix.lower() or ".png"
    if suffix not in IMAGE_EXTENSIONS:
        raise ImageError(f"{path}: cannot write suffix {path.suffix!r}; use one of {', '.join(IMAGE_EXTENSIONS)}")
    if not isinstance(image, np.ndarray):
        raise ImageError(f"{path}: expected a numpy image array, got {type(image).__name__}")
    pixels = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
    if pixels.size == 0 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ImageError(f"{path}: expected an image (H, W), (H, W, 3) or (H, W, 4), got shape {image.shape}")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: expected uint8 or uint16 pixels, got {pixels.dtype}")
    if suffix in (".jpg", ".jpeg", ".webp") and pixels.dtype != np.uint8:
        raise ImageError(f"{path}: {suffix} stores 8-bit pixels only; convert to uint8 or write .png / .tiff")
    if suffix in (".jpg", ".jpeg") and pixels.ndim == 3 and pixels.shape[2] == 4:
        raise ImageError(f"{path}: JPEG has no alpha channel; drop it (or use to_rgb8) or write .png")
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR if pixels.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif suffix == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(jpeg_quality)]
    try:
        ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(pixels), params)
    except cv2.error as error:
        raise ImageError(f"{path}: cannot encode image ({_first_line(error)})") from error
    if not ok:
        raise ImageError(f"{path}: cannot encode image as {suffix}")
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    except OSError as error:
        raise ImageError(f"{path}: cannot write: {error.strerror or error}") from error
    return path


def truncation_problem(data: bytes) -> str | None:
    """For PNG and JPEG bytes: what is missing when the file stops before its end marker
    (PNG IEND chunk, JPEG EOI marker), walking the format's own structure; None when the
    structure is complete or the bytes are in another format. Bytes after the end marker
    (e.g. a video appended to a "motion photo" JPEG) are allowed."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_truncation(data)
    if data.startswith(_JPEG_SOI):
        return _jpeg_truncation(data)
    return None


def _png_truncation(data: bytes) -> str | None:
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        end = offset + 12 + length  # length, type, data, CRC
        if end > len(data):
            return f"PNG chunk {kind!r} at byte {offset} needs {end - len(data)} more bytes"
        if kind == b"IEND":
            return None
        offset = end
    return "PNG ends before its IEND chunk"


def _jpeg_truncation(data: bytes) -> str | None:
    offset = 2  # after SOI
    while True:
        while offset < len(data) and data[offset] == 0xFF and offset + 1 < len(data) and data[offset + 1] == 0xFF:
            offset += 1  # fill bytes before a marker
        if offset + 2 > len(data):
            return "JPEG ends before its EOI marker"
        if data[offset] != 0xFF:
            return f"JPEG marker expected at byte {offset}"
        marker = data[offset + 1]
        if marker == 0xD9:
            return None
        if marker in _JPEG_STANDALONE:
            offset += 2
            continue
        if offset + 4 > len(data):
            return "JPEG ends inside a segment header"
        (length,) = struct.unpack(">H", data[offset + 2:offset + 4])
        offset += 2 + length
        if offset > len(data):
            return f"JPEG segment 0xFF{marker:02X} needs {offset - len(data)} more bytes"
        if marker == 0xDA:  # start of scan: entropy-coded data runs to the next marker
            found = _JPEG_NEXT_MARKER.search(data, offset)
            if found is None:
                return "JPEG scan data ends before its EOI marker"
            offset = found.start()


def _is_jpeg(data: np.ndarray) -> bool:
    return data.size >= 2 and data[0] == 0xFF and data[1] == 0xD8


def _has_image_suffix(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1] if text else type(error).__name__
