"""Jupyter notebooks (.ipynb, nbformat 4.x) with their outputs."""
from __future__ import annotations

import copy
import json

from brickyard.runtime.formats.model import Cell, Notebook, NotebookFormatError

VND_NOTEBOOK = "application/vnd.databricks.v1+notebook"
RAW_FLAG = "jupyter.raw"
ATTACHMENTS = "jupyter.attachments"
_KERNEL_LANGUAGES = {"python": "PYTHON", "python3": "PYTHON", "sql": "SQL", "scala": "SCALA", "r": "R", "ir": "R"}
_SPLIT_MIMES = {"application/javascript", "image/svg+xml"}


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _join(value: object) -> object:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value


def _text(value: object, what: str) -> str:
    value = _join(value if value is not None else "")
    if not isinstance(value, str):
        raise NotebookFormatError(f"Invalid Jupyter notebook: {what} must be a string or a list of strings.")
    return value


def _read_output(out: object) -> dict:
    if not isinstance(out, dict) or not isinstance(out.get("output_type"), str):
        raise NotebookFormatError("Invalid Jupyter notebook: every output needs an output_type.")
    out = copy.deepcopy(out)
    kind = out["output_type"]
    if kind == "stream":
        out["text"] = _text(out.get("text"), "stream text")
        out.setdefault("name", "stdout")
    elif kind in ("display_data", "execute_result"):
        data = out.get("data") or {}
        if not isinstance(data, dict):
            raise NotebookFormatError("Invalid Jupyter notebook: output data must be an object.")
        out["data"] = {k: v if _is_json_mime(k) else _join(v) for k, v in data.items()}
        out.setdefault("metadata", {})
    elif kind == "error":
        out["traceback"] = [str(t) for t in out.get("traceback") or []]
        out.setdefault("ename", "")
        out.setdefault("evalue", "")
    return out


def _language(meta: dict) -> str:
    candidates = [
        (meta.get(VND_NOTEBOOK) or {}).get("language"),
        (meta.get("kernelspec") or {}).get("language"),
        (meta.get("language_info") or {}).get("name"),
    ]
    for value in candidates:
        if isinstance(value, str) and value.lower() in _KERNEL_LANGUAGES:
            return _KERNEL_LANGUAGES[value.lower()]
    return "PYTHON"


def read_jupyter(data: bytes, name: str) -> Notebook:
    """Parse an .ipynb (nbformat 4.x); outputs are kept, lists of lines are joined."""
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NotebookFormatError(f"The content is not a valid Jupyter notebook (bad JSON: {exc}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise NotebookFormatError("The content is not a valid Jupyter notebook (no 'cells' list).")
    if doc.get("nbformat") != 4:
        raise NotebookFormatError(f"Only nbformat 4 notebooks can be imported (got nbformat {doc.get('nbformat')!r}).")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, dict):
        raise NotebookFormatError("Invalid Jupyter notebook: metadata must be an object.")
    language = _language(meta)
    meta = copy.deepcopy(meta)
    # The writer regenerates these from the model; keep only what it cannot.
    vnd = meta.pop(VND_NOTEBOOK, None)
    if isinstance(vnd, dict):
        vnd = {k: v for k, v in vnd.items() if k not in ("language", "notebookName")}
        if vnd:
            meta[VND_NOTEBOOK] = vnd
    if meta.get("language_info") == {"name": language.lower()}:
        del meta["language_info"]
    return Notebook(name=name, language=language, cells=[_read_cell(c) for c in doc["cells"]], metadata=meta)


def _read_cell(raw: object) -> Cell:
    if not isinstance(raw, dict) or raw.get("cell_type") not in ("code", "markdown", "raw"):
        raise NotebookFormatError("Invalid Jupyter notebook: every cell needs cell_type code, markdown or raw.")
    text = _text(raw.get("source"), "cell source")
    metadata = copy.deepcopy(raw.get("metadata") or {})
    if not isinstance(metadata, dict):
        raise NotebookFormatError("Invalid Jupyter notebook: cell metadata must be an object.")
    if raw.get("attachments"):
        metadata[ATTACHMENTS] = copy.deepcopy(raw["attachments"])
    cell_id = raw.get("id") if isinstance(raw.get("id"), str) else None
    if raw["cell_type"] == "markdown":
        return Cell(source="%md\n" + text, metadata=metadata, id=cell_id)
    if raw["cell_type"] == "raw":
        metadata[RAW_FLAG] = True
        return Cell(source=text, metadata=metadata, id=cell_id)
    outputs = raw.get("outputs") or []
    if not isinstance(outputs, list):
        raise NotebookFormatError("Invalid Jupyter notebook: outputs must be a list.")
    count = raw.get("execution_count")
    return Cell(
        source=text,
        outputs=[_read_output(o) for o in outputs],
        metadata=metadata,
        execution_count=count if isinstance(count, int) else None,
        id=cell_id,
    )


def _lines(text: str) -> list[str]:
    return text.splitlines(True)


def _write_output(out: dict) -> dict:
    out = copy.deepcopy(out)
    if out.get("output_type") == "stream" and isinstance(out.get("text"), str):
        out["text"] = _lines(out["text"])
    elif out.get("output_type") in ("display_data", "execute_result"):
        out["data"] = {
            k: _lines(v) if isinstance(v, str) and (k.startswith("text/") or k in _SPLIT_MIMES) else v
            for k, v in (out.get("data") or {}).items()
        }
    return out


def write_jupyter(nb: Notebook) -> bytes:
    """The .ipynb form of a notebook (nbformat 4.4, or 4.5 when cells carry ids)."""
    meta = copy.deepcopy(nb.metadata)
    vnd = dict(meta.get(VND_NOTEBOOK) or {})
    vnd.update({"language": nb.language.lower(), "notebookName": nb.name})
    meta[VND_NOTEBOOK] = vnd
    meta.setdefault("language_info", {"name": nb.language.lower()})
    with_ids = any(c.id for c in nb.cells)
    cells = []
    for index, cell in enumerate(nb.cells):
        metadata = copy.deepcopy(cell.metadata)
        attachments = metadata.pop(ATTACHMENTS, None)
        raw = metadata.pop(RAW_FLAG, False)
        if raw:
            out = {"cell_type": "raw", "metadata": metadata, "source": _lines(cell.source)}
        elif cell.magic == "md" and not cell.outputs:
            out = {"cell_type": "markdown", "metadata": metadata, "source": _lines(cell.body)}
        else:
            out = {
                "cell_type": "code",
                "execution_count": cell.execution_count,
                "metadata": metadata,
                "outputs": [_write_output(o) for o in cell.outputs],
                "source": _lines(cell.source),
            }
        if attachments and out["cell_type"] != "code":
            out["attachments"] = attachments
        if with_ids:
            out["id"] = cell.id or f"cell-{index}"
        cells.append(out)
    doc = {"cells": cells, "metadata": meta, "nbformat": 4, "nbformat_minor": 5 if with_ids else 4}
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()

