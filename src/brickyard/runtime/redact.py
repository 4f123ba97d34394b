"""Secret redaction: values read through dbutils.secrets (and the kernel's token) never reach output.

Every message the kernel sends (stream text, display data, execute results, errors and the
execute reply) passes through ``jupyter_client.Session.send``; patching it once covers all
output channels. Values are replaced as exact substrings, as Databricks does.
"""
from __future__ import annotations

import re
import threading

REDACTED = "[REDACTED]"

_values: set[str] = set()
_lock = threading.Lock()
_installed = False


# Fragments of a binary secret shorter than this are too common in ordinary output to hide.
MIN_FRAGMENT = 6
_READABLE_RUN = re.compile(r"[^\x00-\x1f\x7f-\x9f\ufffd]+")


def _remember(value: str) -> None:
    if value.strip():
        _values.add(value)
        stripped = value.strip()
        if stripped != value:
            _values.add(stripped)


def _forms_of_bytes(value: bytes) -> tuple[list[str], list[str]]:
    """How printing a bytes secret can show it: whole forms, and fragments worth hiding when long enough.

    ``print(b)`` and a cell's result show ``repr(b)``; code often decodes it as latin-1 or as UTF-8
    with errors replaced, ignored or backslash-escaped; the printable runs of valid UTF-8 (between
    undecodable bytes and control characters) are the readable parts of the value, shown by slices.
    """
    whole = [repr(value)[2:-1], value.decode("latin-1")]
    try:
        whole.append(value.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    parts = [value.decode("utf-8", errors) for errors in ("replace", "ignore", "backslashreplace")]
    parts += _READABLE_RUN.findall(value.decode("utf-8", "replace"))
    parts.append(value.hex())
    # The repr of a decoded string escapes what it cannot print (e.g. '\x00').
    for text in (*whole[1:], *parts[:3]):
        parts.append(repr(text)[1:-1])
    return whole, parts


def add(value: str | bytes | None) -> None:
    """Remember a value that must never appear in output (bytes: every form printing may give it)."""
    with _lock:
        if isinstance(value, (bytes, bytearray)):
            whole, parts = _forms_of_bytes(bytes(value))
            for text in whole:
                _remember(text)
            for text in parts:
                if len(text.strip()) >= MIN_FRAGMENT:
                    _remember(text)
        elif isinstance(value, str):
            _remember(value)


def redact_text(text: str) -> str:
    # Longest first, so a secret that contains another is replaced whole.
    with _lock:
        values = sorted(_values, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def redact(obj):  # noqa: ANN001, ANN201
    """A copy of obj (str / dict / list nesting) with every remembered value replaced."""
    if not _values:
        return obj
    if isinstance(obj, str):
        return redact_text(obj)
    if isinstance(obj, dict):
        return {k: redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact(v) for v in obj)
    return obj


def install() -> None:
    """Redact every message this kernel process sends to its clients."""
    global _installed
    if _installed:
        return
    from jupyter_client.session import Session

    original = Session.send

    def send(self, stream, msg_or_type, content=None, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if _values:
            if isinstance(msg_or_type, dict):
                msg_or_type = {**msg_or_type, "content": redact(msg_or_type.get("content"))}
            else:
                content = redact(content)
        return original(self, stream, msg_or_type, content, *args, **kwargs)

    Session.send = send
    _installed = True
