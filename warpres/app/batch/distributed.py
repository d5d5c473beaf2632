"""The batch steps (warpres.app.batch.pipeline) as a Ray Data pipeline:

    inputs -> read + decode, detect + align (CPU tasks) -> edit (an actor pool: each actor opens
    its Session once) -> compose + write + record (CPU tasks) -> the driver gathers the rows

Ray Data streams: blocks move on as soon as a step finishes them and it holds back upstream work
when the object store fills, so memory follows the number of actors and blocks in flight, not
the number of inputs. An actor that dies is restarted and its batch retried (Ray Data's
default); an exception in an edit call is retried up to `MAX_RETRIES` times in a row
(`EditWorker`); the records already written survive a failed job, and a rerun resumes from them.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from warpres.app.batch.pipeline import Cutting, Editor, Item, Plan, cut_item, read_item, write_item
from warpres.app.batch.results import save_record
from warpres.errors import WarpresError

MAX_RETRIES = 3
# Below this, a local Ray's own processes cost more than its parallel tasks win (benchmarks/batch.py:
# 0.74-0.81x one process on 2 cores), so `--ray auto` without a cluster edits in this process.
LOCAL_RAY_MIN_CPUS = 4
TASK_CPUS = 1.0       # what each read / align task reserves
ITEMS_PER_BLOCK = 32   # the unit of the read / write tasks: small, so decoded frames stream instead of piling up


@dataclass(frozen=True)
class SessionSpec:
    """What an actor opens: the model's folder (or checkpoint), backend, precision, batch and
    backend options (a GPU worker's device, a CPU worker's threads)."""

    path: str
    directions: object   # a DirectionLibrary or None
    backend: str
    precision: str | None
    max_batch: int
    backend_options: Mapping[str, object] | None = None

    def open(self):
        from warpres.app.sessions import open_session

        return open_session(self.path, self.backend, precision=self.precision, directions=self.directions,
                            max_batch=self.max_batch, backend_options=self.backend_options)


def worker_spec(session, path: str, directions, backend: str, precision: str | None, max_batch: int, *,
                cpus_per_worker: float, gpus_per_worker: float, allow_embedded_plugins: bool = False) -> SessionSpec:
    """What the actors open. CPU actors run the CPU backend `session` (opened here for `backend`)
    chose, with one thread per reserved CPU: the read / align / write tasks get the other cores
    instead of fighting the actors' threads for them. GPU actors choose on their own machine."""
    options: dict[str, object] = {"allow_embedded_plugins": True} if allow_embedded_plugins else {}
    kind = session.backend.name.split()[0]
    if gpus_per_worker == 0 and kind in ("openvino", "onnxruntime") and "CPU" in session.backend.name:
        backend = kind
        options["threads"] = max(1, round(cpus_per_worker))
    return SessionSpec(path, directions, backend, precision, max_batch, options or None)


class TransientEditFault(Exception):
    """An edit call failed for a reason outside the data (a bad photo fails its item instead):
    Ray retries the call."""


class EditWorker:
    """The actor: one Session for its life, an `Editor` per call (a batch of rows). A call that
    raises is retried by Ray up to `MAX_RETRIES` times in a row; then the job stops with the
    error (the records written so far stay, and a rerun resumes)."""

    def __init__(self, spec: SessionSpec, plan: Plan) -> None:
        self.editor = Editor(spec.open(), plan)
        self._failures = 0

    def __call__(self, batch: Mapping[str, Sequence[bytes]]) -> dict[str, list[bytes]]:
        try:
            items = self.edit([_unpack(data) for data in batch["item"]])
        except Exception as error:
            self._failures += 1
            if self._failures > MAX_RETRIES:
                raise
            raise TransientEditFault(f"edit call failed ({error!r}); retry {self._failures} of {MAX_RETRIES}") \
                from error
        self._failures = 0
        return {"item": [_pack(item) for item in items]}

    def edit(self, items: list[Item]) -> list[Item]:
        return self.editor(items)


def connect(address: str) -> str:
    """Join or start Ray: "local" starts a Ray on this machine; "auto" joins the cluster this
    machine is part of (RAY_ADDRESS, or `ray start` here), else starts a local one on machines
    of `LOCAL_RAY_MIN_CPUS` or more and otherwise leaves the job to this process; anything else
    is a cluster address. Returns "joined", "started" (the caller shuts it down) or "off"."""
    try:
        import ray
        import ray.data  # noqa: F401  (ray without its data extra has no Ray Data)
    except ImportError:
        raise WarpresError("warpres batch --ray needs Ray Data: pip install 'warpres[batch]' (or --ray off)") from None
    if ray.is_initialized():
        return "joined"
    options = {"ignore_reinit_error": True, "include_dashboard": False}
    if address == "auto":
        try:
            ray.init(address="auto", **options)
            return "joined"
        except ConnectionError:
            if (os.cpu_count() or 1) < LOCAL_RAY_MIN_CPUS:
                return "off"
            address = "local"
    try:
        ray.init(address=address, **options)
    except (ConnectionError, ValueError) as error:
        raise WarpresError(f"cannot reach Ray at {address!r}: {error}") from error
    return "started"


def run_on_ray(items: Sequence[Item], plan: Plan, cutting: Cutting, job: str, spec: SessionSpec, *,
               workers: int, cpus_per_worker: float, gpus_per_worker: float, batch_size: int,
               read, worker: type = EditWorker) -> Iterator[tuple[int, list[dict]]]:
    """(input index, its rows) for every item, as the writes finish (in no particular order)."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0.0)
    if cpus - workers * cpus_per_worker < TASK_CPUS:
        raise WarpresError(f"{workers} edit worker(s) x {cpus_per_worker:g} CPUs leave less than {TASK_CPUS:g} of this "
                           f"Ray cluster's {cpus:g} CPUs for the read and align tasks, which would then never "
                           f"run: use fewer --workers or a smaller --cpus-per-worker (e.g. 0.5)")
    context = ray.data.DataContext.get_current()
    context.actor_task_retry_on_errors = [TransientEditFault]
    dataset = ray.data.from_items([{"item": _pack(item)} for item in items],
                                  override_num_blocks=max(1, math.ceil(len(items) / ITEMS_PER_BLOCK)))
    # A flat_map (one row in, one out) rather than a map: Ray Data fuses a map into the actor pool
    # after it, and the actors would then decode and align too, leaving their device idle meanwhile.
    dataset = dataset.flat_map(_read_and_cut, fn_kwargs={"cutting": cutting, "read": read}, num_cpus=TASK_CPUS)
    dataset = dataset.map_batches(worker, fn_constructor_kwargs={"spec": spec, "plan": plan}, batch_size=batch_size,
                                  batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
                                  num_cpus=cpus_per_worker, num_gpus=gpus_per_worker or None)
    # The writes reserve no CPU: they are light (compose, encode: ~10 ms an image) and must never
    # queue behind the reads for one, or the edited frames pile up in the object store (seen on 2
    # CPUs: 190 read tasks ran, no write).
    dataset = dataset.map(_write_and_record, fn_kwargs={"plan": plan, "job": job}, num_cpus=0)
    for row in dataset.iter_rows():
        yield row["index"], pickle.loads(row["rows"])


def _pack(item: Item) -> bytes:
    """Items travel between the steps as bytes: Arrow stores them as they are (our own objects,
    pickled by us between our own workers: no user data is unpickled)."""
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _unpack(data: bytes) -> Item:
    return pickle.loads(data)


def _read_and_cut(row: dict, cutting: Cutting, read) -> list[dict]:
    return [{"item": _pack(cut_item(read_item(_unpack(row["item"]), read), cutting))}]


def _write_and_record(row: dict, plan: Plan, job: str) -> dict:
    item = write_item(_unpack(row["item"]), plan)
    return {"index": item.index, "rows": pickle.dumps(save_record(item, plan, job))}
