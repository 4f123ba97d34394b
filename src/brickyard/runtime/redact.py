"""Secret redaction: values read through dbutils.secrets (and the kernel's token) never reach output.

Every message the kernel sends (stream text, display data, execute results, errors and the
execute reply) passes through ``jupyter_client.Session.send``; patching it once covers all
output channels. Values are replaced as exact substrings, as Databricks does.
"""
from __future__ import annotations

import threading

REDACTED = "[REDACTED]"

_values: set[str] = set()
_lock = threading.Lock()
_installed = False


def add(value: str | bytes | None) -> None:
    """Remember a value that must never appear in output."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode()
        except UnicodeDecodeError:
            return
    if isinstance(value, str) and value.strip():
        with _lock:
            _values.add(value)
            stripped = value.strip()
            if stripped != value:
                _values.add(stripped)


def redact_text(text: str) -> str:
    # Longest first, so a secret that contains another is replaced whole.
    for value in sorted(_values, key=len, reverse=True):
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
