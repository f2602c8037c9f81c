"""Cove's one typed settings object.

Values come from, in rising precedence: the defaults below, ``cove.toml`` (in the data directory,
or at the path in ``COVE_CONFIG``) and ``COVE_*`` environment variables. Build it with
:func:`load_settings` at start-up; nothing reads configuration at import time.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cove.common import datadir
from cove.common.errors import ConfigurationError
from cove.domain.backups import check_container
from cove.domain.networks import loopback_pool


def default_data_dir() -> Path:
    """The data directory when no setting names one: the ``.cove`` of the clone the command
    runs in, as ``make run`` keeps it, else the user's own (``cove.common.datadir``)."""
    return datadir.default_data_dir()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="COVE_", extra="forbid")

    data_dir: Path = Field(default_factory=default_data_dir)
    api_host: str = "127.0.0.1"
    api_port: int = Field(8779, ge=1, le=65535)
    database_url: str = ""
    transport_url: str = ""
    compute_driver: str = "local"
    address_pool: str = "127.42.0.0/16"
    default_datastore: str = "postgresql"
    public_url: str = ""
    auth_strategy: Literal["embedded", "keystone"] = "embedded"
    token_ttl: int = Field(3600, ge=300, le=7 * 24 * 3600)
    admin_project: str = "admin"
    login_failure_limit: int = Field(10, ge=0)
    policy_file: str = ""
    keystone_url: str = ""
    keystone_username: str = ""
    keystone_password: SecretStr = SecretStr("")
    keystone_project: str = "service"
    keystone_user_domain: str = "Default"
    keystone_project_domain: str = "Default"
    keystone_cache_seconds: float = Field(60.0, ge=0)
    rate_limit_per_minute: int = Field(200, ge=0)
    region: str = "RegionOne"
    service_user: str = "cove"
    #: Places made ahead for new instances (their user, volume, group and agent), so that a
    #: create takes one instead of waiting for them (``compute/spares.py``); 0 makes none.
    spare_instances: int = Field(4, ge=0, le=32)
    #: The control group (below each cgroup hierarchy's root) that holds one group per
    #: instance, sized by its flavor; used when Cove runs as root.
    cgroup_parent: str = Field("cove", pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
    #: Where an instance with ``access.is_public`` is published (this host's address that
    #: clients outside it reach), each on a port of its own from ``public_port_min`` to
    #: ``public_port_max``.
    public_address: str = "127.0.0.1"
    public_port_min: int = Field(20000, ge=1024, le=65535)
    public_port_max: int = Field(20999, ge=1024, le=65535)
    heartbeat_interval: float = Field(5.0, gt=0)
    monitor_interval: float = Field(1.0, gt=0)
    build_timeout: float = Field(600.0, gt=0)
    rpc_timeout: float = Field(30.0, gt=0)
    max_volume_size: int = Field(10, ge=1)
    page_size: int = Field(20, ge=1, le=1000)
    max_instances_per_project: int = 10
    max_ram_per_project: int = -1
    max_volumes_per_project: int = 40
    max_backups_per_project: int = 50
    redis_server: str = "redis-server"
    #: Where backups go: ``filesystem`` (``backup_location`` is a directory, by default
    #: ``<data>/backups``) or ``s3`` (``backup_location`` is the endpoint URL, empty for AWS).
    backup_store: Literal["filesystem", "s3"] = "filesystem"
    backup_location: str = ""
    #: The container a backup goes to when its request names none: the S3 bucket, or a
    #: directory under the filesystem store's root.
    backup_container: str = "cove-backups"
    #: Further containers a backup request may name (``swift_container``), comma-separated;
    #: any other is refused, so tenants cannot write where the operator did not allow.
    backup_containers: str = ""
    #: The container of the backup store that instances publish their guest logs to (Trove's
    #: ``guest_log_container_name``), each instance's under its id.
    guest_log_container: str = "database-logs"
    backup_region: str = ""
    backup_access_key: str = ""
    backup_secret_key: SecretStr = SecretStr("")
    #: Longest a backup may run before it is failed.
    backup_timeout: float = Field(6 * 3600.0, gt=0)
    log_level: str = "INFO"
    #: ``text`` (a line of text per record) or ``json`` (one JSON object per line).
    log_format: Literal["text", "json"] = "text"
    #: The API logs every request it answered (method, path, status, duration, request id).
    access_log: bool = True
    #: The control plane's metrics at the API's ``GET /metrics`` (``cove.common.metrics``).
    metrics: bool = True
    #: Where the API, task managers and conductors of this host keep their metrics, so one
    #: scrape of the API sees them all; by default one on the memory filesystem
    #: (``cove.common.metrics.place``).
    metrics_dir: Path | None = None
    #: When set, ``GET /metrics`` answers only a scrape that sends ``Authorization: Bearer
    #: <metrics_token>`` (its per-instance series name every instance).
    metrics_token: SecretStr = SecretStr("")
    #: The bus topic of notification events (Trove's is ``notifications``: they go to the
    #: queue ``notifications.info``, which keeps them until they are consumed); empty, the
    #: default, sends none on the bus.
    event_topic: str = Field("", pattern=r"^[A-Za-z0-9_.-]{0,64}$")
    #: An http(s) URL each notification event is POSTed to; empty: none.
    event_webhook: str = ""
    #: When set, webhook requests carry ``X-Cove-Signature: sha256=<HMAC of the body>``.
    event_webhook_secret: SecretStr = SecretStr("")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    @property
    def allowed_containers(self) -> list[str]:
        """The containers a backup request may name besides ``backup_container``."""
        return [n.strip() for n in self.backup_containers.split(",") if n.strip()]

    @field_validator("public_address")
    @classmethod
    def _public_is_an_address(cls, value: str) -> str:
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError:
            raise ValueError(f"public_address: '{value[:64]}' is not an IPv4 address") from None
        if address.is_unspecified:
            raise ValueError("public_address must be an address clients reach, not 0.0.0.0")
        return str(address)

    @field_validator("address_pool")
    @classmethod
    def _pool_is_loopback(cls, value: str) -> str:
        try:
            loopback_pool(value)
        except ValueError as exc:
            raise ValueError(f"the local driver's address_pool: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        if self.public_port_min > self.public_port_max:
            raise ValueError("public_port_min must not be above public_port_max")
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'cove.sqlite'}"
        if not self.transport_url:
            self.transport_url = f"redis+socket://{self.bus_socket}"
        self.public_url = self.public_url.rstrip("/")
        if self.event_webhook:
            if not self.event_webhook.startswith(("http://", "https://")):
                raise ValueError("event_webhook must start with http:// or https://")
            try:
                httpx.URL(self.event_webhook)
            except httpx.InvalidURL as exc:
                raise ValueError(f"event_webhook is no URL: {exc}") from None
        if self.metrics_dir is not None:
            self.metrics_dir = self.metrics_dir.expanduser().resolve()
        for name in [self.backup_container, *self.allowed_containers, self.guest_log_container]:
            try:
                check_container(name)
            except ValueError as exc:
                raise ValueError(f"backup container '{name[:64]}': {exc}") from None
        if self.backup_store == "filesystem":
            self.backup_location = self.backup_location or str(self.data_dir / "backups")
            if not os.path.isabs(self.backup_location):
                raise ValueError("backup_location must be an absolute directory")
        elif self.backup_location and not self.backup_location.startswith(("http://", "https://")):
            raise ValueError("backup_location of an s3 store must be an http(s) URL")
        if self.public_url and not self.public_url.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        if self.auth_strategy == "keystone":
            missing = [
                f"keystone_{name}"
                for name in ("url", "username", "password")
                if not getattr(self, f"keystone_{name}")
            ]
            if missing:
                raise ValueError(
                    "auth_strategy 'keystone' needs " + ", ".join(missing) + " to be set"
                )
            if not self.keystone_url.startswith(("http://", "https://")):
                raise ValueError("keystone_url must start with http:// or https://")
        return self

    @property
    def api_url(self) -> str:
        """Where clients reach the API: ``public_url``, else the address it listens on."""
        if self.public_url:
            return self.public_url
        host = self.api_host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.api_port}"

    @property
    def identity_dir(self) -> Path:
        return self.data_dir / "identity"

    @property
    def token_key_file(self) -> Path:
        return self.identity_dir / "token.key"

    @property
    def task_key_file(self) -> Path:
        """The key that seals what an unfinished task needs to be resumed (cove.db.sealed)."""
        return self.data_dir / "keys" / "task.key"

    @property
    def backup_keys_dir(self) -> Path:
        """The keys backups are sealed with (cove.common.keys.backup_key); never in the store."""
        return self.data_dir / "keys" / "backup"

    @property
    def bus_socket(self) -> Path:
        return self.data_dir / "run" / "bus.sock"

    @property
    def embedded_bus(self) -> bool:
        return self.transport_url == f"redis+socket://{self.bus_socket}"

    @property
    def instances_dir(self) -> Path:
        return self.data_dir / "instances"

    @property
    def templates_dir(self) -> Path:
        return self.data_dir / "templates"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    section = data.get("cove", data)
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path}: expected a table of settings")
    return section


def load_settings(**overrides: Any) -> Settings:
    """Build and validate the settings.

    Raises ConfigurationError with every problem named when a value is invalid.
    """
    env_data_dir = os.environ.get("COVE_DATA_DIR")
    data_dir = Path(overrides.get("data_dir") or env_data_dir or default_data_dir()).expanduser()
    config_path = os.environ.get("COVE_CONFIG")
    file_values: dict[str, Any] = {}
    if config_path:
        path = Path(config_path).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"COVE_CONFIG names {path}, which does not exist")
        file_values = _read_toml(path)
    elif (data_dir / "cove.toml").is_file():
        file_values = _read_toml(data_dir / "cove.toml")
    # Environment wins over the file: drop file keys that the environment sets.
    for key in list(file_values):
        if f"COVE_{key.upper()}" in os.environ:
            del file_values[key]
    values = {**file_values, **overrides}
    try:
        return Settings(**values)
    except ValidationError as exc:
        # Name the settings and the problems, never the values: a URL may hold a password.
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from exc
