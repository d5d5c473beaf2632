"""Drawn onto images: text (the live overlay's FPS, a sweep strip's strengths) and flow arrows."""

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


def draw_flow(image: np.ndarray, flow: np.ndarray, *, step: int = 2, min_pixels: float = 0.05) -> np.ndarray:
    """Arrows of a backward flow (2, h, w) (out(p) = in(p + flow(p)), in pixels of its h x w grid,
    as WarpRes predicts it) on a copy of an RGB uint8 image: from where content came (p + flow)
    to where the edit puts it (p), every ``step`` flow cells, where it moves at least
    ``min_pixels``; yellow on a dark outline."""
    _, rows, cols = flow.shape
    height, width = image.shape[:2]
    scale_x, scale_y = width / cols, height / rows
    drawn = np.array(image, copy=True)
    for row in range(step // 2, rows, step):
        for col in range(step // 2, cols, step):
            dx, dy = float(flow[0, row, col]), float(flow[1, row, col])
            if dx * dx + dy * dy < min_pixels * min_pixels:
                continue
            tip = (round((col + 0.5) * scale_x), round((row + 0.5) * scale_y))
            tail = (round((col + 0.5 + dx) * scale_x), round((row + 0.5 + dy) * scale_y))
            cv2.arrowedLine(drawn, tail, tip, (0, 0, 0), 2, cv2.LINE_AA, tipLength=0.35)
            cv2.arrowedLine(drawn, tail, tip, (255, 220, 0), 1, cv2.LINE_AA, tipLength=0.35)
    return drawn
