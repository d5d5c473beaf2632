"""Text drawn onto images: the live overlay's FPS and a sweep strip's strengths."""

from __future__ import annotations

import cv2
import numpy as np


def draw_label(image: np.ndarray, text: str, *, width_fraction: float = 0.35) -> np.ndarray:
    """Draw `text` in the top-left corner of an RGB uint8 image, in place: sized so that about
    `width_fraction` of the image width holds a text of this length, white on a black outline
    (readable on any content)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (unit_width, _), _ = cv2.getTextSize(text, font, 1.0, 1)
    scale = max(0.3, min(1.5, width_fraction * image.shape[1] / unit_width))
    thickness = max(1, round(2 * scale))
    (_, text_height), _ = cv2.getTextSize(text, font, scale, thickness)
    origin = (max(2, round(6 * scale)), max(2, round(6 * scale)) + text_height)
    cv2.putText(image, text, origin, font, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, font, scale, (255, 255, 255), thickness, cv2.LINE_AA)
    return image
