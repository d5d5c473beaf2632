"""Media I/O: image files, face alignment and paste-back, video (numpy and OpenCV; no torch, no runtime)."""

import os
import sys


def quiet_opencv() -> None:
    """OpenCV's own warnings (a camera backend probing, a codec fallback) are not ours to print:
    errors only. The variable is read when cv2 is imported; the call covers an earlier import."""
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    if "cv2" in sys.modules:
        sys.modules["cv2"].utils.logging.setLogLevel(sys.modules["cv2"].utils.logging.LOG_LEVEL_ERROR)
