"""How much of a client's input an error message carries back.

Messages name what was wrong ("Flavor 'x' cannot be found."), but a client may send a name, id
or reference of any length; echoing it whole would let one request make every log line and
answer about it as large as the request itself. Every message that quotes a value it did not
check for length quotes :func:`shown` of it.
"""

from __future__ import annotations

#: The most characters of a client's value that a message quotes.
SHOWN_MAX = 64
ELLIPSIS = "…"


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """``value`` as text, cut to its first ``limit`` characters followed by an ellipsis when
    it is longer."""
    text = str(value)
    return text if len(text) <= limit else text[:limit] + ELLIPSIS
