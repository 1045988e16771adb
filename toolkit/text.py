"""How a name from the data is shown to a reader: every character kept, none obeyed.

A file or folder name may hold any character but "/" and NUL: escape sequences that
recolour, retitle or clear a terminal, a bell, a carriage return that overwrites the line,
bidi overrides that reverse what a reader sees ("invoice\\u202egpj.exe" reads as
"invoiceexe.jpg"). Wherever a name is shown (terminal lines, report.html, plots) those
characters are written as escapes; the manifest, report.json and run.json keep the name
itself, because it is data.
"""

from __future__ import annotations

import re

#: C0 and C1 controls and DEL; the Arabic letter mark, left-to-right and right-to-left
#: marks; line and paragraph separators; bidi embeddings, overrides and isolates; lone
#: surrogates (how Python holds the bytes of a name that is not valid UTF-8).
_OBEYED = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_controls(text: str) -> str:
    """`text` with every character a terminal or a bidi renderer would obey escaped.

    `\\t`, `\\n`, `\\r`; `\\xNN` for other controls and for undecodable bytes (as the
    manifest spells them); `\\uNNNN` for the rest. Every other character is left as it is.
    """
    return _OBEYED.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for one undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
