"""Typed requests that travel from the API to the task manager and the guest agent: databases,
users and resizes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DatabaseSpec:
    name: str
    character_set: str | None = None
    collate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "character_set": self.character_set, "collate": self.collate}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatabaseSpec:
        return cls(
            name=str(data["name"]),
            character_set=data.get("character_set"),
            collate=data.get("collate"),
        )


@dataclass(frozen=True)
class UserSpec:
    """A user to create. ``password`` is a secret: never log or echo it."""

    name: str
    password: str = field(repr=False)
    host: str = "%"
    databases: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "password": self.password,
            "host": self.host,
            "databases": list(self.databases),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserSpec:
        return cls(
            name=str(data["name"]),
            password=str(data["password"]),
            host=str(data.get("host") or "%"),
            databases=tuple(str(d) for d in data.get("databases") or ()),
        )


@dataclass(frozen=True)
class UserInfo:
    name: str
    host: str
    databases: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "host": self.host, "databases": list(self.databases)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UserInfo:
        return cls(
            name=str(data["name"]),
            host=str(data.get("host") or "%"),
            databases=tuple(str(d) for d in data.get("databases") or ()),
        )


@dataclass(frozen=True)
class Resize:
    """A resize the API recorded on an instance: its new flavor or its new volume size, with
    the old one to put back should the resize fail."""

    instance_id: str
    old_flavor_id: str | None = None
    new_flavor_id: str | None = None
    old_volume_size: int | None = None
    new_volume_size: int | None = None
