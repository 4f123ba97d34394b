"""Notebook formats: one canonical model (model.py) and its readers/writers.

SOURCE (source.py), JUPYTER (jupyter.py), HTML (html.py) and the NotebookV1 JSON of DBC
archives (dbc.py) all read into and write from ``Notebook``; archive.py reads and writes
.dbc archives and zips of source files; ``detect`` implements the AUTO format.
"""
from __future__ import annotations

import posixpath

from brickyard.runtime.formats.archive import ArchiveEntry, read_archive, write_archive, write_source_zip
from brickyard.runtime.formats.html import has_model, read_html, write_html
from brickyard.runtime.formats.jupyter import read_jupyter, write_jupyter
from brickyard.runtime.formats.model import (
    LANGUAGES,
    Cell,
    Notebook,
    NotebookFormatError,
    NotebookTooLarge,
    dumps,
    loads,
)
from brickyard.runtime.formats.source import EXTENSION, header_prefix, read_source, write_source

__all__ = [
    "LANGUAGES", "Cell", "Notebook", "NotebookFormatError", "NotebookTooLarge", "ArchiveEntry",
    "dumps", "loads", "detect", "extension_of", "strip_extension", "read_notebook", "write_notebook",
    "read_archive", "write_archive", "write_source_zip", "file_type", "is_zip",
]

# Formats a single notebook can be read from / written to (DBC is an archive; see dbc.py).
NOTEBOOK_FORMATS = ("SOURCE", "JUPYTER", "HTML")
_SOURCE_EXTENSIONS = (".py", ".sql", ".scala", ".r")
_NOTEBOOK_EXTENSIONS = _SOURCE_EXTENSIONS + (".ipynb", ".html", ".htm", ".dbc")


def extension_of(name: str) -> str:
    """The lower-case extension of a path's last segment ('' when none)."""
    stem, ext = posixpath.splitext(posixpath.basename(name))
    return ext.lower() if stem else ""


def strip_extension(path: str) -> str:
    """The path without a notebook extension (.py, .ipynb, ...), as AUTO imports name notebooks."""
    ext = extension_of(path)
    return path[: -len(ext)] if ext in _NOTEBOOK_EXTENSIONS else path


def is_zip(data: bytes) -> bool:
    return data[:4] == b"PK\x03\x04"


def _looks_like_ipynb(data: bytes) -> bool:
    head = data[:4096].lstrip()
    return head.startswith(b"{") and b'"cells"' in data and b'"nbformat"' in data


def detect(name: str, data: bytes) -> str:
    """AUTO: SOURCE, JUPYTER, DBC, HTML or FILE from the name's extension and the content."""
    ext = extension_of(name)
    if ext == ".ipynb":
        return "JUPYTER"
    if ext == ".dbc":
        return "DBC"
    if ext in (".html", ".htm"):
        return "HTML" if has_model(data) else "FILE"
    if ext in _SOURCE_EXTENSIONS:
        return "SOURCE" if header_prefix(data) is not None else "FILE"
    if ext:
        return "FILE"
    if header_prefix(data) is not None:
        return "SOURCE"
    if _looks_like_ipynb(data):
        return "JUPYTER"
    return "HTML" if has_model(data) else "FILE"


def read_notebook(fmt: str, data: bytes, name: str, language: str | None = None,
                  extension: str | None = None) -> Notebook:
    """One notebook from SOURCE, JUPYTER or HTML content."""
    if fmt == "SOURCE":
        return read_source(data, name, language=language, extension=extension)
    if fmt == "JUPYTER":
        return read_jupyter(data, name)
    if fmt == "HTML":
        return read_html(data, name)
    raise NotebookFormatError(f"{fmt} is not a single-notebook format.")


def file_type(fmt: str, language: str) -> str:
    """The file_type (extension) an export in this format has."""
    if fmt == "SOURCE":
        return EXTENSION[language]
    return {"JUPYTER": "ipynb", "HTML": "html", "DBC": "dbc"}[fmt]


def write_notebook(fmt: str, nb: Notebook, object_id: int) -> bytes:
    """One notebook as SOURCE, JUPYTER or HTML bytes."""
    if fmt == "SOURCE":
        return write_source(nb)
    if fmt == "JUPYTER":
        return write_jupyter(nb)
    if fmt == "HTML":
        return write_html(nb, object_id)
    raise NotebookFormatError(f"{fmt} is not a single-notebook format.")
