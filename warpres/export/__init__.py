"""Export an EditingModel to per-stage ONNX graphs with a manifest, and validate them.

    from warpres.export import export_model
    folder = export_model(model, "exported/warpres-ffhq", directions=library)

The runtime never imports this package (it needs torch, onnx, onnxscript, onnxruntime, tqdm).
"""

from warpres.export.activations import pipeline_activations
from warpres.export.fingerprint import model_config, model_id
from warpres.export.folder import export_checkpoint, export_model
from warpres.export.graph import OPSET
from warpres.export.specs import SPECS, ExportSpec, Tolerance, spec_for, specs_for
from warpres.export.validation import OutputError, ValidationReport, validate_graph, validate_model_folder

__all__ = [
    "OPSET",
    "SPECS",
    "ExportSpec",
    "OutputError",
    "Tolerance",
    "ValidationReport",
    "export_checkpoint",
    "export_model",
    "model_config",
    "model_id",
    "pipeline_activations",
    "spec_for",
    "specs_for",
    "validate_graph",
    "validate_model_folder",
]
