"""SCRAM-SHA-256 password verifiers, computed here so a clear-text password never reaches the
server (where a failed statement would write it to the server log).

Clients normalise the password with SASLprep (RFC 4013) before hashing, and so does the
server when it builds a verifier itself; a verifier built from the raw text would lock out
passwords that normalisation changes (non-ASCII spaces, compatibility characters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import stringprep
import unicodedata

ITERATIONS = 4096

_PROHIBITED = (
    stringprep.in_table_c12,
    stringprep.in_table_c21_c22,
    stringprep.in_table_c3,
    stringprep.in_table_c4,
    stringprep.in_table_c5,
    stringprep.in_table_c6,
    stringprep.in_table_c7,
    stringprep.in_table_c8,
    stringprep.in_table_c9,
    stringprep.in_table_a1,
)


def saslprep(password: str) -> str:
    """The password as SASLprep normalises it; like libpq, fall back to the raw text when the
    profile rejects it (prohibited or unassigned characters, mixed directions)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(ch) else ch
        for ch in password
        if not stringprep.in_table_b1(ch)
    )
    # Like PostgreSQL's own SASLprep, the checks look at the mapped text, before normalising.
    if not mapped or any(check(ch) for ch in mapped for check in _PROHIBITED):
        return password
    rtl = [stringprep.in_table_d1(ch) for ch in mapped]
    if any(rtl):
        ltr = any(stringprep.in_table_d2(ch) for ch in mapped)
        if ltr or not (rtl[0] and rtl[-1]):
            return password
    return unicodedata.normalize("NFKC", mapped)


def verifier(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`` string PostgreSQL stores."""
    salt = salt if salt is not None else os.urandom(16)
    secret = saslprep(password).encode("utf-8")
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def matches(stored: str, password: str) -> bool:
    """Whether the verifier ``stored`` (as :func:`verifier` writes it) is one of ``password``;
    False for anything else (no verifier, another method, a malformed one)."""
    try:
        method, rest = stored.split("$", 1)
        head, _keys = rest.split("$", 1)
        iterations, salt = head.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False
        again = verifier(password, base64.b64decode(salt, validate=True), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(again, stored)
