"""The `warpres` command: demo, evaluate, edit, video, train, export, build, doctor, info, bench.

User mistakes (a missing file, an unknown edit, a tampered model) print one line and exit 1;
a batch that skipped bad inputs finishes the rest and exits 1 with a summary.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click
import numpy as np

from warpres.app.outputs import OutputCollisionError, plan_outputs, refuse_colliding_outputs
from warpres import __version__
from warpres.errors import WarpresError
from warpres.media import quiet_opencv
from warpres.precision import ALIASES, BACKEND_PRECISIONS, PRECISIONS, precision_help
from warpres.runtime.backends import BACKEND_NAMES

log = logging.getLogger("warpres")

def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


class _BackendCommand(click.Command):
    """Notes the --backend given before --help, so that --help lists what that backend accepts
    (click processes --help before the other options: it has to be read from the raw arguments)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        for index, arg in enumerate(args):
            if arg == "--backend" and index + 1 < len(args):
                ctx.meta["warpres.backend"] = args[index + 1]
            elif arg.startswith("--backend="):
                ctx.meta["warpres.backend"] = arg.partition("=")[2]
        return super().parse_args(ctx, args)


class _Group(click.Group):
    """Turns WarpresError (and file-system errors) into one line on stderr and exit status 1."""

    command_class = _BackendCommand

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (WarpresError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C in any command: one line, the shell's status for SIGINT
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, "--version", prog_name="warpres")
def main(verbose: int) -> None:
    """Real-image editing with StyleGAN2 (WarpRes, StyleRes) on TensorRT, OpenVINO, ONNX Runtime or PyTorch."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    quiet_opencv()
    log.setLevel(max(logging.DEBUG, logging.WARNING - 10 * verbose))


# -- shared options ---------------------------------------------------------------------------

class _PrecisionChoice(click.Choice):
    """A precision of the vocabulary (warpres.precision); the aliases (f32) are accepted, not listed."""

    def convert(self, value, param, ctx):
        return super().convert(ALIASES.get(value, value), param, ctx)


class _PrecisionOption(click.Option):
    """--precision: after --backend NAME, --help lists only the precisions NAME runs."""

    def get_help_record(self, ctx: click.Context):
        backend = ctx.meta.get("warpres.backend")
        if backend not in BACKEND_PRECISIONS:
            return super().get_help_record(ctx)
        general = self.type, self.help
        self.type = _PrecisionChoice(BACKEND_PRECISIONS[backend])
        self.help = precision_help(backend)
        try:
            return super().get_help_record(ctx)
        finally:
            self.type, self.help = general


backend_option = click.option(
    "--backend", type=click.Choice(BACKEND_NAMES), default="auto",
    help="What runs the graphs; auto: TensorRT on a GPU, ONNX Runtime CUDA, OpenVINO, ONNX Runtime CPU.")
precision_option = click.option("--precision", cls=_PrecisionOption, type=_PrecisionChoice(PRECISIONS), default=None,
                                show_default=False, help=precision_help())
directions_option = click.option(
    "--directions", type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of edit directions (InterfaceGAN .pt, GANSpace *_pca.pt + csv, .npy, a saved library).")


class _ModelParam(click.ParamType):
    """A built-in model name (demo, demo:warpres, demo:styleres, demo:e0) or an existing path."""

    name = "MODEL"

    def convert(self, value, param, ctx):
        from warpres.app.models import DEMO_MODELS, is_builtin

        if isinstance(value, Path) or not is_builtin(str(value)):
            path = Path(value)
            if not path.exists():
                self.fail(f"{value}: no such file or folder (built-in models: {', '.join(DEMO_MODELS)})", param, ctx)
            return path
        return str(value)


MODEL = _ModelParam()
MODEL_HELP = "Checkpoint (any supported format), exported model folder, or a built-in model (warpres models)."


def _model_options(command):
    """--model and what opens a Session on it: the options edit and video share."""
    for option in (
            click.option("--allow-embedded-plugins", is_flag=True,
                         help="tensorrt: load engines that embed plugin libraries (native code; only engines "
                              "you built)."),
            click.option("--max-batch", type=click.IntRange(1), default=8, help="Images per backend call."),
            precision_option, backend_option, directions_option,
            click.option("--model", "-m", "model", required=True, type=MODEL, help=MODEL_HELP)):
        command = option(command)
    return command


def _open_session(model: Path | str, backend: str, precision: str | None, directions: Path | None, max_batch: int,
                  allow_embedded_plugins: bool):
    """(Session, ModelChoice) for a --model."""
    from warpres.app.models import resolve_model
    from warpres.app.sessions import open_session

    choice = resolve_model(model, backend, directions)
    session = open_session(choice.path, backend, precision=precision, directions=choice.directions,
                           max_batch=max_batch,
                           backend_options={"allow_embedded_plugins": True} if allow_embedded_plugins else None)
    reason = session.backend_reason  # why this backend: for -v, not for every run's stderr
    log.info(reason if session.backend.name in reason else f"backend: {session.backend.name} ({reason})")
    return session, choice


def _aligner(session, choice, align_faces: bool, video: bool = False):
    """The face aligner for a --model (its framing); video looks faster (`FAST`) and tracks."""
    from warpres.media.detection import FAST, PRECISE
    from warpres.media.faces import FaceAligner

    if not align_faces:
        return None
    return FaceAligner(session.info.image_size, choice.framing, settings=FAST if video else PRECISE)


fit_option = click.option("--fit", type=click.Choice(["crop", "pad"]), default=None, show_default=False,
                          help="Without --align-faces: edit the centred square of a non-square image (crop, the "
                               "default) or the whole image padded to a square (pad); the result keeps the input's "
                               "size.")


def _check_face_options(align_faces: bool, largest_face: bool, fit: str | None) -> str:
    """The --fit to use; --largest-face and --fit apply to one mode each."""
    if largest_face and not align_faces:
        raise click.UsageError("--largest-face only applies with --align-faces")
    if fit is not None and align_faces:
        raise click.UsageError("--fit applies without --align-faces (faces are cut by their alignment)")
    return fit or "crop"
largest_face_option = click.option("--largest-face", is_flag=True,
                                   help="With --align-faces: edit only the largest face (default: every face).")


# -- edit -------------------------------------------------------------------------------------

def _parse_sweep(text: str) -> np.ndarray:
    try:
        start, stop, count = text.split(":")
        strengths = np.linspace(float(start), float(stop), int(count))
    except ValueError:
        raise click.BadParameter(f"expected START:STOP:COUNT, e.g. -3:3:7, got {text!r}") from None
    if len(strengths) < 2:
        raise click.BadParameter("a sweep needs at least 2 strengths")
    return strengths


def _still_options(command):
    """What edit and batch write of each photo: the edits, a sweep, faces or squares, crops."""
    for option in (
            click.option("--crop-only", is_flag=True,
                         help="Write the model-size crop (or face) only, not the composed image."),
            fit_option, largest_face_option,
            click.option("--align-faces", is_flag=True, help="Find the faces (5 landmarks), align each as the model "
                                                             "expects (FFHQ), paste the edits back."),
            click.option("--strength-sweep", "sweep", metavar="START:STOP:COUNT",
                         help="Write a strip of strengths per --edit (its names, strengths replaced)."),
            click.option("--edit", "-e", "edits", multiple=True,
                         help="Edit spec, e.g. smile=2 or 'age=3,smile=-1'; repeat for more outputs. None: "
                              "reconstruction.")):
        command = option(command)
    return command


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@_model_options
@_still_options
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the output PNGs (created if missing).")
def edit(images, model, directions, backend, precision, max_batch, allow_embedded_plugins, edits, sweep,
         align_faces, largest_face, fit, crop_only, out_dir) -> None:
    """Edit IMAGES (files or folders) and write one PNG per image and --edit into OUTPUT, at each
    image's own size."""
    if sweep is not None and not edits:
        raise click.UsageError("--strength-sweep sweeps the names of an --edit: give --edit too")
    fit = _check_face_options(align_faces, largest_face, fit)
    from tqdm import tqdm

    from warpres.media.imageio import list_images

    outputs = plan_outputs(edits, _parse_sweep(sweep) if sweep is not None else None)
    listing = list_images(images)
    try:
        refuse_colliding_outputs(listing.paths, outputs)
    except OutputCollisionError as exc:
        raise click.UsageError(str(exc)) from None
    for warning in listing.skipped:
        _warn(warning)
    session, choice = _open_session(model, backend, precision, directions, max_batch, allow_embedded_plugins)
    for output in outputs:  # unknown edit names fail before any work
        session.check_edits(output.edit_sets)
    from warpres.app.stills import edit_image_files

    aligner = _aligner(session, choice, align_faces)
    with tqdm(total=len(listing.paths), unit="img", desc="editing", disable=None) as bar:
        result = edit_image_files(session, listing.paths, outputs, out_dir, aligner=aligner, largest_face=largest_face,
                                  fit=fit, crop_only=crop_only, batch_size=max_batch, warn=_warn,
                                  progress=bar.update)
    faces = f" ({result.faces} faces)" if aligner is not None else ""
    click.echo(f"wrote {result.written} images{faces} to {out_dir}", err=True)
    failed = result.failed + len(listing.skipped)
    if failed:
        raise click.ClickException(f"{failed} input(s) skipped (see warnings above)")


# -- batch ------------------------------------------------------------------------------------

@main.command()
@click.argument("inputs")
@_model_options
@_still_options
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the outputs (the inputs' folders mirrored) and results.parquet / results.csv.")
@click.option("--ray", "ray_address", default="auto", show_default=True, metavar="auto|local|off|ADDRESS",
              help="auto: the Ray cluster this machine belongs to, else a local Ray with 4+ CPUs, else this process; "
                   "local: a Ray on this machine; off: this process alone; else a cluster address (ray://host:10001 "
                   "or host:6379).")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Edit actors (each loads the model once).")
@click.option("--cpus-per-worker", type=click.FloatRange(0, min_open=True), default=1.0, show_default=True,
              help="CPUs Ray reserves per actor (CPU actors also run that many threads).")
@click.option("--gpus-per-worker", type=click.FloatRange(0), default=0.0, show_default=True,
              help="GPUs per actor (e.g. 1 with --backend tensorrt).")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Inputs per edit call (default: --max-batch).")
@click.option("--path-column", default="path", show_default=True, help="The path column of a Parquet / CSV INPUTS.")
def batch(inputs, model, directions, backend, precision, max_batch, allow_embedded_plugins, edits, sweep, align_faces,
          largest_face, fit, crop_only, out_dir, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size,
          path_column) -> None:
    """Edit every photo of INPUTS (a folder, searched recursively; a glob; a .txt list of paths; or
    a Parquet / CSV table with a path column; local paths or URIs pyarrow opens) into OUTPUT,
    with a results table. A rerun skips what a previous run finished (its files verified)."""
    if sweep is not None and not edits:
        raise click.UsageError("--strength-sweep sweeps the names of an --edit: give --edit too")
    fit = _check_face_options(align_faces, largest_face, fit)
    import importlib.util

    from tqdm import tqdm

    from warpres.app.batch.distributed import SessionSpec, worker_spec
    from warpres.app.batch.inputs import list_inputs
    from warpres.app.batch.job import run_batch
    from warpres.app.batch.pipeline import Cutting, Plan

    if ray_address == "auto" and importlib.util.find_spec("ray") is None:
        _warn("Ray is not installed (pip install 'warpres[batch]'): editing in this process")
        ray_address = "off"
    outputs = plan_outputs(edits, _parse_sweep(sweep) if sweep is not None else None)
    listing = list_inputs(inputs, column=path_column, exclude=out_dir)
    session, choice = _open_session(model, backend, precision, directions, max_batch, allow_embedded_plugins)
    for output in outputs:  # unknown edit names fail before any work
        session.check_edits(output.edit_sets)
    spec = SessionSpec(str(choice.path), choice.directions, backend, precision, max_batch,
                       {"allow_embedded_plugins": True} if allow_embedded_plugins else None)
    if ray_address != "off":
        spec = worker_spec(session, spec.path, choice.directions, backend, precision, max_batch,
                           cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                           allow_embedded_plugins=allow_embedded_plugins)
    cutting = Cutting(session.info.image_size, choice.framing if align_faces else None, largest_face, fit)
    with tqdm(total=len(listing.sources), unit="img", desc="batch", disable=None) as bar:
        summary = run_batch(listing, Plan(tuple(outputs), out_dir, crop_only), cutting, spec, ray=ray_address,
                            workers=workers, cpus_per_worker=cpus_per_worker, gpus_per_worker=gpus_per_worker,
                            batch_size=batch_size or max_batch, session=session,
                            progress=lambda done: bar.update(done - bar.n))
    click.echo(summary.describe(), err=True)
    if summary.failed:
        raise click.ClickException(f"{summary.failed} input(s) failed: their rows in {summary.tables[1]} say why")


# -- video ------------------------------------------------------------------------------------

@main.command()
@_model_options
@click.option("--camera", type=int, help="Camera index to edit live (e.g. 0).")
@click.option("--input", "input_path", type=click.Path(path_type=Path), help="Video file to edit.")
@click.option("--edit", "-e", "edits", multiple=True, help="Edit spec(s), applied in order, e.g. pose=3.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Video file to write (.mp4 / .mov / .mkv: H.264, .avi: MPEG-4; with the input's audio).")
@click.option("--show", is_flag=True, help="Show the result in a window with FPS and latency (q or Esc quits).")
@click.option("--smoothing", type=click.FloatRange(0, 1, min_open=True), default=0.5,
              help="W+ smoothing across frames (per face): new = a * current + (1 - a) * previous; 1 turns it off.")
@click.option("--align-faces", is_flag=True, help="Edit the faces (5 landmarks, tracked and smoothed) and paste them "
                                                  "back; frames without a face pass through.")
@largest_face_option
@fit_option
@click.option("--compare", is_flag=True, help="Write input | edit side by side.")
@click.option("--overlay", is_flag=True, help="Also burn the FPS / latency overlay into the output file.")
def video(model, directions, backend, precision, max_batch, allow_embedded_plugins, camera, input_path, edits,
          output, show, smoothing, align_faces, largest_face, fit, compare, overlay) -> None:
    """Edit a camera stream (--camera) or a video file (--input) frame by frame."""
    from tqdm import tqdm

    from warpres.app.editing import FrameEditor
    from warpres.edits import parse_edit_spec
    from warpres.media.video.pipeline import run_video
    from warpres.media.video.source import open_source
    from warpres.media.video.writer import OUTPUT_CODECS

    if (camera is None) == (input_path is None):
        raise click.UsageError("give exactly one of --camera N and --input FILE")
    if output is None and not show:
        raise click.UsageError("nothing to do: give -o OUTPUT.mp4 and/or --show")
    if output is not None and output.suffix.lower() not in OUTPUT_CODECS:
        raise click.UsageError(f"{output}: video files end in {', '.join(OUTPUT_CODECS)}")
    fit = _check_face_options(align_faces, largest_face, fit)
    session, choice = _open_session(model, backend, precision, directions, max_batch, allow_embedded_plugins)
    requests = tuple(parse_edit_spec(edits))  # parsed once here, not per frame
    session.check_edits([requests])
    aligner = _aligner(session, choice, align_faces, video=True)   # before the source: nothing left open
    source = open_source(camera=camera, path=input_path)
    editor = FrameEditor(session, requests, aligner=aligner, smoothing=smoothing, fps=source.fps,
                         largest_face=largest_face, fit=fit)
    total = source.frame_count if not source.live and source.frame_count else None
    with tqdm(total=total, unit="frame", desc="video", disable=None) as bar:
        def progress(stats) -> None:
            bar.update(stats.frames_edited - bar.n)

        stats = run_video(source, editor, output=output, show=show, overlay=overlay, compare=compare,
                          batch_size=1 if source.live else max_batch, progress=progress)
    counts = editor.counts
    notes = []
    if align_faces:
        notes.append(f"{counts.faces_edited} faces edited, {counts.frames_without_face} frames without a face "
                     f"passed through")
    if counts.scene_cuts:
        notes.append(f"{counts.scene_cuts} scene cuts")
    if stats.frames_skipped:
        notes.append(f"{stats.frames_skipped} corrupt frames skipped")
    click.echo(f"{stats.stop_reason}: {stats.frames_edited} frames edited, {stats.frames_dropped} dropped, "
               f"{stats.fps:.2f} fps, {stats.mean_latency_ms:.0f} ms mean latency"
               + "".join(f"; {note}" for note in notes)
               + (f"; wrote {stats.output} ({stats.codec})" if stats.output else ""), err=True)


# -- app --------------------------------------------------------------------------------------

@main.command()
@click.option("--model", "-m", "models", multiple=True, type=MODEL, default=("demo",), show_default=True,
              help=MODEL_HELP + " Repeat for side-by-side columns; demo shows E0 only, StyleRes and WarpRes.")
@backend_option
@click.option("--host", default="127.0.0.1", help="Interface to listen on (0.0.0.0 exposes it to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=7860)
@click.option("--max-upload-mb", type=click.FloatRange(0.1), default=20.0, help="Largest photo accepted.")
def app(models, backend, host, port, max_upload_mb) -> None:
    """Edit photos in the browser: sliders per edit, the models side by side (Gradio)."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise click.ClickException("warpres app needs Gradio: pip install 'warpres[app]'") from None
    from warpres.app.web import build_interface, launch, open_editor

    page = build_interface(open_editor([str(model) for model in models], backend))
    click.echo(f"warpres app on http://{host}:{port} (Ctrl-C stops it)", err=True)
    launch(page, host, port, max_upload_mb)


# -- bench ------------------------------------------------------------------------------------

def _batch_sizes(text: str, count: int | None = None) -> list[int]:
    """Comma-separated batch sizes >= 1 (exactly `count` of them when given)."""
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1 or count not in (None, len(sizes)):
        shape = "MIN,OPT,MAX" if count == 3 else "comma-separated"
        raise click.BadParameter(f"expected {shape} batch sizes >= 1, e.g. 1,4,16, got {text!r}")
    return sizes


@main.command()
@click.argument("model", type=MODEL)
@backend_option
@precision_option
@click.option("--batch", "batches", default=None, help="Batch sizes to measure [default: 1,4,16; tensorrt: 1,8,32].")
@click.option("--iterations", type=click.IntRange(1), default=3, help="Timed iterations per batch size.")
@click.option("--edit", "edit_spec", default=None, help="Edit to time (default: a fixed random W+ shift).")
@directions_option
@click.option("--reference/--no-reference", default=True,
              help="Also run PyTorch eager FP32 (on the GPU when measuring tensorrt) for speed-ups and PSNR.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The checkpoint an exported MODEL came from, for the PyTorch reference.")
def bench(model: Path, backend: str, precision: str | None, batches: str | None, iterations: int,
          edit_spec: str | None, directions: Path | None, reference: bool, checkpoint: Path | None) -> None:
    """Measure full edits (cold and warm), cached re-edits and per-stage time of MODEL on a backend.

    With --backend tensorrt, also TensorRT without CUDA graphs and ONNX Runtime CUDA on the same GPU;
    stage times are CUDA events there."""
    from warpres.app.bench import bench_report
    from warpres.app.models import resolve_model

    sizes = _batch_sizes(batches or ("1,8,32" if backend == "tensorrt" else "1,4,16"))
    choice = resolve_model(model, backend, directions)
    click.echo(bench_report(choice.path, backend, precision, sizes, iterations=iterations, edit_spec=edit_spec,
                            directions=choice.directions, reference=reference, checkpoint=checkpoint, warn=_warn,
                            status=lambda line: click.echo(line, err=True)))


# -- demo -------------------------------------------------------------------------------------

@main.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("warpres-demo.png"),
              help="The grid PNG to write.")
@backend_option
def demo(output: Path, backend: str) -> None:
    """Edit the shipped sample faces with the shipped models (E0 only, StyleRes, WarpRes) into one grid."""
    try:
        from warpres.demo.showcase import run_demo
    except ImportError as exc:
        raise click.ClickException(f"warpres demo exports the shipped checkpoints on first use, which needs "
                                   f"PyTorch ({exc}); pip install 'warpres[export,cpu]'") from None

    result = run_demo(output, backend)
    click.echo(f"wrote {result.path} in {result.seconds:.1f} s ({result.backends['warpres']})")


@main.command()
@click.option("--images", type=click.IntRange(1), default=500, help="Held-out renders to score.")
@backend_option
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON instead of a markdown table.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write what is printed (the table, or the JSON) here.")
def evaluate(images: int, backend: str, as_json: bool, output: Path | None) -> None:
    """Score the shipped demo models (E0 only, StyleRes, WarpRes) on held-out renders with ground truth."""
    try:
        from warpres.demo.bundle import demo_models, read_regressor
        from warpres.demo.evaluation import evaluate as run_evaluation
        from warpres.demo.evaluation import json_report, markdown_table
        from warpres.demo.showcase import DIRECTIONS
    except ImportError as exc:
        raise click.ClickException(f"warpres evaluate needs PyTorch and scikit-image ({exc}); "
                                   f"pip install 'warpres[export,cpu,train]'") from None
    from warpres.files import atomic_path

    scores = run_evaluation(demo_models(backend), read_regressor(), DIRECTIONS, count=images, backend=backend)
    text = json_report(scores, images) if as_json else markdown_table(scores)
    click.echo(text)
    if output is not None:
        with atomic_path(output) as tmp:
            tmp.write_text(text + "\n")


# -- train ------------------------------------------------------------------------------------

@main.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--resume", help="A training checkpoint to continue, or 'auto': OUTPUT/ckpt.safetensors if present.")
@click.option("--steps", type=click.IntRange(1), help="Override `steps`.")
@click.option("-o", "--output", type=click.Path(file_okay=False, path_type=Path), help="Override `output`.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, dotted, value in YAML (repeatable): --set losses.flow=2")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train(config: Path, resume: str | None, steps: int | None, output: Path | None,
          assignments: tuple[str, ...], progress: bool) -> None:
    """Train the residual branch (E1, flow head, E2) as CONFIG (YAML) says; runs under torchrun for DDP."""
    try:
        from warpres.training.config import load_config, parse_assignments
        from warpres.training.trainer import CHECKPOINT_NAME
        from warpres.training.trainer import train as run_training
    except ImportError as exc:
        raise click.ClickException(f"warpres train needs the train extra ({exc}); "
                                   f"pip install 'warpres[train]'") from None

    overrides = parse_assignments(assignments)
    if steps is not None:
        overrides["steps"] = steps
    if output is not None:
        overrides["output"] = str(output.resolve())
    settings = load_config(config, overrides)
    result = run_training(settings, resume=resume, progress=progress)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"trained {settings.family} to step {result.step}; "
                   f"checkpoint {settings.output / CHECKPOINT_NAME}")


# -- export / info ----------------------------------------------------------------------------

@main.command()
@click.argument("checkpoint", type=MODEL)
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (replaced only when the new export is complete).")
@directions_option
@click.option("--validate/--no-validate", default=True, help="Compare every graph with PyTorch after export.")
@click.option("--flavour", type=click.Choice(["portable", "plugin"]), default="portable",
              help="portable: standard ONNX ops (every backend); plugin: modulated convs and warps as warpres "
                   "TensorRT plugin nodes (TensorRT only; build with --plugin-library).")
def export(checkpoint: Path, out_dir: Path, directions: Path | None, validate: bool, flavour: str) -> None:
    """Export CHECKPOINT (a file, or a built-in model with its directions) as ONNX subgraphs +
    manifest.json into OUTPUT."""
    from warpres.app.models import resolve_model
    from warpres.checkpoints import load_checkpoint
    from warpres.export import export_model

    choice = resolve_model(checkpoint, "torch", directions)   # the torch backend's view: a checkpoint file
    if choice.path.is_dir():
        raise click.BadParameter(f"{checkpoint} is an exported model folder; export takes a checkpoint file",
                                 param_hint="CHECKPOINT")
    folder = export_model(load_checkpoint(choice.path), out_dir, directions=choice.directions, validate=validate,
                          flavour=flavour)
    click.echo(f"exported {folder.manifest.family} model ({flavour}) to {out_dir} "
               f"({', '.join(stage.filename for stage in folder.manifest.stages)})")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--precision", type=_PrecisionChoice(BACKEND_PRECISIONS["tensorrt"]), default=None,
              help="fp16 (default for portable graphs) converts each graph with ModelOpt AutoCast first (style, "
                   "demodulation, clamps and grid math stay fp32); int8 / mixed build the Q/DQ graphs of "
                   "`warpres calibrate --target tensorrt` (mixed: FP16 for the stages left float); plugin-flavour "
                   "engines are fp32.")
@click.option("--batch", help="One optimization profile MIN,OPT,MAX over the batch (default 1,1,8).")
@click.option("--profiles", help="One profile per batch size, e.g. 1,8,32.")
@click.option("--workspace", type=click.FloatRange(0.1), default=2.0, help="Builder workspace limit (GiB).")
@click.option("--refit/--no-refit", default=False, help="Build refittable engines.")
@click.option("--plugins", is_flag=True,
              help="Build a plugin-flavour export (warpres export --flavour plugin) with the warpres plugin library.")
@click.option("--plugin-library", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              envvar="WARPRES_PLUGIN_LIBRARY",
              help="libwarpres_plugins.so (plugins/README.md), embedded into every engine.")
def build(model_dir: Path, precision: str | None, batch: str | None, profiles: str | None, workspace: float,
          refit: bool, plugins: bool, plugin_library: Path | None) -> None:
    """Build TensorRT engines for every stage of the exported MODEL_DIR (into MODEL_DIR/engines)."""
    from warpres.export.engines import build_model_engines, staircase_profiles
    from warpres.stages import PLUGIN, open_model_folder

    flavour = open_model_folder(model_dir).manifest.flavour
    if plugins != (flavour == PLUGIN):
        raise click.ClickException(
            f"{model_dir} holds {flavour} graphs: "
            + ("re-export with `warpres export --flavour plugin` to build with the plugins" if plugins
               else "pass --plugins (and --plugin-library) to build them"))
    if batch and profiles:
        raise click.UsageError("give --batch or --profiles, not both")
    precision = precision or ("fp32" if plugins else "fp16")
    batch_profiles = (staircase_profiles(_batch_sizes(profiles)) if profiles
                      else (tuple(_batch_sizes(batch or "1,1,8", count=3)),))
    paths = build_model_engines(model_dir, precision=precision, profiles=batch_profiles,
                                workspace_bytes=int(workspace * 2**30), refittable=refit,
                                plugin_library=plugin_library if plugins else None)
    click.echo(f"built {len(paths)} {precision} engines in {paths[0].parent}")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--images", "images_dir", required=True, type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder of photos like the ones you will edit (at least 8; a quarter is held out to measure).")
@click.option("--edits", "edit_spec", help="Edits to calibrate under, e.g. smile=2,pose=1.5 (each at both signs) "
                                           "[default: every direction at the strength users apply, both signs].")
@click.option("--random-edits", type=click.IntRange(1), help="Calibrate under N random edits instead.")
@click.option("--precision", type=click.Choice(["int8", "mixed"]), default="mixed",
              help="int8: every stage quantized; mixed: stages whose INT8 misses the bar stay float.")
@click.option("--target", type=click.Choice(["openvino", "tensorrt", "all"]), default="openvino",
              help="openvino: NNCF INT8 IR for the CPU runtime; tensorrt: ModelOpt Q/DQ graphs for `warpres build`.")
@click.option("--method", type=click.Choice(["max", "entropy"]), default="max", help="Activation range calibration.")
@click.option("--bar", "bar_db", type=click.FloatRange(0), default=35.0,
              help="Final-image PSNR (dB) against FP32 the held-out images must reach for auto to use it.")
@directions_option
def calibrate(model_dir: Path, images_dir: Path, edit_spec: str | None, random_edits: int | None, precision: str,
              target: str, method: str, bar_db: float, directions: Path | None) -> None:
    """Write INT8 / mixed-precision graphs for MODEL_DIR, calibrated on the photos in --images, with an
    accuracy report (per stage, and final images per edit on held-out photos)."""
    from warpres.calibration.calibrate import TARGETS, calibrate as run_calibration
    from warpres.calibration.data import both_signs
    from warpres.edits import parse_edit_spec

    if edit_spec and random_edits:
        raise click.UsageError("give --edits or --random-edits, not both")
    edit_sets = both_signs(parse_edit_spec(edit_spec)) if edit_spec else None
    for name in TARGETS if target == "all" else (target,):
        result = run_calibration(model_dir, images_dir, target=name, precision=precision, method=method,
                                 edit_sets=edit_sets, random_edits=random_edits, directions=directions,
                                 bar_db=bar_db)
        verdict = "meets" if result.report.meets_bar else "MISSES (kept, never picked by auto)"
        click.echo(f"{name}: {'unchanged' if result.reused else 'wrote'} {result.path} ({result.report.summary()}; "
                   f"{verdict})")


@main.command()
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--precision", "precisions", multiple=True, type=_PrecisionChoice(BACKEND_PRECISIONS["tensorrt"]),
              default=("fp32", "fp16"), help="Engine precisions to check (repeatable).")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The checkpoint MODEL_DIR was exported from: every stage is compared with PyTorch too.")
def selftest(model_dir: Path, precisions: tuple[str, ...], checkpoint: Path | None) -> None:
    """Build small TensorRT engines for MODEL_DIR on this GPU, run every stage and a full edit on them and
    compare with ONNX Runtime (and PyTorch, with --checkpoint); exit 1 on any failure."""
    from warpres.export.engines import build_model_engines
    from warpres.runtime.tensorrt.selftest import run_selftest

    reference_model = None
    if checkpoint is not None:
        from warpres.checkpoints import load_checkpoint

        reference_model = load_checkpoint(checkpoint)
    report = run_selftest(model_dir, build=build_model_engines, precisions=precisions,
                          reference_model=reference_model)
    click.echo(report.render())
    if not report.passed:
        raise SystemExit(1)


@main.command()
@click.argument("model_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
def doctor(model_dir: Path | None) -> None:
    """Report what this machine offers: GPU, driver, CUDA, TensorRT and the backends; with MODEL_DIR,
    also its TensorRT engines (who built them, for which GPU, embedded plugins) and whether they run here."""
    from warpres.app.reports import doctor_report

    click.echo("\n".join(doctor_report(model_dir)))


@main.command()
@click.argument("model", type=MODEL)
def info(model) -> None:
    """Describe MODEL: an exported model folder, a checkpoint or a built-in model."""
    from warpres.app.models import resolve_model
    from warpres.app.reports import info_report

    choice = resolve_model(model)
    lines = info_report(choice.path)
    if choice.directions is not None:
        lines.append(f"  edits       {', '.join(choice.directions.names)} (shipped with {choice.name})")
    click.echo("\n".join(lines))


@main.command()
def models() -> None:
    """List the built-in models (--model NAME) and what the cache holds."""
    from warpres.app.models import model_listing

    click.echo("\n".join(model_listing()))


@main.command()
@click.argument("model", type=MODEL)
@directions_option
def edits(model, directions: Path | None) -> None:
    """List the edits MODEL carries (its own directions, a built-in model's shipped ones, and
    --directions), with the strengths each is meant for."""
    from warpres.app.models import resolve_model
    from warpres.app.reports import edits_report

    choice = resolve_model(model, extra_directions=directions)
    click.echo("\n".join(edits_report(choice)))


if __name__ == "__main__":
    sys.exit(main())
