"""The NotebookV1 JSON of Databricks: the files of a .dbc archive and the model in HTML exports.

A command becomes a model cell; its ``results`` (listResults of ansi/html/image/mimeBundle
items, or older single html/table results) and ``errorSummary``/``error`` become nbformat
outputs. Results with no nbformat equivalent (tables, widgets) are kept verbatim under
``application/vnd.databricks.result+json`` so that they survive a re-export.
"""
from __future__ import annotations

import html
import re
import uuid

from brickyard.runtime.formats.model import Cell, Notebook, NotebookFormatError, check_language

ENTRY_EXTENSION = {"PYTHON": "python", "SQL": "sql", "SCALA": "scala", "R": "r"}
RAW_RESULT = "application/vnd.databricks.result+json"
_ANSIOUT_RE = re.compile(r'^<div class="ansiout">(.*)</div>$', re.S)
_DATA_URL_RE = re.compile(r"^data:(image/[\w.+-]+);base64,(.*)$", re.S)


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
