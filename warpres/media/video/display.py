"""Showing frames in a window: the GUI check, the overlay and side-by-side compare."""

from __future__ import annotations

import os
import re
import sys

import cv2
import numpy as np

from warpres.media.annotate import draw_label
from warpres.media.video import VideoError

WINDOW_NAME = "warpres"
QUIT_KEYS = {ord("q"), ord("Q"), 27}  # q, Esc
OVERLAY_KEYS = {ord("o"), ord("O")}


def highgui_backend(build_info: str | None = None) -> str | None:
    """The GUI backend OpenCV was built with ("QT5", "GTK3", "WIN32UI", ...), None if it has none.

    Read from `cv2.getBuildInformation()`; opencv-python-headless reports ``GUI: NONE``.
    """
    info = cv2.getBuildInformation() if build_info is None else build_info
    match = re.search(r"^\s*GUI:\s*(\S+)", info, flags=re.MULTILINE)
    if match is None:
        return "unknown"  # not reported: let cv2.imshow decide
    backend = match.group(1)
    return None if backend.upper() in {"NONE", "NO"} else backend


def check_display() -> None:
    """Raise VideoError unless `cv2.imshow` can open a window here (GUI build, and a display)."""
    if highgui_backend() is None:
        raise VideoError("--show needs OpenCV with a GUI, but this OpenCV has none (opencv-python-headless); "
                         "install opencv-python instead, or write a file with -o")
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise VideoError("--show needs a display, but neither DISPLAY nor WAYLAND_DISPLAY is set; "
                         "write a file with -o instead")


def draw_overlay(frame: np.ndarray, fps: float | None, latency_ms: float | None) -> np.ndarray:
    """Draw "<fps> fps  <latency> ms" in the top-left corner of an RGB uint8 frame, in place."""
    text = f"{'--' if fps is None else f'{fps:.1f}'} fps  {'--' if latency_ms is None else f'{latency_ms:.0f}'} ms"
    return draw_label(frame, text)


def side_by_side(original: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """input | edited: the input scaled to the edited frame's height, placed on its left."""
    height = edited.shape[0]
    width = max(1, round(original.shape[1] * height / original.shape[0]))
    if original.shape[:2] != (height, width):
        interpolation = cv2.INTER_AREA if height < original.shape[0] else cv2.INTER_LINEAR
        original = cv2.resize(original, (width, height), interpolation=interpolation)
    return np.concatenate([original, edited], axis=1)
