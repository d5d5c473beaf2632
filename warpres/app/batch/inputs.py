"""What `warpres batch` reads: INPUTS as a folder (recursive), a glob, a text file of paths, or a
Parquet / CSV table with a path column. Entries are local paths or URIs that pyarrow's
filesystems open (s3://, gs://, hdfs://, file://).

Every input gets an output name: its path relative to the inputs' root (the folder, the glob's
fixed prefix, or the common folder of a list's entries) without its suffix, so a folder tree is
mirrored under OUT and two photos of one name in different folders never collide. Two files of
one stem in one folder (a.jpg, a.png) keep their suffix in the name (a_jpg, a_png).
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from warpres.errors import ImageError, WarpresError
from warpres.media.imageio import IMAGE_EXTENSIONS, decode_image, read_image

LIST_SUFFIXES = (".txt", ".lst")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv")
_GLOB_CHARACTERS = set("*?[")


@dataclass
class InputListing:
    """sources: local paths or URIs, in order; names: the output name of each (see the module);
    not_images: sources listed by a folder or glob whose suffix is no image's (reported, not read)."""

    sources: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    not_images: set[str] = field(default_factory=set)


def is_uri(source: str) -> bool:
    return "://" in source and not source.startswith("file://")


def is_image_name(source: str) -> bool:
    return PurePosixPath(source).suffix.lower() in IMAGE_EXTENSIONS


def list_inputs(spec: str | os.PathLike[str], *, column: str = "path",
                exclude: str | os.PathLike[str] | None = None) -> InputListing:
    """The inputs `spec` names. A folder lists every regular file below it (hidden ones and
    `exclude`, the output folder, passed over); files whose suffix is no image's are listed in
    `not_images` so they appear in the results. Raises WarpresError for a missing spec, a table
    without `column`, or nothing to edit."""
    text = os.fspath(spec)
    path = Path(text)
    excluded = Path(exclude).resolve() if exclude is not None else None
    if path.is_dir():
        sources, root = _walk(path, excluded), path
    elif path.is_file() and path.suffix.lower() in TABLE_SUFFIXES:
        sources, root = _table_entries(path, column), None
    elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        sources, root = _list_entries(path), None
    elif path.is_file():
        sources, root = [text], path.parent
    elif _GLOB_CHARACTERS & set(text):
        sources = sorted(name for name in glob.glob(text, recursive=True) if Path(name).is_file())
        root = Path(_glob_prefix(text))
    else:
        raise WarpresError(f"{text}: no such file or folder (INPUTS is a folder, a glob, a .txt list of paths or a "
                           f"{'/'.join(TABLE_SUFFIXES)} table with a {column!r} column)")
    if not sources:
        raise WarpresError(f"{text}: no inputs found")
    listing = InputListing(sources, _output_names(sources, root))
    if path.is_dir() or root is not None:  # listed by us, not named one by one by the user
        listing.not_images = {source for source in sources if not is_image_name(source)}
    return listing


def read_source(source: str) -> np.ndarray:
    """Decode one input (local path, file:// or a URI pyarrow opens); ImageError names it."""
    if not is_uri(source):
        return read_image(_without_file_scheme(source))
    from pyarrow import fs

    try:
        filesystem, inner = fs.FileSystem.from_uri(source)
        with filesystem.open_input_stream(inner) as stream:
            data = stream.read()
    except (OSError, ValueError) as error:  # pyarrow raises OSError subclasses and ArrowInvalid (a ValueError)
        raise ImageError(f"{source}: cannot read: {str(error).splitlines()[0]}") from error
    return decode_image(data, source)


def _walk(folder: Path, excluded: Path | None) -> list[str]:
    found = []
    for current, folders, files in os.walk(folder):
        here = Path(current)
        folders[:] = sorted(name for name in folders
                            if not name.startswith(".") and (excluded is None or (here / name).resolve() != excluded))
        found += [str(here / name) for name in sorted(files) if not name.startswith(".") and (here / name).is_file()]
    return found


def _list_entries(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [_resolve_entry(line, path.parent) for line in lines if line and not line.startswith("#")]


def _table_entries(path: Path, column: str) -> list[str]:
    try:
        if path.suffix.lower() == ".csv":
            from pyarrow import csv

            table = csv.read_csv(path)
            names = table.column_names
        else:
            from pyarrow import parquet

            # the path column alone (a catalogue may carry many others), once it is known to exist
            names = parquet.read_schema(path).names
            table = parquet.read_table(path, columns=[column]) if column in names else None
    except ImportError:
        raise WarpresError(f"{path}: reading tables needs pyarrow: pip install 'warpres[batch]'") from None
    except (OSError, ValueError, KeyError) as error:
        raise WarpresError(f"{path}: cannot read the table: {str(error).splitlines()[0]}") from error
    if column not in names:
        raise WarpresError(f"{path}: no {column!r} column (columns: {', '.join(names)}); name it with --path-column")
    return [_resolve_entry(str(value), path.parent) for value in table.column(column).to_pylist()
            if value is not None and str(value).strip()]


def _resolve_entry(entry: str, base: Path) -> str:
    """A list's entry: URIs as they are, relative paths against the list's folder."""
    if "://" in entry or Path(entry).is_absolute():
        return entry
    return str(base / entry)


def _glob_prefix(pattern: str) -> str:
    parts = []
    for part in Path(pattern).parts:
        if _GLOB_CHARACTERS & set(part):
            break
        parts.append(part)
    return str(Path(*parts)) if parts else "."


def _output_names(sources: list[str], root: Path | None) -> list[str]:
    locations = [PurePosixPath(_location(source)) for source in sources]
    if root is not None:
        base = PurePosixPath(Path(root).resolve().as_posix())
    else:
        base = PurePosixPath(os.path.commonpath([str(location.parent) for location in locations]))
    relative = [location.relative_to(base) if location.is_relative_to(base) else PurePosixPath(location.name)
                for location in locations]
    stems = Counter(str(name.with_suffix("")) for name in relative)
    return [str(name.with_suffix("")) if stems[str(name.with_suffix(""))] == 1
            else str(name.with_suffix("")) + "_" + name.suffix.lstrip(".").lower() for name in relative]


def _location(source: str) -> str:
    """A source as an absolute posix path: URIs by their bucket and key."""
    source = _without_file_scheme(source)
    if is_uri(source):
        return "/" + source.split("://", 1)[1]
    return Path(source).resolve().as_posix()


def _without_file_scheme(source: str) -> str:
    return source[len("file://"):] if source.startswith("file://") else source
