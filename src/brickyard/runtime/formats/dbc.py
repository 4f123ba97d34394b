"""Databricks archives (.dbc): a zip of NotebookV1 JSON files (.python/.sql/.scala/.r) and folders.

The NotebookV1 JSON is also the model embedded in HTML exports (see html.py), so the
command <-> cell mapping lives here.
"""
from __future__ import annotations

import html
import io
import json
import re
import uuid
import zipfile
from dataclasses import dataclass

from brickyard.runtime.formats.model import Cell, Notebook, NotebookFormatError, NotebookTooLarge, check_language

ENTRY_EXTENSION = {"PYTHON": "python", "SQL": "sql", "SCALA": "scala", "R": "r"}
EXTENSION_LANGUAGE = {f".{ext}": lang for lang, ext in ENTRY_EXTENSION.items()}
RAW_RESULT = "application/vnd.databricks.result+json"
_ANSIOUT_RE = re.compile(r'^<div class="ansiout">(.*)</div>$', re.S)
_DATA_URL_RE = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.S)


# ---- NotebookV1 JSON <-> model ------------------------------------------------------------

def _result_item_to_output(item: dict) -> dict:
    kind = item.get("type")
    data = item.get("data")
    if kind in ("ansi", "text") and isinstance(data, str):
        return {"output_type": "stream", "name": item.get("name") or "stdout", "text": data}
    if kind in ("html", "htmlSandbox") and isinstance(data, str):
        m = _ANSIOUT_RE.match(data)
        if m and kind == "html":
            return {"output_type": "stream", "name": "stdout", "text": html.unescape(m.group(1))}
        return {"output_type": "display_data", "data": {"text/html": data}, "metadata": {}}
    if kind == "image" and isinstance(data, str) and _DATA_URL_RE.match(data):
        mime, payload = _DATA_URL_RE.match(data).groups()
        return {"output_type": "display_data", "data": {mime: payload}, "metadata": {}}
    if kind == "mimeBundle" and isinstance(data, dict):
        out = {"output_type": item.get("outputType") or "display_data", "data": data,
               "metadata": item.get("metadata") or {}}
        if out["output_type"] == "execute_result":
            out["execution_count"] = item.get("executionCount")
        return out
    # Tables, widgets, plots by reference...: keep the result itself so it survives export.
    return {"output_type": "display_data", "data": {RAW_RESULT: item}, "metadata": {}}


def _output_to_result_item(out: dict) -> dict | None:
    kind = out.get("output_type")
    if kind == "stream":
        return {"type": "ansi", "data": out.get("text", ""), "name": out.get("name", "stdout")}
    if kind not in ("display_data", "execute_result"):
        return None
    data = out.get("data") or {}
    if kind == "display_data" and not out.get("metadata") and len(data) == 1:
        (mime, value), = data.items()
        if mime == RAW_RESULT and isinstance(value, dict):
            return value
        if mime == "text/html" and isinstance(value, str):
            return {"type": "html", "data": value}
        if mime.startswith("image/") and mime != "image/svg+xml" and isinstance(value, str):
            return {"type": "image", "data": f"data:{mime};base64,{value}"}
    item = {"type": "mimeBundle", "data": data, "metadata": out.get("metadata") or {}, "outputType": kind}
    if kind == "execute_result":
        item["executionCount"] = out.get("execution_count")
    return item


def command_to_cell(cmd: dict) -> Cell:
    """A NotebookV1 command as a model cell (outputs converted to nbformat dicts)."""
    source = cmd.get("command")
    if not isinstance(source, str):
        raise NotebookFormatError("Invalid notebook: a command has no 'command' text.")
    results = cmd.get("results")
    outputs: list[dict] = []
    if isinstance(results, dict):
        items = results.get("data") if results.get("type") == "listResults" else [results]
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict):
                outputs.append(_result_item_to_output(item))
    summary, trace = cmd.get("errorSummary"), cmd.get("error")
    if summary or trace:
        ename, sep, evalue = str(summary or "").partition(": ")
        if not sep:
            ename, evalue = "", str(summary or "")
        outputs.append({"output_type": "error", "ename": ename, "evalue": evalue,
                        "traceback": str(trace).split("\n") if trace else []})
    metadata = {}
    if cmd.get("commandTitle"):
        metadata["title"] = cmd["commandTitle"]
    guid = cmd.get("guid") or cmd.get("nuid")
    return Cell(source=source, outputs=outputs, metadata=metadata, id=guid if isinstance(guid, str) else None)


def notebook_from_json(doc: object, name: str | None = None) -> Notebook:
    """A NotebookV1 document as a model notebook."""
    if not isinstance(doc, dict) or not isinstance(doc.get("commands"), list):
        raise NotebookFormatError("Invalid notebook: expected a NotebookV1 object with a 'commands' list.")
    try:
        language = check_language(doc.get("language") or "python")
    except NotebookFormatError as exc:
        raise NotebookFormatError(f"Invalid notebook: {exc}") from None
    commands = [c for c in doc["commands"] if isinstance(c, dict) and c.get("subtype", "command") == "command"]
    commands.sort(key=lambda c: c.get("position") if isinstance(c.get("position"), (int, float)) else 0)
    nb_name = name if name is not None else str(doc.get("name") or "Untitled")
    return Notebook(name=nb_name, language=language, cells=[command_to_cell(c) for c in commands])


def cell_to_command(cell: Cell, index: int, orig_id: int) -> dict:
    """A model cell as a NotebookV1 command, with the fields Databricks writes."""
    items, error = [], None
    for out in cell.outputs:
        if out.get("output_type") == "error":
            error = out
            continue
        item = _output_to_result_item(out)
        if item is not None:
            items.append(item)
    results = None
    if items:
        results = {"type": "listResults", "data": items, "arguments": {}, "addedWidgets": {},
                   "removedWidgets": [], "datasetInfos": [], "metadata": {}}
    summary = None
    if error is not None:
        summary = f"{error.get('ename')}: {error.get('evalue', '')}" if error.get("ename") else error.get("evalue", "")
    guid = cell.id or str(uuid.uuid5(uuid.NAMESPACE_OID, f"brickyard/{orig_id}/{index}"))
    title = cell.metadata.get("title") or ""
    return {
        "version": "CommandV1", "origId": orig_id + index + 1, "guid": guid, "subtype": "command",
        "commandType": "auto", "position": float(index + 1), "command": cell.source,
        "commandVersion": 0, "state": "error" if error is not None else "finished",
        "results": results, "resultDbfsStatus": "INLINED_IN_TREE",
        "errorSummary": summary, "errorTraceType": "ansi" if error is not None else None,
        "error": "\n".join(error.get("traceback") or []) if error is not None else None,
        "workflows": [], "startTime": 0, "submitTime": 0, "finishTime": 0, "collapsed": False,
        "bindings": {}, "inputWidgets": {}, "displayType": "table", "width": "auto", "height": "auto",
        "xColumns": None, "yColumns": None, "pivotColumns": None, "pivotAggregation": None,
        "useConsistentColors": False, "customPlotOptions": {}, "commentThread": [],
        "commentsVisible": False, "parentHierarchy": [], "diffInserts": [], "diffDeletes": [],
        "globalVars": {}, "latestUser": "", "latestUserId": None, "commandTitle": title,
        "showCommandTitle": bool(title), "hideCommandCode": False, "hideCommandResult": False,
        "isLockedInExamMode": False, "iPythonMetadata": None, "metadata": {}, "streamStates": {},
        "datasetPreviewNameToCmdIdMap": {}, "tableResultIndex": None, "nuid": guid,
    }


def notebook_to_json(nb: Notebook, orig_id: int) -> dict:
    """A model notebook as a NotebookV1 document."""
    return {
        "version": "NotebookV1", "origId": orig_id, "name": nb.name, "language": nb.language.lower(),
        "commands": [cell_to_command(c, i, orig_id) for i, c in enumerate(nb.cells)],
        "dashboards": [], "guid": str(uuid.uuid5(uuid.NAMESPACE_OID, f"brickyard/{orig_id}")),
        "globalVars": {}, "iPythonMetadata": None, "inputWidgets": {},
        "notebookMetadata": {"pythonIndentUnit": 4},
    }


# ---- the archive ------------------------------------------------------------------------

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


def read_archive(data: bytes, max_member: int, max_total: int, max_entries: int = 10000) -> list[ArchiveEntry]:
    """Validate and parse a whole .dbc before anything is written (all-or-nothing imports).

    One top-level folder is the target itself, as is one top-level notebook.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        infos = zf.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError) as exc:
        raise NotebookFormatError(f"The content is not a DBC archive (zip): {exc}.") from None
    if len(infos) > max_entries:
        raise NotebookFormatError(f"The archive has more than {max_entries} entries.")
    total = 0
    folders: set[tuple[str, ...]] = set()
    notebooks: list[tuple[tuple[str, ...], zipfile.ZipInfo, str]] = []
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
        language = EXTENSION_LANGUAGE.get(f".{ext.lower()}") if dot else None
        if language is None or not stem:
            continue  # not a notebook (manifest, resources): Databricks skips these too
        if info.file_size > max_member:
            raise NotebookTooLarge(f"Notebook {info.filename} is larger than {max_member} bytes.")
        notebooks.append((tuple(parts[:-1]) + (stem,), info, language))
    if not notebooks and not folders:
        raise NotebookFormatError("The archive contains no notebooks.")
    parsed: dict[tuple[str, ...], Notebook] = {}
    for key, info, language in notebooks:
        try:
            with zf.open(info) as fh:
                raw = fh.read(max_member + 1)
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
            raise NotebookFormatError(f"Cannot read {info.filename} from the archive: {exc}.") from None
        if len(raw) > max_member:
            raise NotebookTooLarge(f"Notebook {info.filename} is larger than {max_member} bytes.")
        try:
            doc = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise NotebookFormatError(f"{info.filename} in the archive is not notebook JSON: {exc}.") from None
        try:
            nb = notebook_from_json(doc, name=key[-1])
        except NotebookFormatError as exc:
            raise NotebookFormatError(f"{info.filename}: {exc}") from None
        if isinstance(doc.get("language"), str) and doc["language"].upper() != language:
            nb.language = check_language(doc["language"])
        if key in parsed or key in folders:
            raise NotebookFormatError(f"The archive holds {'/'.join(key)} twice.")
        parsed[key] = nb
    for key in parsed:
        folders.update(key[:i] for i in range(1, len(key)))
    clash = next((k for k in parsed if k in folders), None)
    if clash:
        raise NotebookFormatError(f"The archive holds both a folder and a notebook named {'/'.join(clash)}.")
    return _rooted(folders, parsed)


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
