"""One photo's way through an edit job, in four steps that run the same inline and on Ray:

1. `read_item`: decode the file (local or a URI) to uint8 RGB at its own size.
2. `cut_item`: what the encoder sees: every face, aligned (or the largest), or the frame's square.
3. `Editor`: invert and edit the squares of a batch of items in one Session (all stages in one
   place, so the cached features never leave its device).
4. `write_item`: compose each edit back into its frame, write the PNGs atomically, and say what
   was written (sizes and SHA-256, which a resumed job verifies).

An item that fails a step carries its status and error on to the end instead of raising, so a
bad photo is a row of the results, never a failed job. `warpres edit` runs these steps inline;
`warpres batch` inline or on Ray Data (warpres.app.batch.distributed).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from warpres.app.outputs import Output
from warpres.errors import WarpresError
from warpres.files import sha256_file
from warpres.media.annotate import draw_label
from warpres.media.faces import FaceAligner, FaceCrop, FaceNotFoundError, Framing, paste_back
from warpres.media.fit import SquareFit, fit_square
from warpres.media.imageio import to_rgb8, write_image

OK, FAILED, NO_FACE, NOT_IMAGE, PENDING = "ok", "failed", "no_face", "not_image", "pending"
FAILURES = (FAILED, NO_FACE)
"""The statuses a job reports as failures (a file that is not an image is passed over, not failed)."""


@dataclass
class Item:
    """One input on its way through the steps. name: its output name below the output folder."""

    index: int
    source: str
    name: str
    status: str = PENDING
    error: str = ""
    frame: np.ndarray | None = None                       # uint8 RGB, the input's own size
    pieces: list[FaceCrop | SquareFit] = field(default_factory=list)
    squares: list[np.ndarray] = field(default_factory=list)
    edited: list[list[np.ndarray]] | None = None          # per edit set: one image per piece
    faces: int = 0                                        # pieces cut (faces when aligning)
    written: list[tuple[str, str, int, str]] = field(default_factory=list)  # (output suffix, path, bytes, sha256)
    seconds: dict[str, float] = field(default_factory=dict)

    def fail(self, status: str, error: Exception | str) -> Item:
        self.status, self.error, self.faces = status, str(error), 0
        self.frame, self.pieces, self.squares, self.edited = None, [], [], None
        return self

    @property
    def pending(self) -> bool:
        return self.status == PENDING


@dataclass(frozen=True)
class Cutting:
    """How squares are cut: faces at `size` px with `framing` (align), or the frame's square by `fit`."""

    size: int
    framing: Framing | None = None   # None: no alignment
    largest_face: bool = False
    fit: str = "crop"


@dataclass(frozen=True)
class Plan:
    """What a job writes: `outputs` of every input below `out_dir`, composed (or the crops)."""

    outputs: tuple[Output, ...]
    out_dir: Path
    crop_only: bool = False

    @property
    def edit_sets(self) -> list:
        return [requests for output in self.outputs for requests in output.edit_sets]


def read_item(item: Item, read: Callable[[str], np.ndarray]) -> Item:
    if not item.pending:
        return item
    start = time.perf_counter()
    try:
        item.frame = to_rgb8(read(item.source))
    except WarpresError as error:
        return item.fail(FAILED, error)
    item.seconds["read"] = time.perf_counter() - start
    return item


@functools.lru_cache(maxsize=4)
def _aligner(size: int, framing: Framing) -> FaceAligner:
    """One aligner per process and framing: the detector loads once, also in a Ray worker."""
    return FaceAligner(size, framing)


def cut_item(item: Item, cutting: Cutting, aligner: FaceAligner | None = None) -> Item:
    if not item.pending:
        return item
    start = time.perf_counter()
    try:
        if cutting.framing is None:
            square = fit_square(item.frame.shape, cutting.fit)
            item.pieces, item.squares = [square], [square.cut(item.frame)]
            item.faces = 1
        else:
            aligner = aligner or _aligner(cutting.size, cutting.framing)
            crops = aligner.align_all(item.frame, item.source, largest_only=cutting.largest_face)
            item.pieces, item.squares = list(crops), [crop.image for crop in crops]
            item.faces = len(crops)
    except FaceNotFoundError as error:
        return item.fail(NO_FACE, error)
    except WarpresError as error:
        return item.fail(FAILED, error)
    item.seconds["align"] = time.perf_counter() - start
    return item


class Editor:
    """Invert and edit the squares of a batch of items together, with one Session. A batch the
    model refuses (NaN, a bad image) is redone item by item, so only the bad item fails."""

    def __init__(self, session, plan: Plan) -> None:
        self.session = session
        self.plan = plan

    def __call__(self, items: Sequence[Item]) -> list[Item]:
        pending = [item for item in items if item.pending]
        if pending:
            try:
                self._edit(pending)
            except WarpresError:
                for item in pending:
                    try:
                        self._edit([item])
                    except WarpresError as error:
                        item.fail(FAILED, error)
            # A job never edits a photo twice: its cached features would only fill the cache to its
            # bound (2 GB; an actor grew by 0.9 GB over 2000 demo photos before this).
            self.session.cache.clear()
        return list(items)

    def _edit(self, items: Sequence[Item]) -> None:
        start = time.perf_counter()
        squares = [square for item in items for square in item.squares]
        rendered = self.session.edit_many(self.session.invert(squares), self.plan.edit_sets)
        per_set = [list(images) for images in rendered]  # per edit set: one image per square
        seconds = (time.perf_counter() - start) / len(squares)
        first = 0
        for item in items:
            count = len(item.squares)
            item.edited = [images[first:first + count] for images in per_set]
            item.seconds["edit"] = seconds * count   # its share of the batch
            first += count


def output_files(item: Item, plan: Plan) -> list[tuple[str, Path]]:
    """(output suffix, path) of every file `item` writes, in order."""
    files = []
    for output in plan.outputs:
        if plan.crop_only and len(item.pieces) > 1:
            files += [(output.suffix, plan.out_dir / f"{item.name}_{k}_{output.suffix}.png")
                      for k in range(len(item.pieces))]
        else:
            files.append((output.suffix, plan.out_dir / f"{item.name}_{output.suffix}.png"))
    return files


def write_item(item: Item, plan: Plan) -> Item:
    """Write the item's files; frees its pixels, so what travels on is its record alone."""
    if not item.pending:
        return item
    start = time.perf_counter()
    try:
        strips = iter(item.edited)
        files = iter(output_files(item, plan))
        for output in plan.outputs:
            per_set = [next(strips) for _ in output.edit_sets]
            if plan.crop_only:
                images = [[np.array(tiles[k]) for tiles in per_set] for k in range(len(item.pieces))]
            else:
                images = [[compose(item.frame, item.pieces, tiles) for tiles in per_set]]
            for strip in images:
                suffix, path = next(files)
                _write_strip(path, strip, output)
                item.written.append((suffix, str(path), path.stat().st_size, sha256_file(path)))
    except (WarpresError, OSError) as error:
        return item.fail(FAILED, error)
    item.status = OK
    item.frame, item.pieces, item.squares, item.edited = None, [], [], None
    item.seconds["write"] = time.perf_counter() - start
    return item


def compose(frame: np.ndarray, pieces: Sequence[FaceCrop | SquareFit], edits: Sequence[np.ndarray]) -> np.ndarray:
    """The frame with each piece's edit put back where it was cut: faces pasted through their
    mask (one after another), a square composed in at the frame's size."""
    for piece, edited in zip(pieces, edits, strict=True):
        frame = paste_back(frame, edited, piece) if isinstance(piece, FaceCrop) else piece.place(frame, edited)
    return frame


def _write_strip(path: Path, images: list[np.ndarray], output: Output) -> None:
    for image, label in zip(images, output.labels or (), strict=False):
        draw_label(image, label)
    write_image(path, np.concatenate(images, axis=1))


def run_inline(items: Sequence[Item], plan: Plan, editor: Editor, cutting: Cutting, *,
               read: Callable[[str], np.ndarray], batch_size: int, aligner: FaceAligner | None = None,
               done: Callable[[Item], None] | None = None) -> None:
    """The four steps in this process, `batch_size` inputs at a time; `done(item)` follows each."""
    for start in range(0, len(items), batch_size):
        batch = [cut_item(read_item(item, read), cutting, aligner) for item in items[start:start + batch_size]]
        for item in editor(batch):
            write_item(item, plan)
            if done is not None:
                done(item)


def fingerprint(*parts: object) -> str:
    """A short hash of what decides a job's pixels (model, precision, edits, cutting)."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
