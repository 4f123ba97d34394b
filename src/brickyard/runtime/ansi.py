"""Terminal colour codes: IPython tracebacks and coloured logs carry them; HTML and text views drop them."""
from __future__ import annotations

import re

# CSI sequences (ESC [ params intermediates final), e.g. ESC[0;31m, and OSC ones (ESC ] ... BEL or ESC \).
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)
