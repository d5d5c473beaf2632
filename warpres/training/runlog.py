"""CSV run logs: one row per logging interval, cut back to a checkpoint's step when a run resumes."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from warpres.files import atomic_path


def append_row(path: Path, columns: Sequence[str], row: dict) -> None:
    """Append `row` (missing columns left empty, floats to 6 significant digits); header on creation."""
    new = not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a run that stopped between a log and a checkpoint)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(row[0]) <= step]
    if len(kept) != len(rows):
        with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
            csv.writer(handle).writerows(kept)


def read_log(path: str | Path) -> list[dict[str, float]]:
    """Rows of a log as floats (empty cells left out)."""
    with Path(path).open(newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
