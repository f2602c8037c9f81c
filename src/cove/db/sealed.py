"""What an unfinished task needs to be resumed that its instance row does not hold, sealed on
the row.

The API seals a task's arguments (a create's databases and users with their passwords, a
resize's old and new sizes) into ``instances.task_args`` in the transaction that starts the
task, and casts nothing but the instance id: whichever task manager runs the task, first or
after another died, opens them from the row. They are erased when the task ends.

Sealing is AES-256-GCM under the deployment's task key (``<data>/keys/task.key``, mode 0600,
made once like the token key), with the instance id as associated data, so a sealed value
moved to another row does not open. Nothing of it is readable in the control database, in a
dump of it, or on the bus.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cove.common.errors import UnreadableTaskArgs
from cove.common.keys import ensure_key
from cove.common.settings import Settings
from cove.domain.specs import DatabaseSpec, Resize, UserSpec
from cove.rpc import codec

T = TypeVar("T")

_VERSION = "s1"
_NONCE_BYTES = 12


@dataclasses.dataclass(frozen=True)
class CreateArgs:
    """What ``prepare`` needs that the row does not hold."""

    databases: list[DatabaseSpec]
    users: list[UserSpec]
    #: The backup to restore the new instance from, if any.
    restore_from: str | None = None
    #: The moment to restore to (ISO 8601, UTC), replaying archived WAL after that backup.
    restore_time: str | None = None
    #: How many archived WAL segments reaching ``restore_time`` replays (counted when the
    #: request was checked): the build is given time for them.
    replay_segments: int = 0


@dataclasses.dataclass(frozen=True)
class ResizeArgs:
    resize: Resize


class Sealer:
    """Seals and opens task arguments with one deployment's task key."""

    def __init__(self, key: bytes) -> None:
        # A derived key, so the file's bytes serve one purpose only.
        self._aead = AESGCM(hashlib.sha256(b"cove task arguments\0" + key).digest())

    @classmethod
    def for_settings(cls, settings: Settings) -> Sealer:
        """The sealer of the deployment ``settings`` describe; makes the key on first use.
        Raises ConfigurationError when the key cannot be read or written."""
        return cls(ensure_key(settings.task_key_file))

    def seal(self, instance_id: str, value: Any) -> str:
        """``value`` (a dataclass of wire types) as sealed text bound to ``instance_id``."""
        plain = json.dumps(codec.to_wire(value), separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plain, instance_id.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, instance_id: str, text: str, tp: type[T]) -> T:
        """The value ``seal`` sealed for ``instance_id``, as ``tp``.

        Raises UnreadableTaskArgs (never quoting the value) when it does not open or decode.
        """
        version, _, body = text.partition(".")
        if version != _VERSION:
            raise UnreadableTaskArgs("the task's sealed arguments have an unknown format")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], instance_id.encode())
            value: T = codec.from_wire(tp, json.loads(plain), "task arguments")
        except InvalidTag:
            raise UnreadableTaskArgs(
                "the task's sealed arguments do not open with this deployment's task key"
            ) from None
        except (ValueError, TypeError) as exc:
            raise UnreadableTaskArgs(
                f"the task's sealed arguments are damaged ({type(exc).__name__})"
            ) from None
        return value
