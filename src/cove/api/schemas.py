"""Request bodies of the Trove v1.0 API, validated before any handler runs."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from cove.common.text import shown
from cove.domain import names


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


#: A volume size given as a string: the digits of a whole number, as JSON would write it.
#: TROVE_API.md has Trove take "an integer >= 1 or a numeric string" (its schema allows leading
#: zeros and no spaces); Cove takes one spelling per number, so the size it records and shows
#: back is the one that was sent, and " 1", "1 ", "01", "+1" or digits of another script are
#: refused rather than guessed at. The length cap keeps the conversion cheap.
_SIZE_DIGITS = re.compile(r"[1-9][0-9]{0,39}")
SIZE_RULE = (
    "must be a positive integer (a JSON number, or a string of its digits without sign, "
    "spaces or leading zeros)"
)


def gigabytes(value: object) -> int:
    """A volume size from a request: a JSON integer of at least 1, or a string of its digits
    (see ``_SIZE_DIGITS``). Raises ValueError saying what a size must be."""
    if isinstance(value, bool):
        raise ValueError(SIZE_RULE)
    if isinstance(value, int) and value >= 1:
        return value
    if isinstance(value, str) and _SIZE_DIGITS.fullmatch(value):
        return int(value)
    raise ValueError(SIZE_RULE)


class VolumeIn(Strict):
    size: StrictInt | StrictStr
    type: StrictStr | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: int | str) -> int:
        return gigabytes(value)

    @property
    def gigabytes(self) -> int:
        return int(self.size)


class DatastoreIn(Strict):
    type: StrictStr | None = None
    version: StrictStr | None = None
    version_number: StrictStr | None = None


class DatabaseIn(Strict):
    name: StrictStr
    character_set: StrictStr | None = None
    collate: StrictStr | None = None

    @field_validator("character_set", "collate")
    @classmethod
    def _setting(cls, value: str | None) -> str | None:
        if value is not None and not names.ENCODING.fullmatch(value):
            raise ValueError(f"'{shown(value)}' is not a valid character set or collation name")
        return value


class NameRef(Strict):
    name: StrictStr


class UserIn(Strict):
    name: StrictStr
    password: StrictStr = Field(repr=False)
    host: StrictStr | None = None
    databases: list[NameRef] = []


class ReplicationIn(Strict):
    """A Cove extension: the instance's promotion weight, and its replication group's
    synchronous mode and automatic failover."""

    weight: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    synchronous: StrictBool | None = None
    auto_failover: StrictBool | None = None


class InstanceCreate(Strict):
    name: StrictStr
    flavorRef: StrictStr | int | None = None
    volume: VolumeIn | None = None
    datastore: DatastoreIn | None = None
    databases: list[DatabaseIn] = []
    users: list[UserIn] = []
    # Items are checked by cove.db.networks.resolve_network, whose messages say what is wrong.
    nics: Annotated[list[Any], Field(max_length=1)] = []
    availability_zone: StrictStr | None = None
    region_name: StrictStr | None = None
    locality: StrictStr | None = None
    configuration: StrictStr | None = None
    modules: list[dict[str, Any]] | None = None
    restorePoint: dict[str, Any] | None = None
    replica_of: StrictStr | None = None
    replica_count: StrictInt | None = None
    access: dict[str, Any] | None = None
    replication: ReplicationIn | None = None


class InstanceCreateBody(Strict):
    instance: InstanceCreate


class ClusterMemberIn(Strict):
    """One member of ``POST /clusters`` or a ``grow``: Trove's instance item. ``net-id`` at
    the top level is what Trove's own examples and older scripts send beside ``nics``;
    ``type`` and ``related_to`` are for strategies Cove's datastores do not use."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: StrictStr | None = None
    flavorRef: StrictStr | int | None = None
    volume: VolumeIn | None = None
    nics: Annotated[list[Any], Field(max_length=1)] = []
    net_id: StrictStr | None = Field(None, alias="net-id")
    availability_zone: StrictStr | None = None
    modules: list[dict[str, Any]] | None = None
    region_name: StrictStr | None = None
    type: StrictStr | None = None
    related_to: StrictStr | None = None
    #: A Cove extension: the member's promotion weight in an active-passive cluster.
    weight: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None


class ClusterCreate(Strict):
    name: StrictStr
    datastore: DatastoreIn | None = None
    instances: list[ClusterMemberIn] = []
    locality: StrictStr | None = None
    extended_properties: dict[str, Any] | None = None
    configuration: StrictStr | None = None


class ClusterCreateBody(Strict):
    cluster: ClusterCreate


class BackupCreate(Strict):
    """Trove's backup request. troveclient always sends ``incremental`` as 0 or 1."""

    name: StrictStr | None = None
    instance: StrictStr | None = None
    description: StrictStr | None = None
    parent_id: StrictStr | None = None
    incremental: Literal[0, 1] | StrictBool = 0
    swift_container: StrictStr | None = None
    storage_driver: StrictStr | None = None
    restore_from: dict[str, Any] | None = None


class BackupCreateBody(Strict):
    backup: BackupCreate


class InstanceUpdate(Strict):
    name: StrictStr | None = None
    configuration: StrictStr | None = None
    replica_of: StrictStr | None = None
    slave_of: StrictStr | None = None
    datastore_version: StrictStr | None = None
    access: dict[str, Any] | None = None
    replication: ReplicationIn | None = None


class InstanceUpdateBody(Strict):
    instance: InstanceUpdate


class LogActionBody(Strict):
    """Trove's ``POST /instances/{id}/log``: a log's name and at most one flag of each pair
    (clients send them as 0 or 1); none is a "show"."""

    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    enable: Literal[0, 1] | StrictBool = 0
    disable: Literal[0, 1] | StrictBool = 0
    publish: Literal[0, 1] | StrictBool = 0
    discard: Literal[0, 1] | StrictBool = 0


class DatabasesBody(Strict):
    databases: Annotated[list[DatabaseIn], Field(min_length=1)]


class UsersBody(Strict):
    users: Annotated[list[UserIn], Field(min_length=1)]


class UserPassword(Strict):
    name: StrictStr
    password: StrictStr = Field(repr=False)
    host: StrictStr | None = None


class PasswordsBody(Strict):
    users: Annotated[list[UserPassword], Field(min_length=1)]


class UserAttributes(Strict):
    name: StrictStr | None = None
    password: StrictStr | None = Field(default=None, repr=False)
    host: StrictStr | None = None


class UserUpdateBody(Strict):
    user: UserAttributes


class AccessBody(Strict):
    databases: Annotated[list[NameRef], Field(min_length=1)]


class RootBody(Strict):
    password: StrictStr | None = Field(default=None, repr=False)


class ConfigurationCreate(Strict):
    name: StrictStr
    values: dict[str, Any]
    description: StrictStr | None = None
    datastore: DatastoreIn | None = None


class ConfigurationCreateBody(Strict):
    configuration: ConfigurationCreate


class ConfigurationValues(Strict):
    values: dict[str, Any]


class ConfigurationPatchBody(Strict):
    configuration: ConfigurationValues


class ConfigurationUpdate(Strict):
    values: dict[str, Any]
    name: StrictStr | None = None
    description: StrictStr | None = None


class ConfigurationUpdateBody(Strict):
    configuration: ConfigurationUpdate


class BackupScheduleCreate(Strict):
    """A backup schedule (a Cove extension): ``cron`` has five fields, in UTC."""

    instance_id: StrictStr
    cron: StrictStr
    name: StrictStr | None = None
    incremental: StrictBool = False
    keep_count: StrictInt | None = None
    keep_days: StrictInt | None = None
    enabled: StrictBool = True


class BackupScheduleCreateBody(Strict):
    backup_schedule: BackupScheduleCreate


class BackupScheduleUpdate(Strict):
    """The fields to change; ``null`` clears ``name``, ``keep_count`` or ``keep_days``."""

    name: StrictStr | None = None
    cron: StrictStr | None = None
    incremental: StrictBool | None = None
    keep_count: StrictInt | None = None
    keep_days: StrictInt | None = None
    enabled: StrictBool | None = None


class BackupScheduleUpdateBody(Strict):
    backup_schedule: BackupScheduleUpdate
