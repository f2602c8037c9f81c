"""Control database tables.

The control database is written by the API (requests), the task manager (workflows) and the
conductor (guest-reported state). The guest agent never touches it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Datastore(Base):
    __tablename__ = "datastores"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    default_version_id: Mapped[str | None] = mapped_column(String(36), nullable=True)

    versions: Mapped[list[DatastoreVersion]] = relationship(
        back_populates="datastore", order_by="DatastoreVersion.name"
    )


class DatastoreVersion(Base):
    __tablename__ = "datastore_versions"
    __table_args__ = (UniqueConstraint("datastore_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    datastore_id: Mapped[str] = mapped_column(ForeignKey("datastores.id"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    manager: Mapped[str] = mapped_column(String(64))
    bin_dir: Mapped[str] = mapped_column(String(1024))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    datastore: Mapped[Datastore] = relationship(back_populates="versions")


class Flavor(Base):
    __tablename__ = "flavors"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ram: Mapped[int] = mapped_column(Integer)
    vcpus: Mapped[int] = mapped_column(Integer)
    disk: Mapped[int] = mapped_column(Integer, default=0)
    ephemeral: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    flavor_id: Mapped[str] = mapped_column(ForeignKey("flavors.id"))
    datastore_version_id: Mapped[str] = mapped_column(ForeignKey("datastore_versions.id"))
    volume_size: Mapped[int] = mapped_column(Integer)
    compute_driver: Mapped[str] = mapped_column(String(32))
    task: Mapped[str] = mapped_column(String(32))
    task_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    compute_state: Mapped[str] = mapped_column(String(32))
    agent_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    port: Mapped[int] = mapped_column(Integer)
    fault_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    fault_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime)
    updated: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    flavor: Mapped[Flavor] = relationship()
    datastore_version: Mapped[DatastoreVersion] = relationship()
    guest: Mapped[GuestState | None] = relationship(uselist=False, viewonly=True)


class AddressAllocation(Base):
    """One row per address in use; the unique key is what makes allocation race-free."""

    __tablename__ = "address_allocations"

    address: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36), unique=True)


class GuestState(Base):
    """The guest agent's last heartbeat for an instance, written by the conductor."""

    __tablename__ = "guest_states"

    instance_id: Mapped[str] = mapped_column(ForeignKey("instances.id"), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    payload: Mapped[str] = mapped_column(Text, default="{}")
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ConductorSeen(Base):
    """The newest message time seen per instance and method, so older ones are discarded."""

    __tablename__ = "conductor_seen"

    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
