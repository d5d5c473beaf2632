"""A frame of any aspect edited in a square and composed back at its own size and aspect.

``crop``: the centred square of side min(H, W) is edited; the rest of the frame is kept as it
is. ``pad``: the frame is centred in a square of side max(H, W), the padding reflected from the
frame (a plain colour would be a border the encoder tries to reproduce); of the edit, the part
over the frame is kept. Either way the result has the frame's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FIT_MODES = ("crop", "pad")


@dataclass(frozen=True)
class SquareFit:
    """Where the edited square sits in the frame: its top-left corner (x, y), which is negative
    when padding, and its side, in frame pixels."""

    mode: str
    x: int
    y: int
    side: int
    frame_shape: tuple[int, int]

    def cut(self, frame: np.ndarray) -> np.ndarray:
        """The square (side, side, 3) to edit."""
        height, width = self.frame_shape
        if self.mode == "crop":
            return np.ascontiguousarray(frame[self.y:self.y + self.side, self.x:self.x + self.side])
        top, left = -self.y, -self.x
        return np.pad(frame, ((top, self.side - height - top), (left, self.side - width - left), (0, 0)),
                      mode="reflect" if min(height, width) > 1 else "edge")

    def place(self, frame: np.ndarray, edited: np.ndarray) -> np.ndarray:
        """The frame with the edited square (any resolution) composed in at the frame's size."""
        interpolation = cv2.INTER_AREA if edited.shape[0] > self.side else cv2.INTER_CUBIC
        square = cv2.resize(edited, (self.side, self.side), interpolation=interpolation)
        if self.mode == "pad":
            height, width = self.frame_shape
            return np.ascontiguousarray(square[-self.y:-self.y + height, -self.x:-self.x + width])
        result = frame.copy()
        result[self.y:self.y + self.side, self.x:self.x + self.side] = square
        return result


def fit_square(frame_shape: tuple[int, ...], mode: str = "crop") -> SquareFit:
    """The `SquareFit` of a frame of shape (H, W, ...) by ``mode`` ("crop" or "pad")."""
    if mode not in FIT_MODES:
        raise ValueError(f"fit must be one of {', '.join(FIT_MODES)}, got {mode!r}")
    height, width = int(frame_shape[0]), int(frame_shape[1])
    side = min(height, width) if mode == "crop" else max(height, width)
    return SquareFit(mode, (width - side) // 2, (height - side) // 2, side, (height, width))
