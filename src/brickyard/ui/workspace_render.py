"""Notebook cells and outputs as safe view models for the notebook page.

Every string that reaches the page is escaped by the template (Jinja autoescape) except the
markdown of `%md` cells, which `markdown_html` builds here from escaped pieces only. Images
become `data:` URLs of the image types browsers never run code from; HTML outputs go to the
page as text for a sandboxed `<iframe srcdoc>` (no scripts, opaque origin).
"""
from __future__ import annotations

import base64
import binascii
import html
import json
import re

from markupsafe import Markup

from brickyard.runtime.ansi import strip_ansi
from brickyard.runtime.formats import Cell, Notebook
from brickyard.runtime.mime import NOTEBOOK_EXIT_MIME, TABLE_MIME

RAW_RESULT = "application/vnd.databricks.result+json"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
MAX_TABLE_ROWS = 1000
MAX_TEXT_CHARS = 200_000


def _text(value: object) -> str:
    if isinstance(value, list):
        value = "".join(str(v) for v in value)
    text = strip_ansi(str(value or ""))
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + f"\n… ({len(text) - MAX_TEXT_CHARS} more characters not shown)"
    return text


def _b64(value: object) -> str | None:
    """Clean base64 (no whitespace), or None when it is not base64."""
    if isinstance(value, list):
        value = "".join(str(v) for v in value)
    if not isinstance(value, str):
        return None
    compact = "".join(value.split())
    try:
        base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None
    return compact


def _table_type(raw: object) -> str:
    """A column type for the header: Spark's JSON-encoded type names are shown plainly."""
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return value if isinstance(value, str) else (value.get("type", "") if isinstance(value, dict) else raw)
    if isinstance(raw, dict):
        return str(raw.get("type", ""))
    return str(raw or "")


def _cell_text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table_view(schema: object, rows: object, truncated: bool = False) -> dict | None:
    if not isinstance(schema, list) or not isinstance(rows, list):
        return None
    columns = [{"name": str(c.get("name", "")) if isinstance(c, dict) else str(c),
                "type": _table_type(c.get("type")) if isinstance(c, dict) else ""} for c in schema]
    body = [[_cell_text(v) for v in (r if isinstance(r, list) else [r])] for r in rows[:MAX_TABLE_ROWS]]
    return {"kind": "table", "columns": columns, "rows": body,
            "truncated": bool(truncated) or len(rows) > MAX_TABLE_ROWS}


def output_view(out: object) -> dict | None:
    """One nbformat output as {"kind": text|error|image|html|table|exit, ...} (None: nothing to show)."""
    if not isinstance(out, dict):
        return None
    kind = out.get("output_type")
    if kind == "stream":
        return {"kind": "text", "text": _text(out.get("text")), "stream": str(out.get("name") or "stdout")}
    if kind == "error":
        head = f"{out.get('ename') or ''}: {out.get('evalue') or ''}".strip(": ")
        trace = _text("\n".join(str(t) for t in out.get("traceback") or []))
        return {"kind": "error", "summary": _text(head), "trace": trace}
    if kind not in ("display_data", "execute_result"):
        return None
    data = out.get("data") or {}
    if not isinstance(data, dict):
        return None
    if isinstance(data.get(NOTEBOOK_EXIT_MIME), dict):
        return {"kind": "exit", "text": _text(data[NOTEBOOK_EXIT_MIME].get("value"))}
    table = data.get(TABLE_MIME)
    if isinstance(table, dict):
        view = table_view(table.get("schema"), table.get("data"), table.get("truncated", False))
        if view:
            return view
    for mime in IMAGE_TYPES:
        payload = _b64(data.get(mime))
        if payload:
            return {"kind": "image", "src": f"data:{mime};base64,{payload}"}
    svg = data.get("image/svg+xml")
    if isinstance(svg, (str, list)):
        # An SVG in <img> never runs its scripts.
        encoded = base64.b64encode(_text(svg).encode()).decode()
        return {"kind": "image", "src": f"data:image/svg+xml;base64,{encoded}"}
    raw = data.get(RAW_RESULT)
    if isinstance(raw, dict):
        if raw.get("type") == "table":
            view = table_view(raw.get("schema"), raw.get("data"), raw.get("truncated", False))
            if view:
                return view
        if raw.get("type") in ("html", "htmlSandbox") and isinstance(raw.get("data"), str):
            return {"kind": "html", "html": raw["data"], "height": _frame_height(raw["data"])}
        return {"kind": "text", "text": _text(json.dumps(raw, ensure_ascii=False)[:5000]), "stream": "result"}
    if isinstance(data.get("text/html"), (str, list)):
        doc = _text(data["text/html"])
        return {"kind": "html", "html": doc, "height": _frame_height(doc)}
    for mime in ("text/markdown", "text/plain", "application/json"):
        if mime in data:
            value = data[mime]
            text = value if isinstance(value, (str, list)) else json.dumps(value, ensure_ascii=False, indent=2)
            return {"kind": "text", "text": _text(text), "stream": "result"}
    return None


def _frame_height(doc: str) -> int:
    """A first guess at the height an HTML output needs (the frame runs no script to measure it)."""
    rows = doc.count("<tr") + doc.count("<br") + doc.count("<p") + doc.count("<li") + doc.count("<h")
    rows += doc.count("<div") // 2 + 1
    return max(60, min(600, 28 * rows + 24))


def cell_view(cell: Cell, index: int, language: str) -> dict:
    lang = cell.language(language)
    view = {
        "index": index,
        "language": lang.lower(),
        "source": cell.source,
        "markdown": None,
        "title": str(cell.metadata.get("title") or ""),
        "outputs": [v for v in (output_view(o) for o in cell.outputs) if v is not None],
        "execution_count": cell.execution_count,
    }
    if cell.is_markdown:
        view["markdown"] = markdown_html(cell.body)
    return view


def notebook_view(nb: Notebook) -> list[dict]:
    return [cell_view(c, i, nb.language) for i, c in enumerate(nb.cells, 1)]


# -- a small, safe markdown subset for %md cells --------------------------------------------------

_INLINE = re.compile(
    r"`(?P<code>[^`]+)`"
    r"|\*\*(?P<bold>.+?)\*\*|__(?P<bold2>.+?)__"
    r"|(?<![\w*])\*(?P<em>[^*\n]+)\*(?!\w)|(?<![\w_])_(?P<em2>[^_\n]+)_(?!\w)"
    r"|!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)"
    r"|\[(?P<label>[^\]]+)\]\((?P<href>[^)\s]+)\)"
)


def _safe_url(url: str, images: bool = False) -> str | None:
    lower = url.strip().lower()
    if lower.startswith(("http://", "https://", "/", "#")) and not lower.startswith("//"):
        return url.strip()
    if images and re.match(r"^data:image/(png|jpeg|gif|webp);base64,[a-z0-9+/=]+$", lower):
        return url.strip()
    return None


def _inline(text: str) -> str:
    out, pos = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[pos:m.start()]))
        pos = m.end()
        if m.group("code") is not None:
            out.append(f"<code>{html.escape(m.group('code'))}</code>")
        elif m.group("bold") is not None or m.group("bold2") is not None:
            out.append(f"<strong>{_inline(m.group('bold') or m.group('bold2'))}</strong>")
        elif m.group("em") is not None or m.group("em2") is not None:
            out.append(f"<em>{_inline(m.group('em') or m.group('em2'))}</em>")
        elif m.group("src") is not None:
            src = _safe_url(m.group("src"), images=True)
            out.append(f'<img alt="{html.escape(m.group("alt"))}" src="{html.escape(src)}">' if src
                       else html.escape(m.group(0)))
        else:
            href = _safe_url(m.group("href"))
            out.append(f'<a href="{html.escape(href)}" rel="noopener noreferrer" target="_blank">'
                       f'{_inline(m.group("label"))}</a>' if href else html.escape(m.group(0)))
    out.append(html.escape(text[pos:]))
    return "".join(out)


def markdown_html(text: str) -> Markup:
    """Headings, paragraphs, lists, fenced code, quotes, rules, emphasis, code spans, links, images.

    Raw HTML in the markdown is shown as text (escaped), never interpreted.
    """
    lines = strip_ansi(text).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    para: list[str] = []
    list_kind: str | None = None
    i = 0

    def flush_para() -> None:
        if para:
            out.append("<p>" + "<br>".join(_inline(p) for p in para) + "</p>")
            para.clear()

    def close_list() -> None:
        nonlocal list_kind
        if list_kind:
            out.append(f"</{list_kind}>")
            list_kind = None

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush_para()
            close_list()
            code = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                code.append(lines[i])
                i += 1
            out.append(f"<pre><code>{html.escape(chr(10).join(code))}</code></pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", stripped)
        bullet = re.match(r"^[-*+]\s+(.*)$", stripped)
        number = re.match(r"^\d+[.)]\s+(.*)$", stripped)
        if not stripped:
            flush_para()
            close_list()
        elif heading:
            flush_para()
            close_list()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
        elif re.match(r"^(-{3,}|\*{3,}|_{3,})$", stripped):
            flush_para()
            close_list()
            out.append("<hr>")
        elif bullet or number:
            flush_para()
            kind = "ul" if bullet else "ol"
            if list_kind != kind:
                close_list()
                out.append(f"<{kind}>")
                list_kind = kind
            out.append(f"<li>{_inline((bullet or number).group(1))}</li>")
        elif stripped.startswith(">"):
            flush_para()
            close_list()
            out.append(f"<blockquote>{_inline(stripped.lstrip('>').strip())}</blockquote>")
        else:
            close_list()
            para.append(stripped)
        i += 1
    flush_para()
    close_list()
    return Markup("\n".join(out))
