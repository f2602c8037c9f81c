"""The guest agent's own settings, written by the compute driver beside the instance."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from cove.common.errors import ConfigurationError


@dataclass(frozen=True)
class GuestConfig:
    instance_id: str
    datastore: str
    datastore_version: str
    bin_dir: str
    address: str
    port: int
    ram_mb: int
    vcpus: int
    volume_gb: int
    transport_url: str
    heartbeat_interval: float
    instance_dir: str
    template_dir: str | None = None
    #: The values of the configuration group attached to the instance (already checked against
    #: the version's catalogue), laid over the flavor-derived defaults.
    overrides: dict[str, int | float | bool | str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return Path(self.instance_dir)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def conf_dir(self) -> Path:
        return self.root / "conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def topic(self) -> str:
        return f"guestagent.{self.instance_id}"

    @classmethod
    def load(cls, path: Path) -> GuestConfig:
        """Raises ConfigurationError when the file is missing or malformed."""
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigurationError(f"cannot read guest config {path}: {exc}") from exc
