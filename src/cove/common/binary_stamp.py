"""What a template data directory was made with, so a new server binary gets a new template.

A template's stamp lies beside it (``<template>.json``): the server binary's path, size and
change time, which one ``stat`` reads again; a package upgrade replaces the binary and so
changes them. A template without a stamp, or with another binary's, is not used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def stamp_of(template: Path) -> Path:
    return template.with_name(template.name + ".json")


def stamp(binary: Path) -> dict[str, str | int]:
    """Raises OSError when the binary cannot be read."""
    st = os.stat(binary)
    return {"binary": str(binary), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def matches(template: Path, binary: Path) -> bool:
    """Whether ``template`` was made with ``binary`` as it is now."""
    try:
        with open(stamp_of(template), "rb") as f:
            found = json.loads(f.read(4096))
        return bool(found == stamp(binary))
    except (OSError, ValueError):
        return False


def write(template: Path, binary: Path, mode: int = 0o600) -> None:
    """Writes the stamp (before the template is renamed into place: a template is only used
    with its stamp). Raises OSError."""
    path = stamp_of(template)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(stamp(binary)))
    os.replace(partial, path)


def ready(template: Path, marker: str, binary: Path) -> bool:
    """Whether ``template`` is made (its ``marker`` file is there) with ``binary`` as it is."""
    return (template / marker).is_file() and matches(template, binary)
