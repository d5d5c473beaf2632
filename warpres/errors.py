"""Exceptions a user can act on; the CLI prints their message as one line."""


class WarpresError(Exception):
    """Base class of every error warpres raises on purpose."""


class CheckpointError(WarpresError):
    """A checkpoint is unreadable, unsafe, or does not match the model it is loaded into."""


class EditError(WarpresError):
    """An edit specification or an edit-direction file is invalid."""


class ImageError(WarpresError):
    """An input image cannot be turned into encoder input."""


class ExportError(WarpresError):
    """A stage did not export, or its exported graph does not match the PyTorch reference."""


class BackendError(WarpresError):
    """A backend is not installed, cannot run here, or failed to load or run a graph."""


class ModelFolderError(WarpresError):
    """An exported model folder is incomplete, was changed after export, or mixes models."""


class ConfigError(WarpresError):
    """A training configuration is invalid (unknown key, wrong type, impossible value)."""


class TrainingError(WarpresError):
    """A training run cannot start or continue (no images, a checkpoint from another run, NaN losses)."""


class CalibrationError(WarpresError):
    """A calibration that cannot run: too few usable images, a folder it cannot calibrate."""
