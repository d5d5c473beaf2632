"""`warpres app`: the interactive editor in the browser (Gradio), on the embedded default.

Upload a photo (or take a webcam snapshot); its faces are aligned as the models expect (or the
centred square is taken, alignment off); each loaded model inverts it once, and every slider
move re-edits from the per-image cache (only the stages after the edit run) and pastes the
result back into the photo at its own resolution. With the demo models the columns are the
paper's: input, E0 only, StyleRes, WarpRes. Below them, the residual branch's magnitude (what
StyleRes and WarpRes add back that E0 alone misses).

`Editor` is the app without the page (tested directly); `build_interface` lays the page out
around it. Per-browser state is an `Editing` (the photo, its crop and each model's inversion),
kept by Gradio per session with a time to live and a bounded number of sessions; the Sessions'
feature caches are bounded by bytes, so abandoned sessions cannot grow memory. Downloads are
written only when asked for (a button), into a temporary folder Gradio serves from.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from warpres.app.batch.pipeline import compose
from warpres.edits import EditRequest, edit_range
from warpres.errors import WarpresError
from warpres.media.annotate import draw_flow
from warpres.media.faces import FaceAligner, FaceCrop, FaceNotFoundError
from warpres.media.fit import SquareFit, fit_square
from warpres.media.imageio import to_rgb8

DEFAULT_MAX_UPLOAD_MB = 20
MAX_PIXELS = 40_000_000           # larger uploads are refused (a 40 MP photo is 120 MB decoded)
SESSION_TTL_S = 30 * 60           # an abandoned browser session's photo and inversions are dropped
MAX_SESSIONS = 16                 # at most this many browser sessions keep state at once
FLOW_VIEW_SIDE = 384              # px; the flow view's image
CONCURRENCY = 2                   # edits run at once (2 cores: more would only queue inside OpenVINO)


@dataclass
class LoadedModel:
    name: str          # the column's label
    session: object    # a warpres Session


@dataclass
class Editing:
    """One browser session's photo: the frame, where the face(s) came from, each model's inversion."""

    frame: np.ndarray
    pieces: list[FaceCrop | SquareFit]
    inversions: dict[str, object] = field(default_factory=dict)
    last: dict[str, np.ndarray] = field(default_factory=dict)   # the latest composed result per model
    crops: dict[str, list] = field(default_factory=dict)        # the latest edited crops per model
    requests: list = field(default_factory=list)                 # the edit they show
    seconds: float = 0.0                                         # how long the latest edit took


class Editor:
    """The models of one app and what a page does with them: `load` a photo, `edit` it."""

    def __init__(self, models: Sequence[LoadedModel], framing, max_pixels: int = MAX_PIXELS) -> None:
        if not models:
            raise WarpresError("the app needs at least one model")
        self.models = list(models)
        self.max_pixels = max_pixels
        self.aligner = FaceAligner(models[0].session.info.image_size, framing)
        library = next((m.session.directions for m in self.models if m.session.directions is not None), None)
        self.directions = [] if library is None else [(name, edit_range(library.resolve(name)))
                                                      for name in library.names]

    def warm_up(self) -> None:
        """One inversion and edit of a grey square per model, so the first user does not wait for the
        backends' first-call compilation."""
        size = self.models[0].session.info.image_size
        grey = np.full((size, size, 3), 128, np.uint8)
        for model in self.models:
            model.session.edit(model.session.invert([grey]))

    def load(self, image: np.ndarray | None, align: bool = True, largest_face: bool = False) -> Editing:
        """An uploaded photo -> its Editing (every model inverted once). Raises WarpresError with a
        message for the page: no image, too large, no face."""
        if image is None:
            raise WarpresError("upload a photo first")
        if image.shape[0] * image.shape[1] > self.max_pixels:
            raise WarpresError(f"the photo has {image.shape[1]}x{image.shape[0]} pixels; the limit is "
                               f"{self.max_pixels / 1e6:.0f} MP")
        frame = to_rgb8(np.asarray(image))
        if align:
            try:
                crops = self.aligner.align_all(frame, "the photo", largest_only=largest_face)
            except FaceNotFoundError as exc:
                raise WarpresError(f"{exc}; turn alignment off to edit the whole photo") from None
            pieces, squares = list(crops), [crop.image for crop in crops]
        else:
            square = fit_square(frame.shape, "crop")
            pieces, squares = [square], [square.cut(frame)]
        editing = Editing(frame, pieces)
        for model in self.models:
            editing.inversions[model.name] = model.session.invert(squares)
        return editing

    def edit(self, editing: Editing, strengths: dict[str, float], only: Sequence[str] | None = None) -> Editing:
        """Re-edit every model (or those named in ``only``) from its cached inversion with
        ``strengths`` (name -> value; zeros are left out) and compose the results into the photo."""
        requests = [EditRequest(name, float(value)) for name, value in strengths.items() if value]
        start = time.perf_counter()
        for model in self.models if only is None else [m for m in self.models if m.name in only]:
            images = list(model.session.edit(editing.inversions[model.name], requests or None))
            editing.crops[model.name] = images
            editing.last[model.name] = compose(editing.frame, editing.pieces, images)
        editing.seconds = time.perf_counter() - start
        editing.requests = requests
        return editing

    def use_codes(self, editing: Editing, path: str | Path) -> Editing:
        """Edit from saved W+ codes (a downloaded wplus.npy: one code per face of this photo)
        instead of the photo's own inversion; the photo's residual features stay. Every model
        whose W+ has the codes' shape takes them (the demo models share E0)."""
        try:
            codes = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise WarpresError(f"not a saved W+ code (.npy from this app): {exc}") from None
        applied = 0
        for model in self.models:
            inversion = editing.inversions[model.name]
            if codes.shape != inversion.wplus.shape or not np.all(np.isfinite(codes)):
                continue
            handles = tuple(dataclasses.replace(handle, wplus=np.ascontiguousarray(code, np.float32))
                            for handle, code in zip(inversion.handles, codes, strict=True))
            editing.inversions[model.name] = dataclasses.replace(inversion, handles=handles)
            applied += 1
        if not applied:
            shapes = {tuple(inv.wplus.shape) for inv in editing.inversions.values()}
            raise WarpresError(f"the code has shape {codes.shape}; this photo with these models needs "
                               f"{' or '.join(map(str, sorted(shapes)))} (one code per face)")
        return editing

    def flow_view(self, editing: Editing, name: str) -> np.ndarray | None:
        """The first face's edited crop with the flow WarpRes predicted for the current edit drawn
        on it (the paper's Fig. 7), or None for a model without a flow head."""
        model = next(m for m in self.models if m.name == name)
        if "flow" not in _stage_outputs(model.session) or not editing.crops:
            return None
        flow = model.session.edit_tensors(editing.inversions[name][0:1], editing.requests or None, ["flow"])["flow"]
        crop = editing.crops[name][0]
        side = max(FLOW_VIEW_SIDE, crop.shape[0])   # arrows need room: small crops are shown enlarged
        return draw_flow(cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC), flow[0], step=3,
                         min_pixels=0.15)

    def residual_view(self, editing: Editing, name: str) -> np.ndarray | None:
        """The residual branch's per-pixel magnitude for the first face, as a heat map the crop's
        size, or None for a model without one (E0 only)."""
        model = next(m for m in self.models if m.name == name)
        handle = editing.inversions[name].handles[0]
        entry = model.session.cache.get(handle.key)
        if entry is None or "residual" not in entry:
            return None
        magnitude = np.linalg.norm(entry["residual"], axis=0)
        magnitude = magnitude / max(float(magnitude.max()), 1e-12)
        heat = cv2.applyColorMap((255 * magnitude).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1]
        size = model.session.info.image_size
        return cv2.resize(np.ascontiguousarray(heat), (size, size), interpolation=cv2.INTER_NEAREST)


def write_downloads(editing: Editing, name: str, folder: Path) -> list[str]:
    """The edited photo (at its own resolution) and the W+ codes (one per face) of model ``name``,
    written into ``folder``: what the page offers for download."""
    from warpres.media.imageio import write_image

    folder.mkdir(parents=True, exist_ok=True)
    photo = write_image(folder / "edited.png", editing.last[name])
    codes = folder / "wplus.npy"
    np.save(codes, editing.inversions[name].wplus)
    return [str(photo), str(codes)]


def build_interface(editor: Editor):
    """The Gradio page around ``editor`` (launch it with `launch`)."""
    import gradio as gr

    residuals = [model.name for model in editor.models if "residual" in _stage_outputs(model.session)]
    flows = [model.name for model in editor.models if "flow" in _stage_outputs(model.session)]
    names = [name for name, _ in editor.directions]
    unchanged = [gr.update()] * (len(editor.models) + len(residuals) + 1)

    def outputs_of(editing: Editing):
        images = [editing.last[model.name] for model in editor.models]
        views = [editor.residual_view(editing, name) for name in residuals]
        status = f"{len(editing.pieces)} face(s) · edit {1000 * editing.seconds:.0f} ms"
        return (*images, *views, status)

    def loaded(image, align, largest, *values):
        if image is None:
            return (None, *unchanged)
        try:
            editing = editor.load(image, align, largest)
        except WarpresError as exc:
            raise gr.Error(str(exc)) from None
        return (editing, *outputs_of(editor.edit(editing, dict(zip(names, values, strict=True)))))

    primary = editor.models[-1].name   # the main column (WarpRes with the demo models) answers first
    others = [model.name for model in editor.models[:-1]]

    def edited(editing, *values):
        if editing is None:
            return (None, *unchanged)
        editor.edit(editing, dict(zip(names, values, strict=True)), only=[primary])
        status = f"{len(editing.pieces)} face(s) · {primary} edit {1000 * editing.seconds:.0f} ms"
        # The residual views show the inversion, which a slider does not change: left as they are.
        return (editing, *[gr.update()] * (len(editor.models) - 1), editing.last[primary],
                *[gr.update()] * len(residuals), status)

    def edited_others(editing, *values):
        if editing is None or not others:
            return [gr.update()] * len(others)
        editor.edit(editing, dict(zip(names, values, strict=True)), only=others)
        return [editing.last[name] for name in others]

    scratch = tempfile.TemporaryDirectory(prefix="warpres-app-")   # removed with the page

    def flow_images(editing):
        if editing is None:
            return [gr.update()] * len(flows)
        return [editor.flow_view(editing, name) for name in flows]

    def codes_loaded(editing, file, *values):
        if editing is None or file is None:
            raise gr.Error("upload the photo the code belongs to first")
        try:
            editor.use_codes(editing, file)
        except WarpresError as exc:
            raise gr.Error(str(exc)) from None
        return (editing, *outputs_of(editor.edit(editing, dict(zip(names, values, strict=True)))))

    def downloads(editing):
        if editing is None:
            raise gr.Error("upload a photo first")
        # One folder per browser session, overwritten by its next download: bounded on disk.
        return write_downloads(editing, editor.models[-1].name, Path(scratch.name) / f"{id(editing):x}")

    with gr.Blocks(title="warpres") as page:
        gr.Markdown("## warpres: real-image editing with StyleGAN2 (WarpRes, StyleRes)")
        state = gr.State(None, time_to_live=SESSION_TTL_S)
        with gr.Row():
            photo = gr.Image(label="photo", type="numpy", sources=["upload", "webcam"], elem_id="photo")
            with gr.Column():
                align = gr.Checkbox(True, label="align faces", elem_id="align")
                largest = gr.Checkbox(False, label="largest face only")
                sliders = [gr.Slider(low, high, value=0.0, step=(high - low) / 100, label=name,
                                     elem_id=f"edit-{name}") for name, (low, high) in editor.directions]
                status = gr.Markdown(elem_id="status")
        with gr.Row():
            results = [gr.Image(label=model.name, type="numpy", interactive=False, elem_id=f"result-{index}")
                       for index, model in enumerate(editor.models)]
        with gr.Row():
            views = [gr.Image(label=f"{name}: residual magnitude", type="numpy", interactive=False)
                     for name in residuals]
            flow_views = [gr.Image(label=f"{name}: predicted flow (updated when a slider is released)",
                                   type="numpy", interactive=False, elem_id=f"flow-{index}")
                          for index, name in enumerate(flows)]
        with gr.Row():
            prepare = gr.Button(f"download the {editor.models[-1].name} result and its W+ code")
            files = gr.File(label="downloads", file_count="multiple", interactive=False)
            saved = gr.File(label="edit from a saved W+ code (wplus.npy)", file_types=[".npy"], type="filepath")
        outputs = [state, *results, *views, status]
        for trigger in (photo.upload, align.change, largest.change):
            trigger(loaded, [photo, align, largest, *sliders], outputs, concurrency_limit=CONCURRENCY)
        for slider in sliders:
            slider.change(edited, [state, *sliders], outputs, trigger_mode="always_last",
                          concurrency_limit=CONCURRENCY, show_progress="hidden").then(
                edited_others, [state, *sliders], results[:-1], show_progress="hidden")
            slider.release(flow_images, [state], flow_views, concurrency_limit=CONCURRENCY, show_progress="hidden")
        prepare.click(downloads, [state], [files])
        saved.upload(codes_loaded, [state, saved, *sliders], outputs, concurrency_limit=CONCURRENCY)
    page.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
    page.scratch = scratch
    return page


DEMO_COLUMNS = (("demo:e0", "E0 only"), ("demo:styleres", "StyleRes"), ("demo:warpres", "WarpRes"))


def open_editor(specs: Sequence[str], backend: str = "auto") -> Editor:
    """The Editor of the app's --model values: "demo" loads the three demo models side by side
    (as the paper's figures compare them); anything else one column each."""
    from warpres.app.models import resolve_model
    from warpres.app.sessions import open_session

    columns = [column for spec in specs for column in (DEMO_COLUMNS if spec == "demo" else ((spec, str(spec)),))]
    models, framing = [], None
    for spec, label in columns:
        choice = resolve_model(spec, backend)
        framing = framing or choice.framing
        models.append(LoadedModel(label, open_session(choice.path, backend, directions=choice.directions)))
    editor = Editor(models, framing)
    editor.warm_up()
    return editor


def launch(page, host: str = "127.0.0.1", port: int = 7860, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
           block: bool = True):
    """Serve ``page`` on host:port, never through a public share link."""
    return page.launch(server_name=host, server_port=port, share=False, max_file_size=int(max_upload_mb * 2**20),
                       state_session_capacity=MAX_SESSIONS, prevent_thread_lock=not block, quiet=True,
                       show_error=True, footer_links=[])


def _stage_outputs(session) -> set[str]:
    return {name for stage in session.info.stages for name in stage.outputs}
