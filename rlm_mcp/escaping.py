"""Untrusted text made safe to show on one line: file names, CSV headers, variable names, trace fields.

Names and paths come from files and from model-written code, so an attacker chooses them. Shown raw, a
newline forges a line of our own ("Note: ..."), an ANSI escape repaints a terminal, a bidi override
reorders what a reader sees, and zero-width or tag characters hide text a model still reads. `printable`
shows each such character as a visible escape in Python's notation (\\n, \\x1b, \\u202e, \\U000e0041), so
the text stays one line and every character in it is seen. A backslash is left as it is: the escapes are
for a reader, not for parsing back.

Standard library only, and no Python loop over the text (one regex substitution): it runs on texts of any
length, and the REPL worker may import it.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate

# Every character of Unicode's categories Cc (controls), Cf (format), Zl, Zp (line and paragraph
# separators) and Cs (lone surrogates: JSON can carry them, and they cannot be encoded): among them the C0
# and C1 controls, DEL, zero-width characters, LRM/RLM, bidi embeddings, overrides and isolates, the byte
# order mark, and the tag characters (invisible letters, used to smuggle instructions). A soft hyphen is Cf
# and invisible too. Tests check the list against the running Python's Unicode database.
_HIDDEN_RANGES = (
    (0x00, 0x1F),
    (0x7F, 0x9F),
    (0xAD, 0xAD),
    (0x600, 0x605),
    (0x61C, 0x61C),
    (0x6DD, 0x6DD),
    (0x70F, 0x70F),
    (0x890, 0x891),
    (0x8E2, 0x8E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x2028, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xD800, 0xDFFF),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE007F),
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


ESCAPES: dict[str, str] = {
    chr(code): _escape(chr(code)) for low, high in _HIDDEN_RANGES for code in range(low, high + 1)
}
# One regex substitution: about 30 ns a character, a few times faster than str.translate with a table of
# multi-character escapes on anything but plain ASCII.
_HIDDEN = re.compile(
    "[" + "".join(f"{re.escape(chr(low))}-{re.escape(chr(high))}" for low, high in _HIDDEN_RANGES) + "]"
)


def _escaped(text: str) -> str:
    # Every hidden character is also not printable (str.isprintable), which is checked in C much faster.
    return text if text.isprintable() else _HIDDEN.sub(lambda match: ESCAPES[match.group()], text)


def printable(text: str, limit: int | None = None) -> str:
    """`text` on one line with every control, bidi and invisible format character shown as an escape.

    With `limit`, at most `limit` characters of the escaped text are kept (never half an escape), then
    "... [N more characters]" says how many characters of `text` were left out.
    """
    if limit is None:
        return _escaped(text)
    limit = max(limit, 0)
    head = text[:limit]  # an escape is never shorter than its character: nothing past this can show
    shown = _escaped(head)
    if len(shown) > limit:
        widths = list(accumulate(len(ESCAPES.get(char, char)) for char in head))
        head = head[: bisect_right(widths, limit)]
        shown = _escaped(head)
    left = len(text) - len(head)
    return shown + (f"... [{left:,} more characters]" if left else "")
