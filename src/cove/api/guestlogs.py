"""Guest logs as the API serves them: Trove's view of a log, where an instance publishes its
logs (the store and the instance's log key), and reading a published log back for the
object-store endpoint (``cove.api.routers.objects``) that ``openstack database log tail`` and
``save`` read through swiftclient.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from cove.api.context import ApiContext
from cove.common import keys
from cove.common.errors import ArtifactMissing, NotFound, ServiceUnavailable, StoreUnavailable
from cove.common.settings import Settings
from cove.db.instances import get_instance, live_instances_of
from cove.domain import guestlogs
from cove.domain.backups import SealKey
from cove.domain.guestlogs import LogIndex, LogPart, LogState, LogTarget
from cove.storage import Store, configured_store, open_store

LOG = logging.getLogger(__name__)


def unavailable(exc: Exception, what: str) -> ServiceUnavailable:
    """What a tenant is told when the store of published logs fails ``what``: that it is out of
    reach for now (the store's own message, which names where it is, goes to the log)."""
    LOG.error("%s: %s", what, exc)
    return ServiceUnavailable("The store of published logs cannot be reached now; try again later.")


def view(state: LogState, instance_id: str, container: str) -> dict[str, Any]:
    """Trove's ``log`` object (sizes in bytes)."""
    return {
        "name": state.name,
        "type": state.type.value,
        "status": guestlogs.status(state).value,
        "published": state.published,
        "pending": state.pending,
        "container": container,
        "prefix": guestlogs.prefix(instance_id, state.name),
        "metafile": guestlogs.index_key(instance_id, state.name),
    }


def log_key(settings: Settings, instance_id: str, key_id: str | None = None) -> SealKey:
    """Instance ``instance_id``'s log key, from the backup key ``key_id`` (by default the
    current one, made on first use). Raises ConfigurationError."""
    if key_id is None:
        key_id, master = keys.current_backup_key(settings.backup_keys_dir)
    else:
        master = keys.backup_key(settings.backup_keys_dir, key_id)
    return SealKey(key_id, keys.derive_log_key(master, instance_id).hex())


def target(settings: Settings, instance_id: str) -> LogTarget:
    """Where instance ``instance_id`` publishes its logs. Raises ConfigurationError."""
    return LogTarget(
        store=configured_store(settings, settings.guest_log_container),
        seal=log_key(settings, instance_id),
    )


def log_store(settings: Settings) -> Store:
    """The store published logs are in. Raises ValueError (settings it cannot open)."""
    return open_store(configured_store(settings, settings.guest_log_container))


# -- reading a published log back ------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """One object of the log container as a reader sees it: a part, or a log's index."""

    name: str
    size: int
    md5: str
    last_modified: str  # ISO 8601 in UTC, with microseconds, no zone (Swift's listing form)
    lines: int | None = None
    part: LogPart | None = None
    index: bytes | None = None


def objects(store: Store, instance_id: str, log: str) -> list[StoredObject]:
    """The objects of one log's published copy (its parts, then its index), none when it has
    none. Raises StoreUnavailable."""
    key = guestlogs.index_key(instance_id, log)
    try:
        data = b"".join(store.get(key))
    except ArtifactMissing:
        return []
    try:
        index = LogIndex.from_json(data)
    except ValueError as exc:
        raise StoreUnavailable(f"the index of the {log} log is damaged: {exc}") from None
    out = [
        StoredObject(p.key, p.bytes, p.md5, _naive(p.published_at), p.lines, part=p)
        for p in index.parts
    ]
    last = index.parts[-1].published_at if index.parts else "1970-01-01T00:00:00.000000+00:00"
    out.append(
        StoredObject(
            key,
            len(data),
            hashlib.md5(data, usedforsecurity=False).hexdigest(),
            _naive(last),
            index=data,
        )
    )
    return out


def _naive(iso: str) -> str:
    return iso.removesuffix("+00:00")


def read(settings: Settings, store: Store, instance_id: str, item: StoredObject) -> bytes:
    """The plain bytes of ``item``. Raises NotFound (gone since it was listed),
    StoreUnavailable, ArtifactDamaged, ConfigurationError (its key is missing)."""
    if item.index is not None:
        return item.index
    assert item.part is not None
    # Imported here: the ciphers and zstd only for a read, not for every API worker's start.
    from cove.storage.sealed import unsealed

    try:
        sealed = b"".join(store.get(item.part.key))
    except ArtifactMissing:
        raise NotFound(f"The object {item.name} is gone.") from None
    seal = log_key(settings, instance_id, item.part.key_id)
    return b"".join(unsealed([sealed], seal, item.part.checksum))


_INSTANCE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _logs_under(c: ApiContext, project_id: str, prefix: str) -> list[tuple[str, str]]:
    """(instance id, log name) of every log a listing under ``prefix`` may hold: the
    prefix's instance's when it names one of the project, else every live instance's of the
    project."""
    head = prefix.split("/", 1)[0]
    with c.db.session() as s:
        if _INSTANCE.fullmatch(head):
            try:
                instances = [get_instance(s, head, project_id)]
            except NotFound:
                return []
        else:
            instances = live_instances_of(s, project_id)
        return [
            (i.id, log.name)
            for i in instances
            for log in guestlogs.logs_of(i.datastore_version.datastore.name)
        ]


def project_objects(c: ApiContext, project_id: str, prefix: str) -> list[StoredObject]:
    """Every object of the published logs of the project's instances that a listing under
    ``prefix`` may show. Raises StoreUnavailable, ValueError (a store the settings cannot
    open)."""
    store = log_store(c.settings)
    items: list[StoredObject] = []
    for instance_id, log in _logs_under(c, project_id, prefix):
        items += objects(store, instance_id, log)
    return items


def find_object(c: ApiContext, project_id: str, name: str) -> tuple[str, StoredObject]:
    """The object ``name`` of one of the project's instances' logs, and that instance's id.
    Raises NotFound, StoreUnavailable, ValueError."""
    head, _, rest = name.partition("/")
    log = rest.split("/", 1)[0].removesuffix(".metafile")
    if not _INSTANCE.fullmatch(head) or not log:
        raise NotFound(f"Object {name[:160]} not found.")
    with c.db.session() as s:
        inst = get_instance(s, head, project_id)
        datastore = inst.datastore_version.datastore.name
    if log not in {d.name for d in guestlogs.logs_of(datastore)}:
        raise NotFound(f"Object {name[:160]} not found.")
    for item in objects(log_store(c.settings), head, log):
        if item.name == name:
            return head, item
    raise NotFound(f"Object {name[:160]} not found.")
