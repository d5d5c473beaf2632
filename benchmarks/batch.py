"""`warpres batch` inline against Ray Data on this machine: throughput, Ray's overhead, memory.

Generated photos (the demo's faces, each at 256 px over its own noise background, so every file
decodes to different pixels) are edited with the demo models (`--align-faces`, one edit) by
`run_batch` inline and on a local Ray (1 edit actor), each in a fresh process. Throughput counts
the job from its first input to its table (the actors' start and model load included), Ray's
own start-up (`ray.init`) apart. Memory is the peak of the job's processes' unique memory (the
driver, and with Ray its raylet, workers and actors) plus the object store's shared memory,
sampled every 0.5 s; with Ray it is measured at two dataset sizes to show it does not grow with
the inputs.

    python benchmarks/batch.py [--images 400] [--large 10000] [--backend auto]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

from warpres.benchmark import cpu_description, publish
from warpres.demo import SAMPLES

RESULTS = Path(__file__).with_name("results") / "batch.md"


def generate(folder: Path, count: int) -> None:
    """`count` JPEGs in sub-folders of 1000."""
    faces = [cv2.resize(cv2.imread(str(path)), (256, 256), interpolation=cv2.INTER_CUBIC)
             for path in sorted(SAMPLES.glob("sample-*.png"))]
    rng = np.random.default_rng(0)
    for index in range(count):
        canvas = cv2.GaussianBlur(rng.integers(60, 200, (320, 320, 3), dtype=np.uint8), (0, 0), 3)
        x, y = rng.integers(0, 64, 2)
        canvas[y:y + 256, x:x + 256] = faces[index % len(faces)]
        path = folder / f"{index // 1000:02d}" / f"photo-{index:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 92])


class PeakMemory:
    """Peak memory of the job: the unique memory (USS) of this process, its children and (with
    Ray) every Ray process, plus what the shared-memory object store holds (/dev/shm). RSS would
    count each shared page once per process that maps it."""

    def __init__(self, ray: bool) -> None:
        self.ray, self.peak, self._stop = ray, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._shm_before = _shm_used()

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        me, ray_processes, scanned = psutil.Process(), set(), 0.0
        while not self._stop.wait(0.5):
            if self.ray and time.monotonic() - scanned > 5:  # the process scan costs more than the sampling
                scanned = time.monotonic()
                ray_processes = {process for process in psutil.process_iter(["cmdline"])
                                 if any(mark in " ".join(process.info["cmdline"] or [])
                                        for mark in ("ray::", "raylet", "gcs_server", "ray/_private"))}
            total = max(0, _shm_used() - self._shm_before)
            for process in {me, *me.children(recursive=True), *ray_processes}:
                try:
                    total += process.memory_full_info().uss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)


def _shm_used() -> int:
    try:
        return shutil.disk_usage("/dev/shm").used
    except OSError:
        return 0


def run_one(mode: str, folder: Path, out: Path, backend: str) -> dict:
    """One job in this process (called as a subprocess by `main`)."""
    from warpres.app.models import resolve_model
    from warpres.app.outputs import plan_outputs
    from warpres.app.sessions import open_session
    from warpres.app.batch.distributed import connect, worker_spec
    from warpres.app.batch.inputs import list_inputs
    from warpres.app.batch.job import run_batch
    from warpres.app.batch.pipeline import Cutting, Plan

    choice = resolve_model("demo", backend)
    listing = list_inputs(folder)
    plan = Plan(tuple(plan_outputs(["smile=2"], None)), out)
    with PeakMemory(ray=mode == "ray") as memory:
        session = open_session(choice.path, backend, directions=choice.directions)
        size = session.info.image_size
        spec = worker_spec(session, str(choice.path), choice.directions, backend, None, 8, cpus_per_worker=1,
                           gpus_per_worker=0)
        if mode == "ray":
            session = None   # the actor opens its own
        startup = 0.0
        if mode == "ray":
            start = time.perf_counter()
            connect("local")
            startup = time.perf_counter() - start
        summary = run_batch(listing, plan, Cutting(size, choice.framing), spec,
                            ray="off" if mode == "inline" else "auto", session=session, batch_size=8)
    ok = summary.statuses.get("ok", 0)
    return {"mode": mode, "images": len(listing.sources), "ok": ok, "seconds": summary.seconds, "startup": startup,
            "per_second": len(listing.sources) / summary.seconds, "peak_memory_mb": memory.peak / 2 ** 20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=400, help="inputs of the throughput comparison")
    parser.add_argument("--large", type=int, default=10000, help="inputs of the memory check on Ray (0: skip)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--run", nargs=3, metavar=("MODE", "FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        print(json.dumps(run_one(args.run[0], Path(args.run[1]), Path(args.run[2]), args.backend)))
        return
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        runs = []
        sizes = [(args.images, "inline"), (args.images, "ray")] + ([(args.large, "ray")] if args.large else [])
        for count, mode in sizes:
            folder = work / f"in-{count}"
            if not folder.exists():
                generate(folder, count)
            result = subprocess.run([sys.executable, __file__, "--backend", args.backend, "--run", mode, str(folder),
                                     str(work / f"out-{mode}-{count}")], capture_output=True, text=True, check=True)
            runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(runs[-1], flush=True)
    publish(render(runs, args.backend), RESULTS)


def render(runs: list[dict], backend: str) -> str:
    inline = runs[0]
    lines = [f"# warpres batch: inline vs Ray Data\n\n{cpu_description()}; demo models, backend {backend}, "
             f"`--align-faces`, one edit, batches of 8, 1 edit actor (1 CPU reserved, 1 thread) on a local Ray.\n",
             "| mode | images | ok | job (s) | images/s | vs inline | Ray start-up (s) | peak memory (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run['mode']} | {run['images']} | {run['ok']} | {run['seconds']:.1f} "
                     f"| {run['per_second']:.2f} "
                     f"| {run['per_second'] / inline['per_second']:.2f}x | {run['startup']:.1f} "
                     f"| {run['peak_memory_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
