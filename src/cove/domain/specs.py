"""Typed requests that travel from the API to the task manager and the guest agent: databases,
users and resizes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatabaseSpec:
    name: str
    character_set: str | None = None
    collate: str | None = None


@dataclass(frozen=True)
class UserSpec:
    """A user to create. ``password`` is a secret: never log or echo it."""

    name: str
    password: str = field(repr=False)
    host: str = "%"
    databases: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserInfo:
    name: str
    host: str
    databases: tuple[str, ...]


@dataclass(frozen=True)
class Resize:
    """A resize the API recorded on an instance: its new flavor or its new volume size, with
    the old one to put back should the resize fail."""

    instance_id: str
    old_flavor_id: str | None = None
    new_flavor_id: str | None = None
    old_volume_size: int | None = None
    new_volume_size: int | None = None
