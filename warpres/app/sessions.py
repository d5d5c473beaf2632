"""Opening a Session from the application layer: the exporter is handed to it here (the runtime
never imports warpres.export), imported only when a checkpoint must be exported."""

from __future__ import annotations

from pathlib import Path

from warpres.errors import WarpresError
from warpres.runtime.session import Session


def export_checkpoint(checkpoint: Path, folder: Path):
    """The Session's exporter: warpres.export, or one line naming the extra it needs."""
    try:
        from warpres.export import export_checkpoint as export
    except ImportError as exc:
        raise WarpresError(f"{checkpoint}: running a checkpoint on an ONNX backend exports it first, which needs "
                           f"PyTorch and the exporter ({exc}); pip install 'warpres[export]' or pass an exported "
                           f"model folder") from None
    return export(checkpoint, folder)


def open_session(model: Path, backend: str = "auto", **options) -> Session:
    """`Session(model, backend, **options)` with the exporter for checkpoints."""
    return Session(model, backend, exporter=export_checkpoint, **options)
