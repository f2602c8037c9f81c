"""Reading the guest agent's settings, written by the compute driver beside the instance."""

from __future__ import annotations

import json
from pathlib import Path

from cove.common.errors import ConfigurationError
from cove.domain.guest import GuestSettings
from cove.rpc.codec import WireError, from_wire


def load_settings(path: Path) -> GuestSettings:
    """The settings in ``path`` (``guest.json``). Raises ConfigurationError when the file is
    missing or malformed."""
    try:
        settings: GuestSettings = from_wire(GuestSettings, json.loads(path.read_text()), "guest")
    except (OSError, ValueError, WireError) as exc:
        raise ConfigurationError(f"cannot read guest config {path}: {exc}") from exc
    if not settings.instance_dir:
        # The driver always says where the instance lives: without it every path would be
        # relative to wherever the agent happened to start.
        raise ConfigurationError(f"cannot read guest config {path}: instance_dir is missing")
    return settings
