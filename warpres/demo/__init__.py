"""Procedural demo domain: deterministic cartoon face portraits with known attributes and masks.

The shipped assets' locations live here, importable without PyTorch (the runtime's `--model demo`
attaches the shipped directions)."""

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
DIRECTIONS = ASSETS / "directions"
SAMPLES = ASSETS / "samples"
