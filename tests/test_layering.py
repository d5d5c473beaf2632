"""The dependency arrows of ARCHITECTURE §4 point down: each package, imported alone in a fresh
interpreter, pulls in none of the packages it must not depend on (so, e.g., the runtime with its
ONNX and TensorRT backends deploys without torch or the exporter)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNTIME = ("warpres.runtime", "warpres.runtime.session", "warpres.runtime.backends",
           "warpres.runtime.backends.openvino", "warpres.runtime.backends.onnxruntime", "warpres.runtime.tensorrt",
           "warpres.runtime.tensorrt.backend", "warpres.runtime.tensorrt.selftest")
# package -> what importing it must not pull in (a name forbids the package and its submodules)
FORBIDDEN = {
    **{package: ("torch", "warpres.export", "warpres.models", "warpres.training", "warpres.app", "warpres.cli")
       for package in RUNTIME},
    "warpres.media": ("warpres.runtime", "warpres.models", "torch"),
    "warpres.stages": ("torch",),
    "warpres.edits": ("torch",),
    "warpres.images": ("torch",),
    "warpres.models": ("warpres.training", "warpres.export", "warpres.checkpoints", "warpres.runtime",
                       "warpres.app", "warpres.cli"),
    "warpres.checkpoints": ("warpres.training", "warpres.export", "warpres.runtime", "warpres.app", "warpres.cli"),
    "warpres.export": ("warpres.app", "warpres.cli", "warpres.training"),
    "warpres.training": ("warpres.app", "warpres.cli", "warpres.export"),
    "warpres.calibration": ("warpres.app", "warpres.cli", "warpres.training"),
    **{package: ("torch", "ray", "warpres.export", "warpres.models", "warpres.training", "warpres.cli")
       for package in ("warpres.app.batch.job", "warpres.app.batch.distributed")},
    "warpres.app": ("warpres.cli",),
    "warpres.cli": (),
}


def _imported_by(package: str) -> set[str]:
    script = (f"import importlib, json, sys; importlib.import_module({package!r}); "
              f"print(json.dumps(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300,
                            env={"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PATH": ""})
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_above_it(package):
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} does not exist yet")
    modules = _imported_by(package)
    pulled = sorted(name for name in modules for forbidden in FORBIDDEN[package]
                    if name == forbidden or name.startswith(forbidden + "."))
    assert not pulled, f"importing {package} pulled in {pulled}"
