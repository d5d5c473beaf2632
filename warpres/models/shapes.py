"""Shape checks at module boundaries, with messages that name the tensor and the expected shape."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_shape(name: str, tensor: torch.Tensor, expected: Sequence[int | str]) -> None:
    """Raise ValueError unless `tensor` has `expected` shape; string entries match any size.

    Strings name the free dimension in the message, e.g. ("B", 512, 64, 64) reads
    "feat must be (B, 512, 64, 64), got (2, 256, 64, 64)".
    """
    shape = tuple(tensor.shape)
    matches = len(shape) == len(expected) and all(
        isinstance(want, str) or got == want for got, want in zip(shape, expected, strict=True)
    )
    if not matches:
        wanted = ", ".join(str(want) for want in expected)
        raise ValueError(f"{name} must be ({wanted}), got {shape}")


def spatial_size(name: str, tensor: torch.Tensor, multiple_of: int) -> tuple[int, int]:
    """(B, E) of a square (B, C, E, E) tensor whose side E is a multiple of `multiple_of`."""
    check_shape(name, tensor, ("B", "C", "E", "E"))
    batch, _, height, width = tensor.shape
    if height != width or height % multiple_of != 0:
        raise ValueError(
            f"{name} must be square with a side divisible by {multiple_of}, got {tuple(tensor.shape)}"
        )
    return batch, height
