"""What a template data directory was made with, so a new server binary gets a new template.

A template's stamp lies beside it (``<template>.json``), written once the template is in place:
the server binary's path, inode, size and modification and change times, which one ``stat``
reads again; a package upgrade replaces the binary (a new inode) and so changes them. A
template without a stamp, or with another binary's, is not used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def stamp_of(template: Path) -> Path:
    """Where ``template``'s stamp is: beside it, named after it."""
    return template.with_name(template.name + ".json")


def stamp(binary: Path) -> dict[str, str | int]:
    """Raises OSError when the binary cannot be read."""
    st = os.stat(binary)
    return {
        "binary": str(binary),
        "inode": st.st_ino,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ctime_ns": st.st_ctime_ns,
    }


def matches(template: Path, binary: Path) -> bool:
    """Whether ``template`` was made with ``binary`` as it is now."""
    try:
        with open(stamp_of(template), "rb") as f:
            found = json.loads(f.read(4096))
        return bool(found == stamp(binary))
    except (OSError, ValueError):
        return False


def ready(template: Path, marker: str, binary: Path) -> bool:
    """Whether ``template`` is made (its ``marker`` file is there) with ``binary`` as it is."""
    return (template / marker).is_file() and matches(template, binary)


def write(template: Path, binary: Path, mode: int = 0o600, gid: int | None = None) -> None:
    """Writes ``template``'s stamp (mode ``mode``, group ``gid`` when given), replacing the
    one before in one rename. Raises OSError."""
    path = stamp_of(template)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
        os.write(fd, json.dumps(stamp(binary)).encode())
    finally:
        os.close(fd)
    os.replace(partial, path)
