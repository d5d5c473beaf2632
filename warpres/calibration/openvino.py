"""INT8 stage graphs for OpenVINO through NNCF, each stage's recipe chosen by measurement.

`nncf.quantize` inserts FakeQuantize ops into the stage's OpenVINO model from its calibration
inputs; the result is saved as OpenVINO IR (xml + bin) and runs with the CPU plugin's INT8
kernels (VNNI, AMX).

What was measured (demo WarpRes, 18 calibration images, final-image PSNR against FP32 of one
stage quantized alone, lowest over inversion and 14 edits; AMD EPYC without AMX):
- NNCF's default activation ranges (quantiles) clip the outliers StyleGAN's activations carry
  under strong edits: encoder 28 dB, synthesis head 21 dB, tail 26 dB, flow 28 dB. Min-max
  ranges give 34 / 36 / 34 / 50 dB, so `max` is the default method; `entropy` keeps NNCF's
  default estimator.
- Exclusions help some stages and hurt others, so each stage tries the recipes below and keeps
  the one with the best lowest PSNR: synthesis head and tail gain 5-7 dB from keeping the
  modulation / demodulation multiplies (and the to-RGB / output layers) in float; the
  encoder and fuse gain 4-5 dB from asymmetric activations (NNCF's mixed preset) with their
  output layers in float, and lose from the multiply exclusion; the flow head loses 20 dB when
  its last conv (the flow itself) stays float and its input is quantized, so it keeps none.
- Neither StyleGAN2 op that the FP16 path keeps in FP32 is quantized here: NNCF does not
  quantize the demodulation's Sqrt / Power or GridSample and its grid math.

`nncf.quantize_with_accuracy_control`, which reverts layers one by one until a metric recovers,
was tried with the final-image PSNR as the metric: on the demo encoder it had not finished after
17 minutes on 2 cores (each ranking step renders images), against 15 s for one recipe.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from warpres.calibration.accuracy import StageRunner
from warpres.errors import BackendError, CalibrationError

logger = logging.getLogger(__name__)

WEIGHTED_OP_TYPES = frozenset({"Convolution", "GroupConvolution", "MatMul"})
MAX_SAMPLES = 128  # calibration rows per stage: NNCF's statistics settle well below this on every stage


@dataclass(frozen=True)
class Recipe:
    """One way to quantize a stage: NNCF's preset and which groups of ops stay in float.

    outputs: the weighted layers nearest each stage output (to-RGB, the flow head's last conv,
    the encoder's W+ heads). modulation: every Multiply (style modulation, demodulation, SE
    gates, noise strength)."""

    name: str
    preset: str  # "performance" (symmetric activations) or "mixed" (asymmetric)
    float_outputs: bool
    float_multiplies: bool


RECIPES = (
    Recipe("symmetric, all quantized", "performance", False, False),
    Recipe("symmetric, outputs and multiplies in float", "performance", True, True),
    Recipe("asymmetric, outputs in float", "mixed", True, False),
    Recipe("asymmetric, outputs and multiplies in float", "mixed", True, True),
)
METHODS = ("max", "entropy")


def import_nncf():
    try:
        import nncf
    except ImportError as exc:
        raise CalibrationError(f"OpenVINO INT8 calibration needs NNCF ({exc}): pip install 'warpres[calibration]'") \
            from None
    nncf.set_log_level(logging.ERROR)
    return nncf


def output_layers(model) -> list[str]:
    """Friendly names of the weighted ops nearest each Result: walking back from the outputs, the
    first Convolution / MatMul on every path."""
    found: set[str] = set()
    seen: set[str] = set()
    pending = [result.input_value(0).get_node() for result in model.get_results()]
    while pending:
        node = pending.pop()
        name = node.get_friendly_name()
        if name in seen:
            continue
        seen.add(name)
        if node.get_type_name() in WEIGHTED_OP_TYPES:
            found.add(name)
            continue
        pending.extend(port.get_source_output().get_node() for port in node.inputs())
    return sorted(found)


def sample_rows(inputs: Mapping[str, np.ndarray], limit: int = MAX_SAMPLES) -> list[dict[str, np.ndarray]]:
    """Up to `limit` single-row feeds, evenly spread over the recorded rows."""
    count = len(next(iter(inputs.values())))
    picks = np.unique(np.linspace(0, count - 1, min(count, limit)).round().astype(int))
    return [{name: np.ascontiguousarray(value[i:i + 1]) for name, value in inputs.items()} for i in picks]


class OpenVinoQuantizer:
    """Quantizes one model folder's stages with NNCF and runs them for measurement."""

    recipes = RECIPES
    suffix = ".xml"

    def __init__(self, folder, float_precision: str = "fp32") -> None:
        from warpres.runtime.backends.openvino import import_openvino

        self.nncf = import_nncf()
        self.ov = import_openvino()
        self.core = self.ov.Core()
        self.folder = folder
        self.float_precision = float_precision
        self.float_stage_precision = float_precision  # what a stage left out of INT8 runs in

    def source_model(self, stage):
        frontend = self.ov.frontend.FrontEndManager().load_by_framework("onnx")
        return frontend.convert(frontend.load(str(self.folder.graph_path(stage))))

    def quantize(self, stage, inputs: Mapping[str, np.ndarray], recipe: Recipe, method: str):
        """The stage's model with FakeQuantize ops, calibrated on `inputs` ({input: (N, ...)})."""
        nncf = self.nncf
        if method not in METHODS:
            raise CalibrationError(f"method {method!r}: choose one of {', '.join(METHODS)}")
        model = self.source_model(stage)
        names = output_layers(model) if recipe.float_outputs else []
        types = ["Multiply"] if recipe.float_multiplies else []
        advanced = None
        if method == "max":
            from nncf.quantization.range_estimator import RangeEstimatorParametersSet

            advanced = nncf.AdvancedQuantizationParameters(
                activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
        rows = sample_rows(inputs)
        preset = nncf.QuantizationPreset.MIXED if recipe.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
        try:
            # NNCF draws its own progress bars on stdout (rich, per statistics pass); ours cover them.
            with contextlib.redirect_stdout(io.StringIO()):
                return nncf.quantize(model, nncf.Dataset(rows), subset_size=len(rows), preset=preset,
                                     ignored_scope=nncf.IgnoredScope(names=names, types=types, validate=False),
                                     advanced_parameters=advanced)
        except Exception as exc:  # NNCF raises many kinds
            raise CalibrationError(f"{stage.name}: NNCF could not quantize the stage ({type(exc).__name__}: {exc})") \
                from exc

    def runner(self, model) -> StageRunner:
        """Run `model` (a stage's) on host arrays at this quantizer's float precision."""
        ov = self.ov
        config = {"INFERENCE_PRECISION_HINT": ov.Type.bf16 if self.float_precision == "bf16" else ov.Type.f32,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            compiled = self.core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise BackendError(f"OpenVINO cannot compile a quantized stage ({exc})") from None
        request = compiled.create_infer_request()
        outputs = {name: port for port in compiled.outputs for name in port.get_names()}

        def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
            results = request.infer(dict(feeds))
            return {name: np.array(results[port]) for name, port in outputs.items()}
        return run

    def load(self, path: Path):
        return self.core.read_model(str(path), str(path.with_suffix(".bin")))

    def save(self, model, path: Path) -> tuple[Path, Path]:
        """Write the IR (xml + bin, FP32 weights where NNCF left them float)."""
        self.ov.save_model(model, str(path), compress_to_fp16=False)
        return path, path.with_suffix(".bin")

