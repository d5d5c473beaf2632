"""Editing image files: read a batch, cut what the encoder sees from each (every face with an
aligner, else the frame's centred square), invert and edit them together, compose each edit
back into its frame at the frame's own size, and write one PNG per input and output.

A photo with no face (when aligning) is reported by name and counted, never edited whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warpres.app.outputs import Output
from warpres.errors import WarpresError
from warpres.media.annotate import draw_label
from warpres.media.faces import FaceAligner, FaceCrop, paste_back
from warpres.media.fit import SquareFit, fit_square
from warpres.media.imageio import read_image, to_rgb8, write_image


@dataclass
class _Loaded:
    path: Path
    frame: np.ndarray                         # uint8 RGB, the input's own size
    pieces: list[FaceCrop | SquareFit]        # what was cut out of it: faces, or the one square
    squares: list[np.ndarray]                 # the pixels the encoder sees, one per piece


@dataclass
class StillsResult:
    written: int = 0
    failed: int = 0                            # inputs skipped: unreadable, or no face when aligning
    faces: int = 0                             # faces edited (when aligning)
    notes: list[str] = field(default_factory=list)


def edit_image_files(session, paths: Sequence[Path], outputs: Sequence[Output], out_dir: Path, *,
                     aligner: FaceAligner | None = None, largest_face: bool = False, fit: str = "crop",
                     crop_only: bool = False, batch_size: int = 8, warn: Callable[[str], None] = print,
                     progress: Callable[[int], None] | None = None) -> StillsResult:
    """Write `out_dir/<stem>_<suffix>.png` for every path and output (with ``crop_only`` and
    several faces, `<stem>_<k>_<suffix>.png` per face k). An unreadable input, or one without a
    face when aligning, is skipped with `warn` and counted. `progress(n)` follows each batch."""
    result = StillsResult()
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        loaded = [item for item in (_load(path, aligner, largest_face, fit, warn) for path in batch) if item]
        result.failed += len(batch) - len(loaded)
        if aligner is not None:
            result.faces += sum(len(item.pieces) for item in loaded)
        if loaded:
            result.written += _edit_and_write(session, loaded, outputs, out_dir, crop_only)
        if progress is not None:
            progress(len(batch))
    return result


def _load(path: Path, aligner: FaceAligner | None, largest_face: bool, fit: str, warn) -> _Loaded | None:
    try:
        frame = to_rgb8(read_image(path))
        if aligner is None:
            square = fit_square(frame.shape, fit)
            return _Loaded(path, frame, [square], [square.cut(frame)])
        crops = aligner.align_all(frame, str(path), largest_only=largest_face)
    except WarpresError as exc:
        warn(f"skipping {exc}")
        return None
    return _Loaded(path, frame, list(crops), [crop.image for crop in crops])


def compose(frame: np.ndarray, pieces: Sequence[FaceCrop | SquareFit], edits: Sequence[np.ndarray]) -> np.ndarray:
    """The frame with each piece's edit put back where it was cut: faces pasted through their
    mask (one after another), a square composed in at the frame's size."""
    for piece, edited in zip(pieces, edits, strict=True):
        frame = paste_back(frame, edited, piece) if isinstance(piece, FaceCrop) else piece.place(frame, edited)
    return frame


def _edit_and_write(session, loaded: list[_Loaded], outputs: Sequence[Output], out_dir: Path,
                    crop_only: bool) -> int:
    edit_sets = [requests for output in outputs for requests in output.edit_sets]
    squares = [square for item in loaded for square in item.squares]
    rendered = iter(session.edit_many(session.invert(squares), edit_sets))
    written = 0
    for output in outputs:
        strips = [list(next(rendered)) for _ in output.edit_sets]   # per edit set: one image per square
        first = 0
        for item in loaded:
            count = len(item.pieces)
            per_set = [images[first:first + count] for images in strips]
            first += count
            if crop_only:
                names = ([f"{item.path.stem}_{output.suffix}.png"] if count == 1
                         else [f"{item.path.stem}_{k}_{output.suffix}.png" for k in range(count)])
                for k, name in enumerate(names):
                    written += _write_strip(out_dir / name, [np.array(tiles[k]) for tiles in per_set], output)
            else:
                frames = [compose(item.frame, item.pieces, tiles) for tiles in per_set]
                written += _write_strip(out_dir / f"{item.path.stem}_{output.suffix}.png", frames, output)
    return written


def _write_strip(path: Path, images: list[np.ndarray], output: Output) -> int:
    for image, label in zip(images, output.labels or (), strict=False):
        draw_label(image, label)
    write_image(path, np.concatenate(images, axis=1))
    return 1
