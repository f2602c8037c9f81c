"""The catalogue: flavors and datastore versions, seeded and registered at start-up."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from cove.common.errors import (
    BadRequest,
    DatastoreNotFound,
    DatastoreVersionNotFound,
    FlavorNotFound,
)
from cove.common.ids import new_id
from cove.common.text import shown
from cove.compute.discovery import FoundVersion
from cove.db.configurations import store_catalogue
from cove.db.models import Datastore, DatastoreVersion, Flavor
from cove.domain.datastores import DATASTORES
from cove.domain.parameters import Parameter

#: Reads a found version's parameter catalogue (runs its binaries); tests pass their own.
ParameterReader = Callable[[FoundVersion], list[Parameter]]

LOG = logging.getLogger(__name__)

#: Default flavors, in the spirit of Nova's: id, name, RAM (MB), vCPUs, disk (GB).
DEFAULT_FLAVORS: tuple[tuple[str, str, int, int, int], ...] = (
    ("1", "tiny", 512, 1, 5),
    ("2", "small", 2048, 1, 10),
    ("3", "medium", 4096, 2, 20),
    ("4", "large", 8192, 4, 40),
)


def seed_flavors(session: Session) -> int:
    """Insert the default flavors when there are none; return how many were added."""
    if session.scalar(select(Flavor.id).limit(1)) is not None:
        return 0
    for fid, name, ram, vcpus, disk in DEFAULT_FLAVORS:
        session.add(Flavor(id=fid, name=name, ram=ram, vcpus=vcpus, disk=disk, ephemeral=0))
    return len(DEFAULT_FLAVORS)


def add_flavor(session: Session, name: str, ram: int, vcpus: int, disk: int = 0) -> Flavor:
    if ram < 128:
        raise BadRequest("a flavor needs at least 128 MB of RAM")
    if vcpus < 1:
        raise BadRequest("a flavor needs at least one vCPU")
    if session.scalar(select(Flavor).where(Flavor.name == name)) is not None:
        raise BadRequest(f"flavor '{name}' already exists")
    ids = [int(f) for f in session.scalars(select(Flavor.id)) if f.isdigit()]
    flavor = Flavor(id=str(max(ids, default=0) + 1), name=name, ram=ram, vcpus=vcpus, disk=disk)
    session.add(flavor)
    return flavor


def find_flavor(session: Session, ref: str) -> Flavor:
    """The active flavor with the id or name ``ref``. Raises FlavorNotFound."""
    flavor = session.get(Flavor, ref) or session.scalar(select(Flavor).where(Flavor.name == ref))
    if flavor is None or not flavor.active:
        raise FlavorNotFound(f"Flavor '{shown(ref)}' cannot be found.")
    return flavor


def get_datastore(session: Session, name_or_id: str) -> Datastore:
    ds = session.get(Datastore, name_or_id) or session.scalar(
        select(Datastore).where(Datastore.name == name_or_id)
    )
    if ds is None:
        raise DatastoreNotFound(f"Datastore '{shown(name_or_id)}' cannot be found.")
    return ds


def get_version(session: Session, ds: Datastore, name_or_id: str) -> DatastoreVersion:
    for version in ds.versions:
        if name_or_id in (version.id, version.name):
            return version
    raise DatastoreVersionNotFound(
        f"Datastore version '{shown(name_or_id)}' cannot be found for datastore '{ds.name}'."
    )


def register_version(session: Session, found: FoundVersion, make_default: bool = False) -> bool:
    """Record a found version; return True when it was new. An existing version keeps its
    id and its active flag but follows the binaries (bin dir and exact version)."""
    ds = session.scalar(select(Datastore).where(Datastore.name == found.datastore))
    if ds is None:
        ds = Datastore(id=new_id(), name=found.datastore)
        session.add(ds)
        session.flush()
    existing = next((v for v in ds.versions if v.name == found.name), None)
    if existing is not None:
        existing.version = found.version
        existing.bin_dir = found.bin_dir
        new = False
        version = existing
    else:
        version = DatastoreVersion(
            id=new_id(),
            datastore_id=ds.id,
            name=found.name,
            version=found.version,
            manager=found.datastore,
            bin_dir=found.bin_dir,
            active=True,
        )
        session.add(version)
        session.flush()
        session.refresh(ds)
        new = True
    if make_default or ds.default_version_id is None:
        ds.default_version_id = version.id
    return new


def register_found_versions(
    session: Session, reader: ParameterReader | None = None
) -> list[FoundVersion]:
    """Register every datastore version installed on this machine, read the parameter
    catalogue of each whose catalogue is missing or stale (``reader``, by default
    ``cove.compute.parameters.read_parameters``), then settle defaults."""
    found = [v for ds in DATASTORES.values() for v in ds.find_versions()]
    for item in found:
        if register_version(session, item):
            LOG.info(
                "registered datastore version %s %s at %s",
                item.datastore,
                item.version,
                item.bin_dir,
            )
        refresh_parameters(session, item, reader)
    choose_defaults(session)
    return found


def refresh_parameters(
    session: Session, found: FoundVersion, reader: ParameterReader | None = None
) -> None:
    """Read and store the catalogue of a registered version unless it was read for these
    very binaries. A reader that fails leaves the catalogue empty (configuration groups of
    that version are then refused as not supported) and is tried again at the next
    registration; it never stops start-up."""
    ds = session.scalar(select(Datastore).where(Datastore.name == found.datastore))
    version = next((v for v in ds.versions if v.name == found.name), None) if ds else None
    if version is None or version.parameters_version == found.version:
        return
    if reader is None:
        from cove.compute.parameters import read_parameters

        reader = read_parameters
    try:
        params = reader(found)
    except Exception as exc:
        LOG.warning(
            "could not read the configuration parameters of %s %s at %s: %s; configuration "
            "groups are unavailable for it until it is read",
            found.datastore,
            found.version,
            found.bin_dir,
            exc,
        )
        store_catalogue(session, version, [], None)
        return
    count = store_catalogue(session, version, params, found.version)
    LOG.info("read %d configuration parameters of %s %s", count, found.datastore, found.version)


def choose_defaults(session: Session) -> None:
    """Give each datastore whose default version is missing or disabled its newest active one;
    a default the operator chose stays while it is active."""
    session.flush()
    for ds in session.scalars(select(Datastore)):
        active = [v for v in ds.versions if v.active]
        current = next((v for v in active if v.id == ds.default_version_id), None)
        if current is None and active:
            ds.default_version_id = max(active, key=lambda v: _version_key(v.version)).id


def _version_key(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())
