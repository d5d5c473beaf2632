"""Accuracy of reduced-precision stages against FP32: final images and each stage's outputs.

Reduced stages are swapped into an FP32 Session's device (`swapped_stages`), so the Session's
own walk renders every image; nothing here names a stage's inputs. Final images are compared as
users see them (uint8): PSNR and SSIM (scikit-image) per edit. Stage outputs are compared on the
FP32 pipeline's own stage inputs: max |q - f| / max |f| and mean |q - f| / mean |f| per output
(normalised by the output's scale, so an output that is near zero, such as a flow field of a
reconstruction, does not turn rounding into infinite relative error).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from warpres.benchmark import psnr
from warpres.edits import EditRequest
from warpres.files import atomic_path
from warpres.stages import Stage

StageRunner = Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]
"""Runs one stage on host arrays: feeds by input name -> outputs by output name."""


class SwappedStages:
    """A host Device that runs the stages named in `runners` with them and the rest as `device`."""

    def __init__(self, device, runners: Mapping[str, StageRunner]) -> None:
        self._device = device
        self._runners = dict(runners)

    def run(self, stage: Stage, feeds: Mapping[str, np.ndarray], pipeline: int) -> dict[str, np.ndarray]:
        runner = self._runners.get(stage.name)
        if runner is None:
            return self._device.run(stage, feeds, pipeline)
        results = runner(feeds)
        return {name: np.asarray(results[name], dtype=np.float32) for name in stage.outputs}

    def __getattr__(self, name: str):  # upload, split, gather, download, timing: the wrapped device's
        return getattr(self._device, name)


@contextmanager
def swapped_stages(session, runners: Mapping[str, StageRunner]) -> Iterator[None]:
    """`session` runs the stages in `runners` with them while the block runs."""
    device = session.device
    session.device = SwappedStages(device, runners)
    try:
        yield
    finally:
        session.device = device


def edit_label(edits) -> str:
    """"inversion" for the reconstruction, else e.g. "smile=+2"."""
    if not edits:
        return "inversion"
    return ",".join(f"{e.name}={e.strength:+g}" if isinstance(e, EditRequest) and e.strength is not None
                    else str(getattr(e, "name", e)) for e in edits)


def ssim(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Mean SSIM of (B, H, W, 3) uint8 batches (scikit-image's, per image, averaged)."""
    from skimage.metrics import structural_similarity

    return float(np.mean([structural_similarity(r, c, channel_axis=-1, data_range=255)
                          for r, c in zip(reference, candidate, strict=True)]))


class EditProbe:
    """A fixed set of images rendered under fixed edit sets by an FP32 session: the reference
    reduced stages are measured against."""

    def __init__(self, session, images: Sequence[np.ndarray], edit_sets: Sequence) -> None:
        self.session = session
        self.images = list(images)
        self.edit_sets = [None, *(e for e in edit_sets if e)]
        self.references = self._render({})

    def _render(self, runners: Mapping[str, StageRunner]) -> list[np.ndarray]:
        with swapped_stages(self.session, runners):
            inversion = self.session.invert(self.images)
            return [np.asarray(out) for out in self.session.edit_many(inversion, self.edit_sets)]

    def psnr(self, runners: Mapping[str, StageRunner]) -> list[float]:
        """PSNR of each edit set's images (inversion first) with `runners` swapped in."""
        return [float(psnr(out, ref)) for ref, out in zip(self.references, self._render(runners), strict=True)]

    def measure(self, runners: Mapping[str, StageRunner]) -> list[EditAccuracy]:
        """PSNR and SSIM per edit set with `runners` swapped in."""
        return [EditAccuracy(edit_label(edits), float(psnr(out, ref)), ssim(ref, out))
                for edits, ref, out in zip(self.edit_sets, self.references, self._render(runners), strict=True)]


@dataclass(frozen=True)
class EditAccuracy:
    edit: str
    psnr_db: float
    ssim: float


@dataclass(frozen=True)
class OutputAccuracy:
    stage: str
    output: str
    max_rel: float
    mean_rel: float


def output_accuracy(stage: Stage, inputs: Mapping[str, np.ndarray], reference: StageRunner,
                    candidate: StageRunner, batch: int = 8) -> list[OutputAccuracy]:
    """Per output of `stage`: max |q - f| / max |f| and mean |q - f| / mean |f| over `inputs`
    ({input: (N, ...)}), run `batch` rows at a time by both runners."""
    count = len(next(iter(inputs.values())))
    stats = {name: [0.0, 0.0, 0.0, 0.0, 0] for name in stage.outputs}  # max err, max ref, sum err, sum ref, n
    for start in range(0, count, batch):
        feeds = {name: np.ascontiguousarray(value[start:start + batch]) for name, value in inputs.items()}
        want, got = reference(feeds), candidate(feeds)
        for name in stage.outputs:
            f = np.asarray(want[name], dtype=np.float64)
            error = np.abs(np.asarray(got[name], dtype=np.float64) - f)
            s = stats[name]
            s[0], s[1] = max(s[0], float(error.max())), max(s[1], float(np.abs(f).max()))
            s[2], s[3], s[4] = s[2] + float(error.sum()), s[3] + float(np.abs(f).sum()), s[4] + f.size
    return [OutputAccuracy(stage.name, name, s[0] / max(s[1], 1e-30), s[2] / max(s[3], 1e-30))
            for name, s in stats.items()]


@dataclass
class AccuracyReport:
    """What `warpres calibrate` measured on held-out images, saved beside the calibrated graphs."""

    target: str
    precision: str
    bar_db: float
    float_precision: str
    held_out_images: int
    stage_precisions: dict[str, str]
    edits: list[EditAccuracy]
    outputs: list[OutputAccuracy]
    stage_psnr_db: dict[str, float] = field(default_factory=dict)
    """Each stage quantized alone (the others FP32), with its best recipe: the lowest PSNR over
    the validation images and edits (not the held-out ones)."""

    @property
    def min_psnr_db(self) -> float:
        return min(e.psnr_db for e in self.edits)

    @property
    def meets_bar(self) -> bool:
        return self.min_psnr_db >= self.bar_db

    def summary(self) -> str:
        return f"held-out PSNR >= {self.min_psnr_db:.1f} dB, bar {self.bar_db:g} dB"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["min_psnr_db"], data["meets_bar"] = self.min_psnr_db, self.meets_bar
        return data

    @classmethod
    def from_dict(cls, data: dict) -> AccuracyReport:
        fields = {k: v for k, v in data.items() if k not in ("min_psnr_db", "meets_bar")}
        fields["edits"] = [EditAccuracy(**e) for e in data["edits"]]
        fields["outputs"] = [OutputAccuracy(**o) for o in data["outputs"]]
        return cls(**fields)

    def save(self, path: Path) -> None:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> list[str]:
        """The report as text lines: stage precisions, per-output errors, per-edit PSNR / SSIM."""
        lines = [f"{self.target} {self.precision} calibration, float part {self.float_precision}, "
                 f"{self.held_out_images} held-out images: {self.summary()} "
                 f"({'met' if self.meets_bar else 'MISSED'})",
                 f"  {'stage':<18}{'precision':<11}{'alone (dB)':>11}  {'output':<18}{'max rel':>10}{'mean rel':>10}"]
        for name, precision in self.stage_precisions.items():
            alone = self.stage_psnr_db.get(name)
            outputs = [o for o in self.outputs if o.stage == name] or [None]
            for i, out in enumerate(outputs):
                head = (f"  {name:<18}{precision:<11}{'' if alone is None else f'{alone:.1f}':>11}  " if i == 0
                        else " " * 42)
                errors = "" if out is None else f"{out.output:<18}{out.max_rel:>10.2e}{out.mean_rel:>10.2e}"
                lines.append(head + errors)
        lines.append(f"  {'edit':<24}{'PSNR (dB)':>10}{'SSIM':>8}")
        lines += [f"  {e.edit:<24}{e.psnr_db:>10.1f}{e.ssim:>8.4f}" for e in self.edits]
        return lines
