"""Zip archives of notebooks: .dbc (NotebookV1 JSON files) and zips of source files.

Reading validates and parses the whole archive before anything is written, so an import
is all-or-nothing: unsafe member names (``..``, absolute, drive letters, backslashes),
members or totals above the limits (zip bombs) and bad notebooks fail the whole archive.
"""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass

from brickyard.runtime.formats.dbc import ENTRY_EXTENSION, notebook_from_json, notebook_to_json
from brickyard.runtime.formats.model import Notebook, NotebookFormatError, NotebookTooLarge
from brickyard.runtime.formats.source import EXTENSION, EXTENSION_LANGUAGE, header_prefix, read_source, write_source

DBC_LANGUAGE = {f".{ext}": lang for lang, ext in ENTRY_EXTENSION.items()}


@dataclass
class ArchiveEntry:
    """A folder (notebook None) or a notebook, at a path relative to the import target ('' = the target)."""

    path: str
    notebook: Notebook | None


def _safe_parts(name: str) -> list[str]:
    if "\x00" in name or "\\" in name or name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise NotebookFormatError(f"Unsafe member name in archive: {name[:200]!r}.")
    parts = [p for p in name.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise NotebookFormatError(f"Unsafe member name in archive: {name[:200]!r}.")
    return parts


def _parse_dbc_member(raw: bytes, stem: str, ext: str, member: str) -> Notebook:
    try:
        doc = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookFormatError(f"{member} in the archive is not notebook JSON: {exc}.") from None
    nb = notebook_from_json(doc, name=stem)
    if not isinstance(doc.get("language"), str):
        nb.language = DBC_LANGUAGE[ext]
    return nb


def _parse_source_member(raw: bytes, stem: str, ext: str, member: str) -> Notebook | None:
    # Without the header a .py is a plain file, as for AUTO imports: not a notebook.
    if header_prefix(raw) is None:
        return None
    return read_source(raw, stem, extension=ext)


def read_archive(data: bytes, max_member: int, max_total: int, max_entries: int = 10000,
                 kind: str = "DBC") -> list[ArchiveEntry]:
    """The folders and notebooks of a .dbc (kind DBC) or a zip of source files (kind SOURCE).

    One top-level folder is the target itself, as is one top-level notebook.
    """
    extensions, parse = (DBC_LANGUAGE, _parse_dbc_member) if kind == "DBC" else (
        EXTENSION_LANGUAGE, _parse_source_member)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise NotebookFormatError(f"The content is not a {kind} archive (zip): {exc}.") from None
    if len(infos) > max_entries:
        raise NotebookFormatError(f"The archive has more than {max_entries} entries.")
    total = 0
    folders: set[tuple[str, ...]] = set()
    members: list[tuple[tuple[str, ...], zipfile.ZipInfo, str]] = []
    for info in infos:
        parts = _safe_parts(info.filename)
        if not parts:
            continue
        total += info.file_size
        if total > max_total:
            raise NotebookTooLarge(f"The archive expands to more than {max_total} bytes.")
        if info.is_dir():
            folders.add(tuple(parts))
            continue
        stem, dot, ext = parts[-1].rpartition(".")
        ext = f".{ext.lower()}"
        if not dot or not stem or ext not in extensions:
            continue  # not a notebook (manifest, resources): Databricks skips these too
        if info.file_size > max_member:
            raise NotebookTooLarge(f"Notebook {info.filename} is larger than {max_member} bytes.")
        members.append((tuple(parts[:-1]) + (stem,), info, ext))
    notebooks: dict[tuple[str, ...], Notebook] = {}
    for key, info, ext in members:
        try:
            with zf.open(info) as fh:
                # The declared size bounds what zipfile inflates; read one byte more to be sure.
                raw = fh.read(max_member + 1)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise NotebookFormatError(f"Cannot read {info.filename} from the archive: {exc}.") from None
        if len(raw) > max_member:
            raise NotebookTooLarge(f"Notebook {info.filename} is larger than {max_member} bytes.")
        if key in notebooks:
            raise NotebookFormatError(f"The archive holds {'/'.join(key)} twice.")
        try:
            nb = parse(raw, key[-1], ext, info.filename)
        except NotebookFormatError as exc:
            raise NotebookFormatError(f"{info.filename}: {exc}") from None
        if nb is not None:
            notebooks[key] = nb
    if not notebooks and not folders:
        raise NotebookFormatError("The archive contains no notebooks.")
    for key in notebooks:
        folders.update(key[:i] for i in range(1, len(key)))
    clash = next((k for k in notebooks if k in folders), None)
    if clash:
        raise NotebookFormatError(f"The archive holds both a folder and a notebook named {'/'.join(clash)}.")
    return _rooted(folders, notebooks)


def _rooted(folders: set[tuple[str, ...]], notebooks: dict[tuple[str, ...], Notebook]) -> list[ArchiveEntry]:
    tops = {k[0] for k in folders} | {k[0] for k in notebooks}
    strip = 1 if len(tops) == 1 else 0
    if strip and len(notebooks) == 1 and not folders and len(next(iter(notebooks))) == 1:
        return [ArchiveEntry("", next(iter(notebooks.values())))]
    entries = [ArchiveEntry("/".join(k[strip:]), None) for k in folders if k[strip:]]
    entries += [ArchiveEntry("/".join(k[strip:]), nb) for k, nb in notebooks.items()]
    entries.sort(key=lambda e: (e.path.count("/"), e.path))
    return entries


def write_archive(root: str, entries: list[tuple[str, Notebook | None, int]]) -> bytes:
    """A .dbc of (relative path, notebook or None for a folder, object id) under folder ``root``.

    With root '' the single entry is a notebook at the top of the archive.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, nb, object_id in entries:
            path = "/".join(p for p in (root, rel) if p)
            if nb is None:
                zf.writestr(path + "/", b"")
                continue
            doc = notebook_to_json(nb, object_id)
            zf.writestr(f"{path}.{ENTRY_EXTENSION[nb.language]}", json.dumps(doc, ensure_ascii=False))
    return buf.getvalue()


def write_source_zip(root: str, entries: list[tuple[str, Notebook | bytes]]) -> bytes:
    """A zip of source files (notebooks) and raw files under folder ``root``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, item in entries:
            if isinstance(item, Notebook):
                zf.writestr(f"{root}/{rel}.{EXTENSION[item.language]}", write_source(item))
            else:
                zf.writestr(f"{root}/{rel}", item)
    return buf.getvalue()

