"""Databricks source files (.py/.sql/.scala/.r): header, COMMAND separators, MAGIC lines."""
from __future__ import annotations

import re

from brickyard.runtime.formats.model import Cell, Notebook, NotebookFormatError, check_language

COMMENT = {"PYTHON": "#", "R": "#", "SQL": "--", "SCALA": "//"}
EXTENSION = {"PYTHON": "py", "R": "r", "SQL": "sql", "SCALA": "scala"}
EXTENSION_LANGUAGE = {".py": "PYTHON", ".r": "R", ".sql": "SQL", ".scala": "SCALA"}
HEADER = "Databricks notebook source"
_HEADER_RE = re.compile(r"^(#|--|//) Databricks notebook source[ \t]*$")


def decode_text(data: bytes, what: str) -> str:
    """UTF-8 text with normalised newlines; binary content is refused."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise NotebookFormatError(f"The {what} content is not UTF-8 text.") from None
    if "\x00" in text:
        raise NotebookFormatError(f"The {what} content is binary, not text.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def header_prefix(data: bytes | str) -> str | None:
    """The comment prefix of a Databricks source header (``#``, ``--``, ``//``), if present."""
    if isinstance(data, bytes):
        data = data[:200].decode("utf-8-sig", errors="replace")
    first = data.lstrip("\ufeff").split("\n", 1)[0].rstrip("\r")
    m = _HEADER_RE.match(first)
    return m.group(1) if m else None


def language_for(prefix: str | None, extension: str | None) -> str | None:
    """The language a header prefix and a file extension imply, if any."""
    by_ext = EXTENSION_LANGUAGE.get((extension or "").lower())
    if prefix is None:
        return by_ext
    if prefix == "--":
        return "SQL"
    if prefix == "//":
        return "SCALA"
    return "R" if by_ext == "R" else "PYTHON"


def read_source(data: bytes, name: str, language: str | None = None, extension: str | None = None) -> Notebook:
    """Parse a source file; without the header the whole file is one cell (as Databricks does)."""
    text = decode_text(data, "SOURCE")
    prefix = header_prefix(text)
    if language is not None:
        lang = check_language(language)
    else:
        lang = language_for(prefix, extension)
        if lang is None:
            raise NotebookFormatError(
                "The language field is required to import a SOURCE notebook without a "
                "'Databricks notebook source' header or a .py/.sql/.scala/.r name."
            )
    if prefix is None:
        return Notebook(name=name, language=lang, cells=[Cell(source=text.strip("\n"))])
    body = text.split("\n", 1)[1] if "\n" in text else ""
    sep = re.compile(rf"^{re.escape(prefix)} COMMAND -+[ \t]*$", re.M)
    cells = [_read_cell(chunk, prefix) for chunk in sep.split(body)]
    return Notebook(name=name, language=lang, cells=cells)


def _read_cell(chunk: str, prefix: str) -> Cell:
    lines = chunk.strip("\n").split("\n")
    metadata = {}
    title = re.match(rf"^{re.escape(prefix)} DBTITLE \d+,(.*)$", lines[0])
    if title:
        metadata["title"] = title.group(1)
        lines = lines[1:]
        while lines and not lines[0]:
            lines = lines[1:]
    magic = f"{prefix} MAGIC"
    filled = [ln for ln in lines if ln]
    if filled and all(ln == magic or ln.startswith(magic + " ") for ln in filled):
        lines = [ln[len(magic) + 1:] if ln.startswith(magic + " ") else "" for ln in lines]
    return Cell(source="\n".join(lines), metadata=metadata)


def write_source(nb: Notebook) -> bytes:
    """The Databricks source form of a notebook (outputs are not part of it)."""
    prefix = COMMENT[nb.language]
    parts = []
    for cell in nb.cells:
        lines = cell.source.strip("\n").split("\n")
        if cell.magic is not None:
            lines = [f"{prefix} MAGIC {ln}" if ln else f"{prefix} MAGIC" for ln in lines]
        title = cell.metadata.get("title")
        if title:
            lines = [f"{prefix} DBTITLE 1,{title}", *lines]
        parts.append("\n".join(lines))
    separator = f"\n\n{prefix} COMMAND ----------\n\n"
    return (f"{prefix} {HEADER}\n" + separator.join(parts)).encode()
