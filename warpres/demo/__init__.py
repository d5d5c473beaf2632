"""Procedural demo domain: deterministic cartoon face portraits with known attributes and masks."""
