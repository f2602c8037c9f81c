"""Configuration parameters: the catalogue entry of one server setting and the rules for values.

A datastore version's catalogue is read from the server itself when the version is registered
(see ``cove.compute.parameters``) and stored in the control database. Tenants set values of
catalogue parameters through configuration groups; a parameter on the datastore's deny-list
(paths, ports, addresses, replication, security, anything that would let a tenant reach past its
instance; kept in the datastore's descriptor, ``cove.domain.datastores``) never enters the
catalogue. Values are checked here, before they are stored, with Trove's messages.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from cove.common.errors import Unprocessable
from cove.common.text import shown
from cove.domain.datastores import DATASTORES
from cove.domain.guest import Value as Value  # re-exported: the values groups store


class ParamType(StrEnum):
    INTEGER = "integer"
    FLOAT = "float"
    BOOLEAN = "boolean"
    STRING = "string"


@dataclass(frozen=True)
class Parameter:
    """One configurable setting of one datastore version."""

    name: str
    type: ParamType
    restart_required: bool
    min: int | float | None = None
    max: int | float | None = None
    #: For an enumerated string setting, the values it accepts (compared case-insensitively).
    allowed: tuple[str, ...] | None = None


def denied(datastore: str, name: str) -> bool:
    """Whether tenants may not set ``name`` on ``datastore``: whether it matches a pattern of
    the datastore's deny-list (see ``cove.domain.datastores``). An unknown datastore denies
    every name."""
    known = DATASTORES.get(datastore)
    if known is None:
        return True
    key = name.lower()
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in known.denied)


def validate_values(
    label: str, catalogue: Mapping[str, Parameter], values: Any
) -> dict[str, Value]:
    """Check a configuration group's ``values`` against a version's catalogue.

    ``label`` names the version in messages ("postgresql 15"). Returns the values as they are
    stored (a whole float given for an integer parameter becomes an int). Raises
    Unprocessable with Trove's messages.
    """
    if not catalogue:
        raise Unprocessable(f"Configuration groups are not supported for this datastore: {label}.")
    if not isinstance(values, Mapping):
        raise Unprocessable("The configuration values must be an object.")
    out: dict[str, Value] = {}
    for name, value in values.items():
        param = catalogue.get(name)
        if param is None:
            raise Unprocessable(
                f"The configuration parameter {shown(name)} is not supported for this datastore: "
                f"{label}."
            )
        out[name] = check_value(param, value)
    return out


def check_value(param: Parameter, value: Any) -> Value:
    """One value, checked and normalised for ``param``; raises Unprocessable."""
    wrong_type = Unprocessable(
        f"The value provided for the configuration parameter {param.name} is not of type "
        f"{param.type.value}."
    )
    if param.type is ParamType.BOOLEAN:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise wrong_type
    if param.type in (ParamType.INTEGER, ParamType.FLOAT):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong_type
        if isinstance(value, float) and not math.isfinite(value):
            raise wrong_type
        if param.type is ParamType.INTEGER and isinstance(value, float):
            if not value.is_integer():
                raise wrong_type
            value = int(value)
        if param.min is not None and value < param.min:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} is less than the "
                f"minimum allowed: {param.min}"
            )
        if param.max is not None and value > param.max:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} is greater than the "
                f"maximum allowed: {param.max}"
            )
        return int(value) if param.type is ParamType.INTEGER else float(value)
    if not isinstance(value, str):
        raise wrong_type
    if len(value) > 1024 or any(ch in value for ch in "\n\r\0"):
        raise Unprocessable(
            f"The value for the configuration parameter {param.name} must be one line of at "
            "most 1024 characters."
        )
    if param.allowed is not None:
        match = next((a for a in param.allowed if a.lower() == value.lower()), None)
        if match is None:
            raise Unprocessable(
                f"The value for the configuration parameter {param.name} must be one of: "
                + ", ".join(param.allowed)
                + "."
            )
        return match
    return value
