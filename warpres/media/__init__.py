"""Media I/O: image files, face alignment and paste-back, video (numpy and OpenCV; no torch, no runtime)."""
