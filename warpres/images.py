"""Pixel conventions at the model boundary, shared by every stage.

Model side: float32 (B, 3, S, S) in [-1, 1], ``x = (p - 127.5) / 127.5`` for 8-bit values
``p``. Pixel side: uint8 RGB (B, H, W, 3), ``p = floor(clip((y + 1) * 127.5 + 0.5, 0, 255))``.
These are the official StyleRes pre-/post-processing formulas. Channels are RGB: OpenCV reads
BGR, so callers convert (``cv2.cvtColor(image, cv2.COLOR_BGR2RGB)``) before calling in.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from warpres.errors import ImageError

# uint16 -> 8-bit range: 65535 / 255 == 257 exactly, so v * 257 maps back to v exactly.
_UINT16_PER_UINT8 = 257.0


def to_model_input(images: np.ndarray | Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB images -> float32 (B, 3, size, size) in [-1, 1], ``(p - 127.5) / 127.5``.

    ``images``: one image (H, W) / (H, W, C) or a batch (B, H, W, C) array, or a list of
    images (their sizes may differ). C is 1 (gray, replicated to RGB), 2 (gray + alpha),
    3 (RGB) or 4 (RGBA). Alpha is composited over white, ``rgb * a + 255 * (1 - a)``, so
    transparent backgrounds become white rather than whatever colour hides under them.
    dtypes: uint8; uint16 (divided by 257 into the 8-bit range, not rounded); float, read
    as 8-bit-range values in [0, 255] (so ``image.astype(np.float32)`` gives the uint8 result).

    An image is resized (in float32, to exactly size x size, aspect not kept) only when its
    size differs: ``cv2.INTER_AREA`` when neither side grows, ``cv2.INTER_CUBIC`` when one
    does; the result is clipped to [0, 255] because bicubic overshoots.
    Raises :class:`ImageError` on empty, non-finite, out-of-range or mis-shaped input.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size <= 0:
        raise ImageError(f"size must be a positive integer, got {size!r}")
    batch = _split_batch(images)
    out = np.empty((len(batch), 3, size, size), dtype=np.float32)
    for index, image in enumerate(batch):
        rgb = _resize(rgb_8bit_range(image, index), int(size))
        out[index] = ((rgb - np.float32(127.5)) / np.float32(127.5)).transpose(2, 0, 1)
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 RGB (B, H, W, 3),
    ``floor(clip((y + 1) * 127.5 + 0.5, 0, 255))``; out-of-range values are clipped."""
    if not isinstance(images, np.ndarray):
        raise ImageError(f"expected a numpy array (B, 3, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ImageError(f"expected shape (B, 3, H, W), got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise ImageError(f"expected a float array in [-1, 1], got {images.dtype}")
    if not np.all(np.isfinite(images)):
        raise ImageError("images contain NaN or inf")
    y = images.astype(np.promote_types(images.dtype, np.float32), copy=False)
    pixels = np.clip((y + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels.transpose(0, 2, 3, 1))


def _split_batch(images: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim in (2, 3):
            return [images]
        if images.ndim == 4:
            if images.shape[0] == 0:
                raise ImageError(f"empty batch: shape {images.shape}")
            return list(images)
        raise ImageError(f"expected an image (H, W) / (H, W, C) or a batch (B, H, W, C), "
                         f"got shape {images.shape}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ImageError("no images given")
        for index, image in enumerate(images):
            if not isinstance(image, np.ndarray) or image.ndim not in (2, 3):
                shape = image.shape if isinstance(image, np.ndarray) else type(image).__name__
                raise ImageError(f"image {index}: expected an array (H, W) or (H, W, C), "
                                 f"got {shape}")
        return list(images)
    raise ImageError(f"expected a numpy array or a list of arrays, got {type(images).__name__}")


def rgb_8bit_range(image: np.ndarray, index: int) -> np.ndarray:
    """(H, W) / (H, W, C) uint8 | uint16 | float -> float32 (H, W, 3) in [0, 255]: gray
    replicated, uint16 divided by 257, alpha composited over white. `index` names the image
    in errors."""
    if image.size == 0:
        raise ImageError(f"image {index}: zero size, shape {image.shape}")
    pixels = image[..., None] if image.ndim == 2 else image
    channels = pixels.shape[2]
    if channels not in (1, 2, 3, 4):
        raise ImageError(f"image {index}: expected 1, 2, 3 or 4 channels (gray, gray+alpha, "
                         f"RGB, RGBA), got shape {image.shape}")
    if pixels.dtype == np.uint8:
        values = pixels.astype(np.float32)
    elif pixels.dtype == np.uint16:
        values = pixels.astype(np.float32) / np.float32(_UINT16_PER_UINT8)
    elif np.issubdtype(pixels.dtype, np.floating):
        values = pixels.astype(np.float32)
        if not np.all(np.isfinite(values)):
            raise ImageError(f"image {index}: contains NaN or inf")
        if values.min() < 0 or values.max() > 255:
            raise ImageError(f"image {index}: float pixels must lie in [0, 255], got "
                             f"[{values.min():g}, {values.max():g}]")
    else:
        raise ImageError(f"image {index}: expected uint8, uint16 or float pixels, "
                         f"got {pixels.dtype}")
    if channels in (2, 4):
        alpha = values[..., -1:] / np.float32(255)
        values = values[..., :-1] * alpha + np.float32(255) * (1 - alpha)
    if values.shape[2] == 1:
        values = np.repeat(values, 3, axis=2)
    return values


def _resize(rgb: np.ndarray, size: int) -> np.ndarray:
    """float32 (H, W, 3) -> (size, size, 3); the input itself when already that size."""
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb
    interpolation = cv2.INTER_AREA if height >= size and width >= size else cv2.INTER_CUBIC
    resized = cv2.resize(rgb, (size, size), interpolation=interpolation)
    return np.clip(resized, 0, 255)
