"""Independent re-implementations of official layouts, used only as ground truth in tests."""
