"""How far a pose edit's flows follow the face: every flow the WarpRes pipeline relies on, scored
against the renderer's own motion of the face (`renderer.surface_motion`).

    python -m warpres.demo.motion [--images 32] [--strength 0.8] [--warpres CHECKPOINT]

For held-out faces inverted by the shipped E0 and edited along `pose`, it prints the agreement
with the true backward flow of the skin (gain: the least-squares scale of a flow along the true
motion, 1 when it moves content as far as the face moved, 0 when it does not move it) of DIS
on the true renders and on the generator's images at the teacher sizes, and of the WarpRes flow
head; then the edits' PSNR against the ground truth over the identity details and the whole
image (E0 only, StyleRes, and WarpRes with its flow head, with no flow and with the renderer's
true motion as its flow); then how far the generator's own edit turns the head (read by the
bundle's reader) and how far the trainer's random interpolations turn heads. This is the
measurement behind the demo branches' second training phase (`warpres.demo.build.branch_config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click
import cv2
import numpy as np
import torch

from warpres.benchmark import psnr
from warpres.checkpoints import load_model
from warpres.demo.build import STILL_THRESHOLD
from warpres.demo.bundle import BUNDLE, read_bundle, read_regressor
from warpres.demo.evaluation import DETAIL_REGIONS, HELD_OUT_SEED, Reading, held_out_faces, masked_psnr
from warpres.demo.flow_teacher import true_flow
from warpres.demo.renderer import FaceParams, render_with_masks, surface_motion
from warpres.demo.showcase import DIRECTIONS, edited_truth
from warpres.edits import DirectionLibrary, EditRequest
from warpres.images import to_model_input, to_uint8
from warpres.models.editor import EditingModel
from warpres.models.subgraphs import run_stage
from warpres.stages import OUTPUT, cached_tensors, run_steps, walk
from warpres.training.config import EditConfig
from warpres.training.paths import EditPlan, resize_images
from warpres.training.teacher import OpenCVFlowTeacher

TEACHER_SIZES = (128, 512)


@dataclass(frozen=True)
class Agreement:
    """gain: sum(estimate . truth) / sum(truth . truth); error: mean endpoint error; motion: mean
    length of the true motion; still: mean length of the flow where nothing moves (background and
    clothing in both renders, away from the head); all in pixels of the image."""

    gain: float
    error: float
    motion: float
    still: float = float("nan")


def sample_flow(flow: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """The flow (2, H, W), in pixels of its own grid, at `points` (N, 2) given in pixels of a
    `size` image (pixel i spans [i, i + 1)), bilinearly, in pixels of that image: (N, 2)."""
    scale = flow.shape[-1] / size
    x, y = (points * scale - 0.5).astype(np.float32).T
    sampled = [cv2.remap(np.ascontiguousarray(channel, np.float32), x[None], y[None], cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)[0] for channel in flow]
    return np.stack(sampled, axis=1) / scale


def agreement(flows: np.ndarray, motions: list[tuple[np.ndarray, np.ndarray]], size: int,
              still: np.ndarray | None = None) -> Agreement:
    """Flows (B, 2, H, W) against the true motions [(points, displacement)] of `size` images and,
    given `still` (B, size, size) masks of what does not move, their length there."""
    estimate = np.concatenate([sample_flow(flow, points, size)
                               for flow, (points, _) in zip(flows, motions, strict=True)])
    truth = np.concatenate([displacement for _, displacement in motions])
    resting = float("nan")
    if still is not None:
        lengths = []
        for flow, mask in zip(flows, still, strict=True):
            resized = cv2.resize(flow.transpose(1, 2, 0), (size, size), interpolation=cv2.INTER_LINEAR)
            lengths.append(np.linalg.norm(resized, axis=-1)[mask] * size / flow.shape[-1])
        resting = float(np.concatenate(lengths).mean())
    return Agreement(float((estimate * truth).sum() / (truth * truth).sum()),
                     float(np.linalg.norm(estimate - truth, axis=1).mean()),
                     float(np.linalg.norm(truth, axis=1).mean()), resting)


STILL_REGIONS, MOVING_REGIONS = ("background", "clothing"), ("face", "hair", "neck", "earrings", "glasses")


def still_mask(*masks: dict[str, np.ndarray]) -> np.ndarray:
    """From the region masks of renders (`render_with_masks`): (size, size) bool, background or
    clothing in every render, 4 px or more from the head."""
    still = np.logical_and.reduce([np.any([m[name] for name in STILL_REGIONS], axis=0) for m in masks])
    head = np.logical_or.reduce([np.any([m[name] for name in MOVING_REGIONS], axis=0) for m in masks])
    near_head = cv2.dilate(head.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    return still & ~near_head


def _dis(source: torch.Tensor, target: torch.Tensor, size: int, still_threshold: float | None = None) -> np.ndarray:
    """The trainer's teacher (DIS) between two batches in [-1, 1], seen at `size`."""
    teacher = OpenCVFlowTeacher(still_threshold=still_threshold)
    return teacher(resize_images(source, size), resize_images(target, size)).numpy()


def _render(model: EditingModel, tensors: dict[str, torch.Tensor], family: str) -> torch.Tensor:
    """The edited image of `family`'s dataflow from the tensors held (a flow held is used as it is)."""
    return run_steps(walk(family, tensors, {OUTPUT}), dict(tensors), run_stage(model))[OUTPUT]


def _uint8(images: torch.Tensor) -> np.ndarray:
    return to_uint8(images.numpy())


@dataclass(frozen=True)
class EditScore:
    """PSNR (dB) of the edited images against the ground truth: over the identity details (face
    skin, earrings; as `warpres evaluate`) and over the whole image."""

    detail: float
    whole: float


@dataclass
class PoseDiagnosis:
    flows: dict[str, Agreement]
    edits: dict[str, EditScore]
    generator_turn: float
    true_turn: float
    interpolation_turns: np.ndarray


@torch.no_grad()
def diagnose(models: dict[str, EditingModel], reader, directions: DirectionLibrary, faces: list[FaceParams],
             strength: float = 0.8) -> PoseDiagnosis:
    """A `pose=strength` edit of `faces` by the models {family: EditingModel} of `read_bundle`: the
    flows against the true motion, and the edits against the ground truth, WarpRes's also with
    no flow, with the true motion as its flow, and with that scaled by how far the generator's
    own edit turns the head (read) against the truth."""
    warpres, styleres = models["warpres"], models["styleres"]
    size = warpres.generator.config.resolution
    truths = [edited_truth(face, "pose", strength) for face in faces]
    motions = [surface_motion(face, truth, size) for face, truth in zip(faces, truths, strict=True)]
    images, masks = zip(*(render_with_masks(face, size) for face in faces), strict=True)
    edited_images, edited_masks = zip(*(render_with_masks(truth, size) for truth in truths), strict=True)
    images, edited_images = np.stack(images), np.stack(edited_images)
    still = np.stack([still_mask(*pair) for pair in zip(masks, edited_masks, strict=True)])
    x, x_edit = (torch.from_numpy(to_model_input(batch, size)) for batch in (images, edited_images))

    held = run_steps(walk("warpres", {"image"}, {"wplus", "enc_feat", *cached_tensors("warpres"), "rgb"}),
                     {"image": x}, run_stage(warpres))
    wplus = held["wplus"]
    held["wplus_edit"] = torch.from_numpy(directions.apply(wplus.numpy(), [EditRequest("pose", strength)]))
    edited = run_steps(walk("warpres", held, {"flow", "rgb_edit"}), dict(held), run_stage(warpres))
    # the original branch rendered as though it were the edited one: the inversion's tail alone
    plain = _render(warpres, held | {"wplus_edit": wplus, "feat_edit": held["feat"], "rgb_edit": held["rgb"]},
                    "inversion")
    plain_edit = _render(warpres, edited, "inversion")
    flows = {}
    for teacher_size in TEACHER_SIZES:
        flows[f"DIS on the true renders at {teacher_size}"] = agreement(
            _dis(x, x_edit, teacher_size), motions, size, still)
    for teacher_size in TEACHER_SIZES:
        flows[f"DIS on the generator's images at {teacher_size}"] = agreement(
            _dis(plain, plain_edit, teacher_size), motions, size, still)
    flows[f"the same at {TEACHER_SIZES[-1]}, still where the images agree"] = agreement(
        _dis(plain, plain_edit, TEACHER_SIZES[-1], STILL_THRESHOLD), motions, size, still)
    head_flow = edited["flow"]
    flows["WarpRes flow head"] = agreement(head_flow.numpy(), motions, size, still)

    detail = [np.logical_or.reduce([masks[region] for region in DETAIL_REGIONS]) for masks in edited_masks]

    def scored(edited: torch.Tensor) -> EditScore:
        ours = _uint8(edited)
        return EditScore(float(np.mean([masked_psnr(*pair) for pair in zip(ours, edited_images, detail, strict=True)])),
                         float(np.mean([psnr(a, b) for a, b in zip(ours, edited_images, strict=True)])))

    oracle = torch.from_numpy(np.stack([true_flow(face, truth, size, held["feat"].shape[-1])
                                        for face, truth in zip(faces, truths, strict=True)]))
    # StyleRes shares E0 and G: its residual is computed from the same features
    styleres_edit = {name: edited[name] for name in ("enc_feat", "feat", "feat_edit", "rgb_edit", "wplus_edit")}
    edits = {"E0 only": scored(plain_edit), "StyleRes": scored(_render(styleres, styleres_edit, "styleres"))}

    def yaw(batch: np.ndarray) -> np.ndarray:
        return Reading.of(reader, batch).attribute("pose")

    generator_turn = float(np.mean(yaw(_uint8(plain_edit)) - yaw(_uint8(plain))))
    true_turn = float(np.mean(yaw(edited_images) - yaw(images)))
    unflowed = {name: value for name, value in edited.items() if name != "flow"}
    for name, flow in (("WarpRes", head_flow), ("WarpRes without its flow", torch.zeros_like(head_flow)),
                       ("WarpRes with the true motion as its flow", oracle),
                       ("the same, scaled to the generator's turn", oracle * generator_turn / true_turn)):
        edits[name] = scored(_render(warpres, unflowed | {"flow": flow}, "warpres"))

    plan = EditPlan.sample(EditConfig(probability=1.0), len(faces), warpres.generator.config.z_dim,
                           torch.Generator().manual_seed(0))
    interpolated = _render(warpres, {"wplus_edit": wplus + plan.step(wplus, warpres.generator.mapping)}, "inversion")
    interpolation_turns = np.abs(yaw(_uint8(interpolated)) - yaw(_uint8(plain)))
    return PoseDiagnosis(flows, edits, generator_turn, true_turn, interpolation_turns)


def report(diagnosis: PoseDiagnosis, strength: float) -> str:
    lines = [f"pose={strength:g}: the face moves {next(iter(diagnosis.flows.values())).motion:.1f} px on average",
             "| flow | gain | endpoint error (px) | where nothing moves (px) |", "|---|---|---|---|"]
    lines += [f"| {name} | {a.gain:.2f} | {a.error:.2f} | {a.still:.2f} |" for name, a in diagnosis.flows.items()]
    lines += ["", "| edit | detail PSNR | PSNR |", "|---|---|---|"]
    lines += [f"| {name} | {score.detail:.2f} | {score.whole:.2f} |" for name, score in diagnosis.edits.items()]
    turns = diagnosis.interpolation_turns
    lines += ["", f"yaw turned (reader): the generator's edit {diagnosis.generator_turn:+.2f}, the ground truth "
              f"{diagnosis.true_turn:+.2f}; the trainer's random interpolations {turns.mean():.2f} on average, "
              f"{np.mean(turns >= abs(diagnosis.generator_turn)):.0%} as far as the generator's edit"]
    return "\n".join(lines)


@click.command()
@click.option("--images", type=click.IntRange(1), default=32, show_default=True, help="Held-out faces.")
@click.option("--strength", type=float, default=0.8, show_default=True, help="Strength of the pose edit.")
@click.option("--warpres", "checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="A WarpRes checkpoint on the bundle's E0 and G (default: the bundle's WarpRes).")
def main(images: int, strength: float, checkpoint: Path | None) -> None:
    """Score a pose edit's flows against the renderer's motion of the face, and its edits against the truth."""
    models = read_bundle(BUNDLE)
    if checkpoint is not None:
        models["warpres"] = load_model(checkpoint).eval()
    faces = held_out_faces(images, HELD_OUT_SEED)
    diagnosis = diagnose(models, read_regressor(BUNDLE), DirectionLibrary.load(DIRECTIONS), faces, strength)
    click.echo(report(diagnosis, strength))


if __name__ == "__main__":
    main()
