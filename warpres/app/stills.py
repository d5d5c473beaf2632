"""Editing image files: read a batch, invert it (its largest faces, with a face aligner), render
every planned output and write one PNG per input and output."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpres.app.editing import edit_faces
from warpres.app.outputs import Output
from warpres.errors import WarpresError
from warpres.media.annotate import draw_label
from warpres.media.faces import FaceAligner, FaceCrop
from warpres.media.imageio import read_image, to_rgb8, write_image


@dataclass
class _Loaded:
    path: Path
    pixels: np.ndarray  # what the encoder sees (the face crop when aligning)
    frame: np.ndarray | None = None
    crop: FaceCrop | None = None


@dataclass
class StillsResult:
    written: int
    failed: int  # inputs skipped because they could not be read (or held no face)


def edit_image_files(session, paths: Sequence[Path], outputs: Sequence[Output], out_dir: Path, *,
                     align_faces: bool = False, paste_back: bool = True, batch_size: int = 8,
                     warn: Callable[[str], None] = print, progress: Callable[[int], None] | None = None
                     ) -> StillsResult:
    """Write `out_dir/<stem>_<suffix>.png` for every path and output. An unreadable input (or one
    without a face when aligning) is skipped with `warn` and counted; the rest are edited.
    `progress(n)` is called after each batch of n inputs."""
    aligner = FaceAligner(session.info.image_size) if align_faces else None
    result = StillsResult(0, 0)
    for start in range(0, len(paths), batch_size):
        batch = paths[start:start + batch_size]
        loaded = _load(batch, aligner, warn)
        result.failed += len(batch) - len(loaded)
        if loaded:
            result.written += _edit_and_write(session, loaded, outputs, out_dir, paste_back)
        if progress is not None:
            progress(len(batch))
    return result


def _load(paths: Sequence[Path], aligner: FaceAligner | None, warn) -> list[_Loaded]:
    loaded = []
    for path in paths:
        try:
            pixels = read_image(path)
            if aligner is None:
                loaded.append(_Loaded(path, pixels))
            else:
                frame = to_rgb8(pixels)
                crop = aligner.align(frame, str(path))
                loaded.append(_Loaded(path, crop.image, frame, crop))
        except WarpresError as exc:
            warn(f"skipping {exc}")
    return loaded


def _edit_and_write(session, loaded: list[_Loaded], outputs: Sequence[Output], out_dir: Path,
                    paste_back: bool) -> int:
    edit_sets = [requests for output in outputs for requests in output.edit_sets]
    if loaded[0].crop is None:
        rendered = iter(session.edit_many(session.invert([item.pixels for item in loaded]), edit_sets))
    else:
        rendered = iter(edit_faces(session, [item.frame for item in loaded], [item.crop for item in loaded],
                                   edit_sets, paste=paste_back))
    written = 0
    for output in outputs:
        strips = [next(rendered) for _ in output.edit_sets]
        for index, item in enumerate(loaded):
            tiles = [np.array(images[index]) for images in strips]
            for tile, label in zip(tiles, output.labels or (), strict=False):
                draw_label(tile, label)
            write_image(out_dir / f"{item.path.stem}_{output.suffix}.png", np.concatenate(tiles, axis=1))
            written += 1
    return written
