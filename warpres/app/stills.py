"""`warpres edit` on image files: the batch steps (warpres.app.batch.pipeline) run in this process,
with outputs named by each input's stem in one folder.

A photo with no face (when aligning) is reported by name and counted, never edited whole.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from warpres.app.outputs import Output
from warpres.app.batch.pipeline import OK, Cutting, Editor, Item, Plan, run_inline
from warpres.media.faces import FaceAligner
from warpres.media.imageio import read_image

@dataclass
class StillsResult:
    written: int = 0
    failed: int = 0                            # inputs skipped: unreadable, or no face when aligning
    faces: int = 0                             # faces edited (when aligning)


def edit_image_files(session, paths: Sequence[Path], outputs: Sequence[Output], out_dir: Path, *,
                     aligner: FaceAligner | None = None, largest_face: bool = False, fit: str = "crop",
                     crop_only: bool = False, batch_size: int = 8, warn: Callable[[str], None] = print,
                     progress: Callable[[int], None] | None = None) -> StillsResult:
    """Write `out_dir/<stem>_<suffix>.png` for every path and output (with ``crop_only`` and
    several faces, `<stem>_<k>_<suffix>.png` per face k). An unreadable input, or one without a
    face when aligning, is skipped with `warn` and counted. `progress(n)` follows each input."""
    plan = Plan(tuple(outputs), Path(out_dir), crop_only)
    cutting = Cutting(session.info.image_size, aligner.framing if aligner is not None else None, largest_face, fit)
    result = StillsResult()

    def done(item: Item) -> None:
        if item.status == OK:
            result.written += len(item.written)
            result.faces += item.faces if aligner is not None else 0
        else:
            result.failed += 1
            warn(f"skipping {item.error}")
        if progress is not None:
            progress(1)

    items = [Item(index, str(path), Path(path).stem) for index, path in enumerate(paths)]
    run_inline(items, plan, Editor(session, plan), cutting, read=read_image, batch_size=batch_size,
               aligner=aligner, done=done)
    return result
