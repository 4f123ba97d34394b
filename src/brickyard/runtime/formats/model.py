"""The canonical notebook model: what the workspace stores and the runtime executes.

A notebook is a language and an ordered list of cells. A cell's ``source`` is the command
text exactly as Databricks keeps it, magic line included (``"%sql\\nSELECT 1"``,
``"%md # Title"``, ``"%run ./other"``); outputs are nbformat v4 output dicts
(``stream``, ``display_data``, ``execute_result``, ``error``) with multi-line strings
joined. Every reader (source, ipynb, dbc, html) produces this model and every writer
consumes it; ``dumps``/``loads`` give the canonical JSON stored in the database.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

LANGUAGES = ("PYTHON", "SQL", "SCALA", "R")
# Magics that switch a cell to another language, and what they switch it to.
MAGIC_LANGUAGES = {
    "python": "PYTHON",
    "sql": "SQL",
    "scala": "SCALA",
    "r": "R",
    "md": "MARKDOWN",
    "md-sandbox": "MARKDOWN",
    "sh": "SHELL",
    "fs": "FS",
    "run": "RUN",
    "pip": "PIP",
}
_MAGIC_RE = re.compile(r"^%([A-Za-z][\w-]*)(?=[ \t\n]|$)")
CANONICAL_VERSION = 1


class NotebookFormatError(ValueError):
    """Content that is not a valid notebook in the declared format."""


class NotebookTooLarge(NotebookFormatError):
    """Content (or an archive's uncompressed members) above the size limits."""


@dataclass
class Cell:
    """One command: its full source (magic line included), outputs and metadata."""

    source: str
    outputs: list[dict] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    execution_count: int | None = None
    id: str | None = None

    @property
    def magic(self) -> str | None:
        """The cell magic without '%' (``md``, ``sql``, ``run``...), or None for plain code."""
        m = _MAGIC_RE.match(self.source.lstrip("\n"))
        return m.group(1).lower() if m else None

    @property
    def magic_args(self) -> str:
        """The rest of the magic line (``./other $x=1`` for ``%run ./other $x=1``)."""
        if self.magic is None:
            return ""
        first = self.source.lstrip("\n").split("\n", 1)[0]
        return first[len(self.magic) + 1:].strip()

    @property
    def body(self) -> str:
        """The source without the magic line (for ``%md # T``, the text after ``%md``)."""
        if self.magic is None:
            return self.source
        text = self.source.lstrip("\n")
        first, _, rest = text.partition("\n")
        inline = first[len(self.magic) + 1:].lstrip(" \t")
        if not inline:
            return rest
        return inline + ("\n" + rest if rest else "")

    @property
    def is_markdown(self) -> bool:
        return self.magic in ("md", "md-sandbox")

    def language(self, default: str) -> str:
        """The cell's language: the magic's (MARKDOWN, SQL, SHELL, RUN...) or the notebook's."""
        magic = self.magic
        if magic is None:
            return default
        return MAGIC_LANGUAGES.get(magic, default)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"source": self.source, "outputs": self.outputs, "metadata": self.metadata}
        if self.execution_count is not None:
            data["execution_count"] = self.execution_count
        if self.id is not None:
            data["id"] = self.id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Cell":
        return cls(
            source=data.get("source", ""),
            outputs=list(data.get("outputs") or []),
            metadata=dict(data.get("metadata") or {}),
            execution_count=data.get("execution_count"),
            id=data.get("id"),
        )


@dataclass
class Notebook:
    """A notebook: name, default language (PYTHON/SQL/SCALA/R), cells, notebook metadata."""

    name: str
    language: str
    cells: list[Cell] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": CANONICAL_VERSION,
            "name": self.name,
            "language": self.language,
            "metadata": self.metadata,
            "cells": [c.to_dict() for c in self.cells],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Notebook":
        return cls(
            name=data.get("name", ""),
            language=check_language(data.get("language") or "PYTHON"),
            cells=[Cell.from_dict(c) for c in data.get("cells") or []],
            metadata=dict(data.get("metadata") or {}),
        )


def check_language(value: object) -> str:
    """The upper-case language name; anything else is a NotebookFormatError."""
    if isinstance(value, str) and value.upper() in LANGUAGES:
        return value.upper()
    raise NotebookFormatError(f"Unknown notebook language {value!r}; use one of {', '.join(LANGUAGES)}.")


def dumps(nb: Notebook) -> bytes:
    """The canonical JSON of a notebook (sorted keys, compact, UTF-8)."""
    return json.dumps(nb.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def loads(data: bytes | str) -> Notebook:
    """A notebook from its canonical JSON."""
    return Notebook.from_dict(json.loads(data))
