"""Typed configurations serialised as JSON next to the weights (never pickled)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, Self


class JsonConfig:
    """Mixin for frozen dataclass configs: a JSON-able dict and back, unknown fields refused.

    Tuples become lists in JSON; each config's __post_init__ turns them back into tuples.
    """

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown fields {unknown}; known fields are {sorted(known)}")
        return cls(**data)
