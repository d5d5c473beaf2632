"""Writing outputs atomically and fingerprinting files.

Every file the package writes goes through `atomic_path`, so a crash or Ctrl-C never leaves a
half-written output under the final name (ARCHITECTURE §5).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HASH_CHUNK = 1 << 20


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files 0600; outputs get the permissions a plain open() would give them
_FILE_MODE = 0o666 & ~_current_umask()


def cache_root() -> Path:
    """$XDG_CACHE_HOME/warpres, else ~/.cache/warpres."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "warpres"


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that pick a format by
    extension still work); on success it is renamed over `path`, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        # after the write: some writers (safetensors) replace the file and with it its mode
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
