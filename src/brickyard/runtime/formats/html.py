"""Databricks HTML exports: the NotebookV1 model as base64 of URL-encoded JSON in a script variable."""
from __future__ import annotations

import base64
import binascii
import html
import json
import re
from urllib.parse import quote, unquote

from brickyard.runtime.ansi import strip_ansi
from brickyard.runtime.formats.dbc import notebook_from_json, notebook_to_json
from brickyard.runtime.formats.model import Notebook, NotebookFormatError
from brickyard.runtime.formats.source import decode_text

MODEL_VAR = "__DATABRICKS_NOTEBOOK_MODEL"
_MODEL_RE = re.compile(MODEL_VAR + r"""\s*=\s*['"]([^'"]*)['"]""")
# What JavaScript's encodeURIComponent leaves alone; Databricks' exporter encodes with it.
_URI_SAFE = "-_.!~*'()"


def has_model(data: bytes) -> bool:
    return MODEL_VAR.encode() in data


def read_html(data: bytes, name: str) -> Notebook:
    """Parse a Databricks HTML export (the embedded model; the page itself is ignored)."""
    text = decode_text(data, "HTML")
    m = _MODEL_RE.search(text)
    if not m:
        raise NotebookFormatError(f"The content is not a Databricks HTML export (no {MODEL_VAR}).")
    encoded = m.group(1)
    decoded = None
    # Job-run exports URL-encode the base64 once more; workspace exports do not.
    for candidate in (encoded, unquote(encoded)):
        try:
            decoded = base64.b64decode(candidate, validate=True).decode("utf-8")
            break
        except (binascii.Error, ValueError):
            continue
    if decoded is None:
        raise NotebookFormatError(f"The {MODEL_VAR} in the HTML export is not valid base64.")
    try:
        doc = json.loads(unquote(decoded))
    except json.JSONDecodeError as exc:
        raise NotebookFormatError(f"The notebook model in the HTML export is not JSON: {exc}.") from None
    return notebook_from_json(doc, name=name)


def _render_output(out: dict) -> str:
    kind = out.get("output_type")
    if kind == "stream":
        return f'<pre class="output">{html.escape(strip_ansi(out.get("text", "")))}</pre>'
    if kind == "error":
        text = f"{out.get('ename', '')}: {out.get('evalue', '')}\n" + "\n".join(out.get("traceback") or [])
        return f'<pre class="output error">{html.escape(strip_ansi(text))}</pre>'
    data = out.get("data") or {}
    for mime in ("image/png", "image/jpeg", "image/gif"):
        if isinstance(data.get(mime), str):
            return f'<img class="output" alt="" src="data:{mime};base64,{html.escape(data[mime])}">'
    if isinstance(data.get("text/html"), str):
        # Sandboxed: exported outputs must not run scripts in the page that shows them.
        return f'<iframe class="output" sandbox srcdoc="{html.escape(data["text/html"])}"></iframe>'
    if isinstance(data.get("text/plain"), str):
        return f'<pre class="output">{html.escape(strip_ansi(data["text/plain"]))}</pre>'
    return ""


def write_html(nb: Notebook, orig_id: int) -> bytes:
    """A self-contained HTML export: the model for re-import plus a static rendering."""
    model = json.dumps(notebook_to_json(nb, orig_id), ensure_ascii=False, separators=(",", ":"))
    encoded = base64.b64encode(quote(model, safe=_URI_SAFE).encode("ascii")).decode("ascii")
    cells = []
    for index, cell in enumerate(nb.cells, 1):
        outputs = "".join(_render_output(o) for o in cell.outputs)
        cells.append(
            f'<div class="command" id="cmd-{index}"><div class="label">Cmd {index}</div>'
            f'<pre class="source">{html.escape(cell.source)}</pre>{outputs}</div>'
        )
    title = html.escape(nb.name)
    page = f"""<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<meta name="databricks-html-version" content="1">
<title>{title} - Databricks</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
.command {{ border: 1px solid #ddd; margin: 1em 0; padding: .5em; }}
.label {{ color: #888; font-size: 80%; }}
pre {{ white-space: pre-wrap; }}
.source {{ background: #f6f6f6; padding: .5em; }}
.error {{ color: #b00; }}
iframe.output {{ width: 100%; border: 0; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="language">Language: {nb.language.lower()}</p>
{"".join(cells)}
<script>
var {MODEL_VAR} = '{encoded}';
</script>
</body>
</html>
"""
    return page.encode()
