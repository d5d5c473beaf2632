"""Building the shipped demo models, stage by stage, each resumable:

    python -m warpres.demo.build regressor --work WORK    # domain attribute regressor (perceptual features)
    python -m warpres.demo.build reader --work WORK       # the regressor refitted to read edits (evaluate)
    python -m warpres.demo.build autoencoder --work WORK  # e4e E0 + StyleGAN2 synthesis, fitted jointly
    python -m warpres.demo.build mapping --work WORK      # E0's codes of renders, M(z) fitted onto them
                                                          #   -> codes.safetensors, inversion.safetensors
    python -m warpres.demo.build directions --work WORK   # InterfaceGAN-style edits -> directions/
    python -m warpres.demo.build renders --work WORK      # PNG folders for the branch trainer
    python -m warpres.demo.build flow-teacher --work WORK # RAFT on the generator's edits, true motion
                                                          #   as its target (WarpRes's flow teacher)
    python -m warpres.demo.build styleres --work WORK     # `warpres train` of each family on them,
    python -m warpres.demo.build warpres --work WORK      #   in two phases (see branch_config)
    python -m warpres.demo.build bundle --work WORK       # -> warpres/demo/assets (what the package ships)

Every stage writes its fitting checkpoint and log into WORK and, when complete, its result
(`regressor.safetensors`, `inversion.safetensors`, ...). Rerunning a stage continues where it stopped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import click
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, default_collate
from tqdm import tqdm

from warpres.checkpoints import load_model, save_model
from warpres.checkpoints.safe_load import strip_prefix
from warpres.demo.bundle import ASSETS, BUNDLE, write_bundle
from warpres.demo.codes import Codes, encode_renders
from warpres.demo.data import PoseCurriculum, RenderedFaces
from warpres.demo.directions import fit_directions, readability
from warpres.demo.encoder import DEMO_ENCODER, AutoencoderObjective, AutoencoderPair, new_encoder
from warpres.demo.evaluation import HELD_OUT_SEED
from warpres.demo.fitting import FitConfig, fit, load_fitted
from warpres.demo.flow_teacher import GeneratorPairs, MotionPairs, TeacherObjective
from warpres.demo.generator import RESOLUTION, fit_mapping, new_generator
from warpres.demo.prior import params_from_latent, sample_latent
from warpres.demo.regressor import AttributeRegressor, explained_variance, load_regressor
from warpres.training.domain import load_domain_features
from warpres.demo.renderer import render
from warpres.demo.showcase import DIRECTIONS
from warpres.demo.showcase import SAMPLES as SAMPLES_FOLDER
from warpres.edits import DirectionLibrary
from warpres.errors import TrainingError
from warpres.export.fingerprint import encoder_fingerprint
from warpres.files import atomic_path
from warpres.models.editor import EditingModel
from warpres.media.imageio import write_image
from warpres.training.config import TrainConfig, config_from_mapping
from warpres.training.losses import PerceptualLoss
from warpres.training.raft import RAFT
from warpres.training.trainer import CHECKPOINT_NAME, Trainer

# data streams: disjoint seeds per stage, and a held-out stream for evaluation
# (warpres evaluate scores the first images of the HELD_OUT_SEED stream; the trainer monitors others)
REGRESSOR_SEED, AUTOENCODER_SEED, CODES_SEED, BRANCH_SEED, MONITOR_SEED, READER_SEED = 1, 2, 3, 4, 5, 7
FLOW_TEACHER_SEED, FLOW_CHECK_SEED = 8, 9


@dataclass(frozen=True)
class Plan:
    # ran as an 800-step plan first (smile MAE 0.48, i.e. unread), then continued by a warm restart
    regressor: FitConfig = FitConfig(steps=3000, batch_size=16, lr=1e-3)
    # The L1 fit settled on the median of the small attributes (loss flat at 0.121 from step
    # ~2,000): on 160 held-out renders its readings explain 4% of the variance of smile, 11% of
    # eye value (yaw 97%, glasses 100%). Squared error from there: smile 33% after 100 steps and
    # 65% after 200 (eye value 51%, yaw kept at 97%), at 3e-4. After these 1,000 steps, on the
    # stage's own check: smile 0.05 -> 0.95, eye value 0.07 -> 0.90, yaw 0.97 -> 0.98.
    reader: FitConfig = FitConfig(steps=1000, batch_size=16, lr=3e-4)
    # Run 5 (E0 and G at one rate, 3e-4) plateaued at L1 0.136 by step 8,000, faces without eyes
    # or mouths, and W+ optimised per image through its synthesis drew none either: G was the
    # bottleneck. Memorising 64 renders (GLO, 300 steps) the synthesis reached L1 0.186 at 3e-4,
    # 0.143 at 2e-3 and 0.137 at 5e-3 (Adam betas 0.9, 0.99): its equalized-lr weights, stored at
    # unit scale, move ~1e-4 of their size per step at 3e-4. So G trains at 2e-3 from run 6 on,
    # which began (`--init`) from run 5's step 8,000. Run 6 still drew a blurred band for the eyes
    # and no mouth at step 2,700 (held-out L1 0.135, falling ~0.005 per 1,000 steps); run 7 added
    # a StyleGAN2 critic (adversarial weight 0.1, R1, commit 5a1a385), from run 6's step 2,500: by
    # step 500 it had added speckle, not eyes (L1 0.14 -> 0.19), and was dropped. Run 8 (from the
    # same checkpoint, no critic) reconstructs each render without its details
    # (`renderer.without_details`): what W cannot hold no longer dominates L1.
    # Run 8's faces were as blurred at step 500. Memorising 16 plain renders (free W+ per image)
    # showed why: at G lr 2e-3 the synthesis drew blobs after 800 steps (L1 0.053) and learnt the
    # 32-px band 3x slower than a plain conv decoder; at 2e-2 (codes 0.1) eyes, mouths and glasses
    # appeared by step 1,000 (L1 0.034). Equalized-lr weights are stored at unit scale, so Adam's
    # step is ~20x smaller relative to them than to a conventionally initialised layer's: StyleGAN2's
    # 2e-3 suits a GAN game, not a regression. Run 9: G at 2e-2, E0's equalized style heads at
    # 1e-2, the rest of E0 (and the probe) at 1e-3, from run 6's step 2,500. At step 1,000 it still
    # drew a blurred band for the eyes (held-out L1 0.128). Head pose was the cause: on frontal
    # renders a fresh E0 + G (L1 and component terms) drew eyes, mouths and glasses by step 800
    # (held-out component error 0.107), on posed ones a blurred band (0.278); from run 9's step
    # 1,000 frontal renders gave eyes within 400 steps (0.097). Run 10 starts there with frontal
    # faces and widens the pose to the prior's over the next 2,000 steps (`data.PoseCurriculum`);
    # lengthened from 4,000 to 5,000 steps at step 2,500, for more steps at the prior's pose.
    autoencoder: FitConfig = FitConfig(
        steps=5000, batch_size=16, lr=1e-3, pose_curriculum=(1000, 2000),
        group_lrs=(("generator.", 2e-2), *((f"encoder.styles.{i}.linear.", 1e-2) for i in range(DEMO_ENCODER.num_ws))))
    # in-process data: a loader worker competing for the 2 cores made steps 1.6x slower
    flow_teacher: FitConfig = FitConfig(steps=1500, batch_size=8, lr=4e-4, workers=0, log_every=25,
                                        checkpoint_every=100)


def _result(work: Path, name: str) -> Path:
    return work / f"{name}.safetensors"


def _save_result(work: Path, name: str, module: torch.nn.Module) -> Path:
    path = _result(work, name)
    with atomic_path(path) as tmp:
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, str(tmp))
    return path


_MADE_BY = {"codes": "mapping", "inversion": "mapping", "autoencoder.fit": "autoencoder"}


def _require(work: Path, name: str) -> Path:
    path = _result(work, name)
    if not path.exists():
        raise TrainingError(f"{path} is missing: build the {_MADE_BY.get(name, name)} stage first")
    return path


def build_regressor(work: Path, config: FitConfig, progress: bool = True) -> Path:
    torch.manual_seed(REGRESSOR_SEED)
    regressor = AttributeRegressor()

    def objective(batch):
        images, _, targets = batch
        error = (regressor(images).float() - targets).abs().mean()
        return {"loss": error}

    fit("regressor", regressor, objective, RenderedFaces(REGRESSOR_SEED), work, config, progress=progress)
    return _save_result(work, "regressor", load_fitted(work / "regressor.fit.safetensors", AttributeRegressor()))


READER_CHECK = 160


def build_reader(work: Path, config: FitConfig, progress: bool = True) -> Path:
    """The attribute reader `warpres evaluate` measures edits with (WORK/reader.safetensors): the
    regressor refitted with a squared error, which L1's median cannot satisfy on attributes the
    image shows in a few pixels (smile). The branch runs keep the regressor's features as their
    perceptual network; evaluation reads with the reader's. Prints the reader's R^2 per attribute
    on READER_CHECK renders of the held-out stream."""
    reader = AttributeRegressor()
    if not (work / "reader.fit.safetensors").exists():
        reader.load_state_dict(load_regressor(_require(work, "regressor")).state_dict())

    def objective(batch):
        images, _, targets = batch
        return {"loss": (reader(images).float() - targets).square().mean()}

    fit("reader", reader, objective, RenderedFaces(READER_SEED), work, config, progress=progress)
    fitted = load_fitted(work / "reader.fit.safetensors", AttributeRegressor())
    images, _, targets = next(iter(DataLoader(RenderedFaces(HELD_OUT_SEED, count=READER_CHECK),
                                              batch_size=READER_CHECK)))
    click.echo("reader: held-out R^2 " + ", ".join(
        f"{name} {score:.2f}" for name, score in explained_variance(fitted, images, targets).items()))
    return _save_result(work, "reader", fitted)


def build_autoencoder(work: Path, config: FitConfig, progress: bool = True, init: Path | None = None) -> Path:
    """E0 and the generator's synthesis, fitted jointly (WORK/autoencoder.fit.safetensors); a new
    fit may start from the E0 and G of an earlier one (`init`, a fitting checkpoint)."""
    pair = AutoencoderPair(new_encoder(), new_generator())
    checkpoint = work / "autoencoder.fit.safetensors"
    if init is not None and not checkpoint.exists():
        _start_from(pair, init)
    perceptual = PerceptualLoss(load_domain_features(_require(work, "regressor")))
    curriculum = None
    if config.pose_curriculum is not None:
        curriculum = PoseCurriculum(*(steps * config.batch_size for steps in config.pose_curriculum))
    data = RenderedFaces(AUTOENCODER_SEED, autoencoder=True, pose_curriculum=curriculum)
    fit("autoencoder", pair, AutoencoderObjective(pair, perceptual), data, work, config, progress=progress,
        helpers=[perceptual])
    return checkpoint


def _start_from(pair: AutoencoderPair, init: Path) -> None:
    """E0 and G from an earlier autoencoder fit; what it lacks (the probe) and the optimizer start
    fresh. (The first run's collapsed codes were once scaled up here; the objective's spread
    hinge keeps them spread now.)"""
    state = strip_prefix(load_file(str(init)), "module.")
    missing, unexpected = pair.load_state_dict(state, strict=False)
    foreign = unexpected + [key for key in missing if not key.startswith("probe.")]
    if foreign:
        raise TrainingError(f"{init}: not an autoencoder fit of the demo's E0 and G (keys {foreign[:4]})")


CODES = 20000


def build_mapping(work: Path, config: FitConfig | None = None, progress: bool = True) -> Path:
    """E0's codes of CODES labelled renders (WORK/codes.safetensors), the mapping network fitted
    onto them, and the result: WORK/inversion.safetensors (E0 + G)."""
    fitted = _require(work, "autoencoder.fit")
    pair: AutoencoderPair = load_fitted(fitted, AutoencoderPair(new_encoder(), new_generator()))
    codes_path = work / "codes.safetensors"
    if not codes_path.exists() or Codes.load(codes_path).encoder != encoder_fingerprint(pair.encoder):
        encode_renders(pair.encoder, CODES_SEED, CODES, progress=progress).save(codes_path)
    codes = Codes.load(codes_path)
    error = fit_mapping(pair.generator, torch.from_numpy(codes.z), torch.from_numpy(codes.w), progress=progress)
    spread = float(codes.w.var(axis=0).mean())
    click.echo(f"mapping: mean squared error {error:.4f} (variance of the codes {spread:.4f})")
    path = _result(work, "inversion")
    save_model(EditingModel(pair.generator.eval(), pair.encoder.eval()), path)
    return path


def build_directions(work: Path, config: FitConfig | None = None, progress: bool = True) -> Path:
    folder = work / "directions"
    codes = Codes.load(_require(work, "codes"))
    click.echo("held-out R^2 of each attribute's linear reading in W+: " + ", ".join(
        f"{name} {score:.2f}" for name, score in readability(codes).items()))
    fit_directions(codes).save(folder)
    return folder


TRAIN_RENDERS, EVAL_RENDERS = 10000, 500


def build_renders(work: Path, config: FitConfig | None = None, progress: bool = True) -> Path:
    """WORK/renders/train (the branches' training images) and WORK/renders/eval (the trainer's
    monitoring set), each with the renderer parameters of its images in params.json. Both
    streams are disjoint from what E0 was fitted on and from what `warpres evaluate` scores."""
    folder = work / "renders"
    for split, seed, count in (("train", BRANCH_SEED, TRAIN_RENDERS), ("eval", MONITOR_SEED, EVAL_RENDERS)):
        target = folder / split
        if (target / "params.json").exists():
            continue
        vectors = {}
        for k in tqdm(range(count), desc=f"renders/{split}", disable=not progress):
            params = params_from_latent(*sample_latent(np.random.default_rng([seed, k])))
            name = f"{k:05d}.png"
            write_image(target / name, render(params, RESOLUTION))
            vectors[name] = params.to_vector().tolist()
        with atomic_path(target / "params.json") as tmp:
            tmp.write_text(json.dumps(vectors))
    return folder


FLOW_CHECK = 64


def build_flow_teacher(work: Path, config: FitConfig, progress: bool = True) -> Path:
    """WORK/flow-teacher.safetensors: RAFT-small fitted from scratch on the generator's edits of E0's
    codes with the renderer's true motion as target (`warpres.demo.flow_teacher`). Prints its mean
    endpoint error on FLOW_CHECK pairs of another stream, against zero flow's.

    Measured (2-core Zen 4; 1.0 s a step in-process, 1.6x that with a loader worker; the run was
    interrupted at step 625 and resumed): endpoint error on its stream 0.82 px for zero flow, 0.61
    at step 625 (where on held-out pose=0.8 edits it still moved nothing, gain 0.00), 0.41 after
    the rate drop at step 1,200 and 0.407 at 1,500 on FLOW_CHECK held-out pairs. Scored like
    `python -m warpres.demo.motion` (32 held-out faces, pose=0.8 on the generator's images, the face
    moving 15.7 px): gain 0.66, endpoint error 6.1 px, 0.06 px where nothing moves; DIS at 128 px,
    the first phase's teacher, 0.35 / 10.3 px / 1.59 px, and at 512 px with the still prior, the
    second phase's, 0.34 / 10.6 px / 0.36 px."""
    inversion = load_model(_require(work, "inversion"))
    pairs = GeneratorPairs(inversion, DirectionLibrary.load(work / "directions"))
    network = RAFT.small()
    fit("flow-teacher", network, TeacherObjective(network, pairs), MotionPairs(FLOW_TEACHER_SEED), work, config,
        progress=progress, helpers=[inversion])
    fitted = load_fitted(work / "flow-teacher.fit.safetensors", RAFT.small())
    check = MotionPairs(FLOW_CHECK_SEED)
    images, edits, strengths, flows = default_collate([check[k] for k in range(FLOW_CHECK)])
    with torch.no_grad():
        source, target = pairs(images, edits, strengths)
        estimate = fitted(target, source)
    click.echo(f"flow-teacher: endpoint error {(estimate - flows).norm(dim=1).mean():.3f} px on {FLOW_CHECK} "
               f"held-out pairs (zero flow: {flows.norm(dim=1).mean():.3f} px)")
    return _save_result(work, "flow-teacher", fitted)


BRANCH_WIDTHS = {"styleres": {"align_channels": 64, "extract_channels": 64, "gate_channels": 32},
                 "warpres": {"width": 64, "adapter_channels": 32}}
# Each family trains in two phases: BRANCH_STEPS of the paper's recipe (interpolations towards
# random latents), then DIRECTED_STEPS from its result with directed edits (see branch_config).
BRANCH_STEPS, DIRECTED_STEPS = 6000, 1000
DIRECTED_EDITS = ("pose", "pitch", "smile")
STILL_THRESHOLD = 0.08  # the directed teacher's still prior (OpenCVFlowTeacher), in [-1, 1] units


def branch_config(work: Path, family: str, directed: bool = False) -> TrainConfig:
    """The `warpres train` run of one family on the demo renders, phase one or (`directed`) two.

    Phase one: the domain network's features are ~1000x smaller than VGG's, hence the perceptual
    weights above the VGG recipe's; a CPU affords BRANCH_STEPS steps instead of the recipe's
    20,000+, hence the higher learning rate, halved at half and five sixths of the run. The
    recipe's feature regulariser (5) switches the branch off on this generator's features: 300
    StyleRes steps on 48 held-out renders (E0 alone 20.95 dB) gave 20.95 dB at 5, 21.18 at 0.5,
    22.78 at 0.1 and 23.24 at 0.02 (WarpRes: 23.11 at 0.1, 23.21 at 0.02); 0.1 keeps it binding
    at little cost in reconstruction.

    Phase two exists because phase one's WarpRes damped pose edits (`warpres evaluate`, 500
    held-out faces: yaw read +0.28 where E0 alone reads +0.40). Measured on 32 of them at pose
    +0.8, against the renderer's own motion of the face (15.7 px mean): the flow head moved
    content by 0.28 of it; its teacher, DIS on the generator's 128 px images, by 0.35 (0.40 on
    the true renders: DIS's pyramid at 128 px is too shallow for a 16 px move; at 512 px, 0.61);
    and random interpolations turned heads by a mean 0.18 in yaw (read), 9% of them as far as the
    generator's pose edit (0.46). So phase two edits along the DIRECTED_EDITS directions for half
    of the cycle samples (strength up to 1) and shows the teacher 512 px images, still where the
    pair agrees (DIS moved the background by 1.8 px; with the prior 0.36). Its perceptual network
    is the reader, which reads the mouth the regressor ignores (smile R^2 0.95 vs 0.05).
    After its 1,000 steps the flow head follows 0.44 of the face's motion and moves the
    background by 0.44 px (`python -m warpres.demo.motion`); continued to 2,000 it settled on
    its teacher's 0.35 at the same detail PSNR: on the generator's images the teacher sees no
    more motion than that (at 512 px neither), so longer runs do not help. The branches of the
    bundle were continued from the phase-one weights the package shipped (float16), with the
    reader taken from it: the phase-one work folder was lost."""
    settings = {
        "model": "inversion.safetensors", "output": f"{family}-run", "family": family,
        "branch": BRANCH_WIDTHS[family],
        "data": {"train": "renders/train", "eval": "renders/eval", "eval_images": 100},
        "steps": BRANCH_STEPS, "batch_size": 4, "workers": 1, "amp": "bf16", "channels_last": True,
        "optim": {"lr": 3e-4, "milestones": [BRANCH_STEPS // 2, BRANCH_STEPS * 5 // 6]},
        "perceptual": {"network": "domain", "weights": "regressor.safetensors"},
        "losses": {"perceptual": 1.0, "cycle_perceptual": 0.1, "feature_regularizer": 0.1},
        "teacher": {"size": RESOLUTION},
        "discriminator": {"channel_base": 4096, "channel_max": 128},
        "schedule": {"log_every": 25, "sample_every": 500, "eval_every": 1000, "checkpoint_every": 100},
    }
    if directed:
        settings |= {
            "model": f"{family}.safetensors", "output": f"{family}-directed-run", "branch": {},
            "steps": DIRECTED_STEPS, "optim": {"lr": 1e-4, "milestones": []},
            "perceptual": {"network": "domain", "weights": "reader.safetensors"},
            "edits": {"directions": "directions", "along": list(DIRECTED_EDITS), "directed_share": 0.5},
            "teacher": {"size": 4 * RESOLUTION, "still_threshold": STILL_THRESHOLD},
            "schedule": {**settings["schedule"], "eval_every": 500},
        }
    return config_from_mapping(settings, base=work, source=f"demo {family} run{' (directed)' if directed else ''}")


def same_base(model: EditingModel, other: EditingModel) -> bool:
    """Whether two models have the same E0 and generator (weights and buffers)."""
    pairs = ((model.encoder, other.encoder), (model.generator, other.generator))
    for mine, theirs in pairs:
        a, b = mine.state_dict(), theirs.state_dict()
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            return False
    return True


def build_branch(family: str, work: Path, progress: bool = True) -> Path:
    """Both phases of `warpres train` of one family on E0 + G of WORK/inversion.safetensors, each
    resumed if its run exists; phase one's result is WORK/<family>.safetensors. A run begun on
    another E0 + G (an earlier autoencoder) is refused, not continued."""
    inversion = load_model(_require(work, "inversion"))
    result = _result(work, family)
    for directed in (False, True):
        config = branch_config(work, family, directed)
        run = config.output / CHECKPOINT_NAME
        if not directed and result.exists():
            continue
        if run.exists() and not same_base(load_model(run), inversion):
            raise TrainingError(f"{run} was trained on another E0 and generator than the inversion; remove "
                                f"{config.output} to train the {family} branch on the current ones")
        Trainer(config, resume="auto", progress=progress).run()
        if not directed:
            save_model(load_model(run), result)
    return run


SAMPLE_SEED, SAMPLES = 6, 4


def build_bundle(work: Path, config: FitConfig | None = None, progress: bool = True, assets: Path = ASSETS) -> Path:
    """The shipped assets (into `assets`, default the package's): the bundle (E0, G, both
    branches, the reader), the edit directions and SAMPLES sample renders of their own stream
    with their parameters (samples.json)."""
    inversion = load_model(_require(work, "inversion"))
    branches = {}
    for family in BRANCH_WIDTHS:
        checkpoint = branch_config(work, family, directed=True).output / CHECKPOINT_NAME
        if not checkpoint.exists():
            raise TrainingError(f"{checkpoint} is missing: build the {family} stage first")
        branches[family] = load_model(checkpoint).branch
    assets.mkdir(parents=True, exist_ok=True)
    write_bundle(assets / BUNDLE.name, inversion.generator, inversion.encoder, branches,
                 load_regressor(_require(work, "reader")))
    directions = work / "directions"
    if not directions.is_dir():
        raise TrainingError(f"{directions} is missing: build the directions stage first")
    DirectionLibrary.load(directions).save(assets / DIRECTIONS.name)
    vectors = {}
    for k in range(SAMPLES):
        params = params_from_latent(*sample_latent(np.random.default_rng([SAMPLE_SEED, k])))
        name = f"sample-{k}.png"
        write_image(assets / SAMPLES_FOLDER.name / name, render(params, RESOLUTION))
        vectors[name] = params.to_vector().tolist()
    with atomic_path(assets / SAMPLES_FOLDER.name / "samples.json") as tmp:
        tmp.write_text(json.dumps(vectors, indent=1))
    return assets


STAGES = {"regressor": build_regressor, "reader": build_reader, "autoencoder": build_autoencoder,
          "mapping": build_mapping, "directions": build_directions, "renders": build_renders,
          "flow-teacher": build_flow_teacher, "bundle": build_bundle}


@click.command()
@click.argument("stage", type=click.Choice([*STAGES, *BRANCH_WIDTHS]))
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for checkpoints, logs and results (kept between runs).")
@click.option("--steps", type=click.IntRange(1), help="Override the stage's number of steps.")
@click.option("--assets", type=click.Path(file_okay=False, path_type=Path), default=ASSETS, show_default=True,
              help="Where the bundle stage writes (a candidate folder, or the package's assets).")
@click.option("--init", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="autoencoder: start a new fit from the E0 and G of this earlier fitting checkpoint.")
def main(stage: str, work: Path, steps: int | None, assets: Path, init: Path | None) -> None:
    """Build (or continue building) one STAGE of the demo models."""
    if init is not None and stage != "autoencoder":
        raise click.UsageError("--init applies to the autoencoder stage only")
    if stage == "autoencoder":
        click.echo(f"autoencoder: {build_autoencoder(work, _config(stage, steps), init=init)}")
        return
    if stage == "bundle":
        click.echo(f"bundle: {build_bundle(work, assets=assets)}")
        return
    if stage in BRANCH_WIDTHS:
        if steps is not None:
            raise click.UsageError("the branch stages run the steps of their phases (BRANCH_STEPS, DIRECTED_STEPS)")
        click.echo(f"{stage}: {build_branch(stage, work)}")
        return
    click.echo(f"{stage}: {STAGES[stage](work, _config(stage, steps))}")


def _config(stage: str, steps: int | None) -> FitConfig | None:
    config = getattr(Plan(), stage.replace("-", "_"), None)
    if steps is not None and config is not None:
        config = replace(config, steps=steps)
    return config


if __name__ == "__main__":
    main()
