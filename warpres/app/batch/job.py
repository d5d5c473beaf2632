"""`warpres batch`: plan the job, skip what a previous run finished, run the rest inline or on
Ray, and write the results table."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warpres.app.batch.distributed import EditWorker, SessionSpec, connect, run_on_ray
from warpres.app.batch.inputs import InputListing, read_source
from warpres.app.batch.pipeline import FAILURES, NOT_IMAGE, Cutting, Editor, Item, Plan, fingerprint, run_inline
from warpres.app.batch.results import finished_rows, save_record, write_table
from warpres.media.imageio import IMAGE_EXTENSIONS


@dataclass
class BatchSummary:
    rows: list[dict]
    tables: tuple[Path, Path]
    resumed: int            # inputs whose rows came from a previous run
    seconds: float
    ran_on: str             # "in this process" or "on Ray"

    @property
    def statuses(self) -> Counter:
        """Inputs per status (an input's outputs share its status)."""
        return Counter({row["input"]: row["status"] for row in self.rows}.values())

    @property
    def failed(self) -> int:
        return sum(count for status, count in self.statuses.items() if status in FAILURES)

    def describe(self) -> str:
        counts = ", ".join(f"{count} {status}" for status, count in sorted(self.statuses.items()))
        resumed = f" ({self.resumed} finished by an earlier run)" if self.resumed else ""
        return (f"{sum(self.statuses.values())} inputs{resumed}: {counts}; {self.seconds:.1f} s {self.ran_on}; "
                f"results in {self.tables[1]}")


def run_batch(listing: InputListing, plan: Plan, cutting: Cutting, spec: SessionSpec, *, ray: str = "off",
              workers: int = 1, cpus_per_worker: float = 1.0, gpus_per_worker: float = 0.0, batch_size: int = 8,
              session=None, progress: Callable[[int], None] | None = None,
              worker: type = EditWorker) -> BatchSummary:
    """Edit every input of `listing` by `plan`. ray: "off" (this process, with `session` or one
    opened from `spec`), "local", "auto" or a cluster address (`connect`); on Ray the actors open
    `spec`. progress(n): inputs done so far."""
    start = time.perf_counter()
    # Not the backend: backends agree within 1/255 (the parity tests), so a job resumes on another.
    job = fingerprint(spec.path, spec.precision, plan.outputs, plan.crop_only, cutting)
    rows: dict[int, list[dict]] = {}
    pending: list[Item] = []
    for index, (source, name) in enumerate(zip(listing.sources, listing.names, strict=True)):
        item = Item(index, source, name)
        if source in listing.not_images:
            item.fail(NOT_IMAGE, f"{source}: not an image file (suffix not one of {', '.join(IMAGE_EXTENSIONS)})")
            rows[index] = save_record(item, plan, job)
        elif (finished := finished_rows(source, plan, job)) is not None:
            rows[index] = finished
        else:
            pending.append(item)
    resumed = len(rows) - len(listing.not_images)
    if progress is not None:
        progress(len(rows))

    def done(index: int, item_rows: list[dict]) -> None:
        rows[index] = item_rows
        if progress is not None:
            progress(len(rows))

    ran_on = connect(ray) if pending and ray != "off" else "off"
    if pending and ran_on == "off":
        editor = Editor(session if session is not None else spec.open(), plan)
        run_inline(pending, plan, editor, cutting, read=read_source, batch_size=batch_size,
                   done=lambda item: done(item.index, save_record(item, plan, job)))
    elif pending:
        try:
            for index, item_rows in run_on_ray(pending, plan, cutting, job, spec, workers=workers,
                                               cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                                               batch_size=batch_size, read=read_source, worker=worker):
                done(index, item_rows)
        finally:
            if ran_on == "started":
                import ray as ray_module

                ray_module.shutdown()
    ordered = [row for index in sorted(rows) for row in rows[index]]
    tables = write_table(ordered, plan.out_dir)
    return BatchSummary(ordered, tables, resumed, time.perf_counter() - start,
                        "in this process" if ran_on == "off" else "on Ray")
