"""Compute drivers, chosen by short name (``compute_driver`` setting)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cove.common.errors import ConfigurationError
from cove.common.settings import Settings
from cove.compute.base import ComputeDriver


def _local(settings: Settings, **kwargs: Any) -> ComputeDriver:
    from cove.compute.local import LocalDriver

    return LocalDriver(settings, **kwargs)


DRIVERS: dict[str, Callable[..., ComputeDriver]] = {"local": _local}


def load_driver(settings: Settings, **kwargs: Any) -> ComputeDriver:
    """Raises ConfigurationError naming the known drivers when the name is unknown."""
    try:
        factory = DRIVERS[settings.compute_driver]
    except KeyError:
        raise ConfigurationError(
            f"unknown compute driver '{settings.compute_driver}' "
            f"(known: {', '.join(sorted(DRIVERS))})"
        ) from None
    return factory(settings, **kwargs)
