"""A job's results: one row per input and output, kept as a record per input while the job runs
and gathered into `results.parquet` and `results.csv` at its end.

The record of an input is written (atomically) after its images, under `OUT/.warpres-batch/`,
with each file's size and SHA-256. A rerun of the same job (same fingerprint) takes an input's
rows from its record when every file it lists is still there with that size and hash, so an
interrupted job continues where it stopped and ends with the table an uninterrupted run writes.
Failed inputs are retried: their files were never written.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from warpres.app.batch.pipeline import FAILURES, Item, Plan
from warpres.files import atomic_path, sha256_file

RECORDS = ".warpres-batch"
TABLE_NAME = "results"
STEPS = ("read", "align", "edit", "write")
COLUMNS = ("input", "output", "output_path", "status", "error", "faces", *(f"{step}_s" for step in STEPS))


def rows_of(item: Item, plan: Plan) -> list[dict]:
    """The item's rows: one per output of the plan (the files of a crop-only output with several
    faces joined by ';')."""
    rows = []
    for output in plan.outputs:
        paths = [path for suffix, path, _, _ in item.written if suffix == output.suffix]
        rows.append({"input": item.source, "output": output.suffix, "output_path": ";".join(paths),
                     "status": item.status, "error": item.error, "faces": item.faces,
                     **{f"{step}_s": round(item.seconds.get(step, 0.0), 6) for step in STEPS}})
    return rows


def record_path(out_dir: Path, source: str) -> Path:
    return out_dir / RECORDS / f"{hashlib.sha1(source.encode()).hexdigest()}.json"


def save_record(item: Item, plan: Plan, job: str) -> list[dict]:
    """Write the item's record (after its files); its rows."""
    rows = rows_of(item, plan)
    record = {"job": job, "source": item.source, "rows": rows,
              "files": [[path, size, digest] for _, path, size, digest in item.written]}
    with atomic_path(record_path(plan.out_dir, item.source)) as tmp:
        tmp.write_text(json.dumps(record))
    return rows


def finished_rows(source: str, plan: Plan, job: str) -> list[dict] | None:
    """The rows of an input this job already finished, its files verified; None to do it (again)."""
    path = record_path(plan.out_dir, source)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("job") != job or record.get("source") != source:
        return None
    if any(row["status"] in FAILURES for row in record["rows"]):
        return None
    for file, size, digest in record["files"]:
        file = Path(file)
        if not file.is_file() or file.stat().st_size != size or sha256_file(file) != digest:
            return None
    return record["rows"]


def write_table(rows: Sequence[dict], out_dir: Path) -> tuple[Path, Path]:
    """results.parquet and results.csv in `out_dir`, written atomically; their paths."""
    import pyarrow as pa
    from pyarrow import csv, parquet

    types = {"faces": pa.int32(), **{f"{step}_s": pa.float64() for step in STEPS}}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])
    table = pa.Table.from_pylist([{name: row[name] for name in COLUMNS} for row in rows], schema=schema)
    paths = out_dir / f"{TABLE_NAME}.parquet", out_dir / f"{TABLE_NAME}.csv"
    with atomic_path(paths[0]) as tmp:
        parquet.write_table(table, tmp)
    with atomic_path(paths[1]) as tmp:
        csv.write_csv(table, tmp)
    return paths
