"""Which files an edit run writes: one output per --edit (or a strength strip per edit), and the
check that no two results would be written under one name."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpres.edits import EditRequest, parse_edit_spec
from warpres.errors import WarpresError


class OutputCollisionError(WarpresError):
    """Two results of one run would be written to the same file."""


@dataclass(frozen=True)
class Output:
    """One output file per input: its suffix and what to render."""

    suffix: str
    edit_sets: tuple[tuple[EditRequest, ...] | None, ...]  # one image per entry, joined left to right
    labels: tuple[str, ...] | None = None  # drawn on each image of a strip (a sweep's strengths)


def slug(spec: str) -> str:
    """An edit spec as a file-name fragment ("age=3,smile=-1" -> "age=3_smile=-1")."""
    return re.sub(r"[^A-Za-z0-9.=+-]+", "_", spec).strip("_")


def plan_outputs(specs: Sequence[str], strengths: np.ndarray | None) -> list[Output]:
    """The outputs of an edit run, its specs parsed here once: no specs is the reconstruction;
    with `strengths`, each spec's names at every strength, as one strip."""
    if not specs:
        return [Output("reconstruction", (None,))]
    if strengths is None:
        return [Output(slug(spec), (tuple(parse_edit_spec(spec)),)) for spec in specs]
    outputs = []
    for spec in specs:
        names = [request.name for request in parse_edit_spec(spec)]
        # Strengths as the strip labels print them (6 significant digits), so a label is what was applied.
        sets = tuple(tuple(EditRequest(name, float(f"{value:g}")) for name in names) for value in strengths)
        outputs.append(Output(f"{slug('+'.join(names))}_sweep", sets, tuple(f"{value:+g}" for value in strengths)))
    return outputs


def refuse_colliding_outputs(paths: Sequence[Path], outputs: Sequence[Output]) -> None:
    """Two inputs with one stem (a.png, a.jpg; x.png in two folders), or two edits with one
    file name, would overwrite each other's results: raise OutputCollisionError naming them."""
    by_stem: dict[str, list[Path]] = {}
    for path in paths:
        by_stem.setdefault(path.stem, []).append(path)
    clashes = [group for group in by_stem.values() if len(group) > 1]
    if clashes:
        names = " and ".join(str(p) for p in clashes[0])
        raise OutputCollisionError(f"{names} would write the same output files; edit them in separate runs")
    suffixes = [output.suffix for output in outputs]
    repeated = sorted({suffix for suffix in suffixes if suffixes.count(suffix) > 1})
    if repeated:
        raise OutputCollisionError(f"two --edit options write the same file name ({', '.join(repeated)})")
