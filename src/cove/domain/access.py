"""Who may connect to an instance: Trove's ``access`` (``is_public``, ``allowed_cidrs``).

``allowed_cidrs`` lists the IPv4 networks clients may connect from; none given means every
address, as in Trove (``0.0.0.0/0``). The host enforces it (``compute/firewall.py``): a
connection from elsewhere is refused before the database server sees it. ``is_public``
publishes the instance on the host's public address, on a port of its own
(``public_port_range``), under the same rule.

Parsing is pure: :func:`parse_access` checks what a request sent and merges it into what the
instance has, so an update that names one key keeps the other.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from cove.common.text import shown

#: What Trove shows for an instance that lets every address in.
EVERYONE = "0.0.0.0/0"
#: At most this many networks per instance: each is a firewall element on the host.
MAX_CIDRS = 100


@dataclass(frozen=True)
class Access:
    is_public: bool = False
    #: Networks in their canonical form, in the order given; empty: every address.
    allowed_cidrs: tuple[str, ...] = ()

    @property
    def everyone(self) -> bool:
        return not self.allowed_cidrs or EVERYONE in self.allowed_cidrs

    def view(self) -> dict[str, Any]:
        """As Trove shows it."""
        return {
            "is_public": self.is_public,
            "allowed_cidrs": list(self.allowed_cidrs) or [EVERYONE],
        }


def parse_access(body: Any, current: Access | None = None) -> Access:
    """``body`` (a request's ``access`` object) over ``current`` (the instance's, or the
    default on create): a key left out keeps its current value.

    Raises ValueError with a message fit for the user.
    """
    base = current or Access()
    if not isinstance(body, dict):
        raise ValueError("'access' must be an object with 'is_public' and 'allowed_cidrs'.")
    unknown = sorted(set(body) - {"is_public", "allowed_cidrs"})
    if unknown:
        raise ValueError(
            f"'access' takes only 'is_public' and 'allowed_cidrs', not '{shown(unknown[0])}'."
        )
    is_public = body.get("is_public", base.is_public)
    if not isinstance(is_public, bool):
        raise ValueError("'access.is_public' must be true or false.")
    cidrs = base.allowed_cidrs
    if "allowed_cidrs" in body:
        cidrs = _cidrs(body["allowed_cidrs"])
    return Access(is_public=is_public, allowed_cidrs=cidrs)


def _cidrs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError("'access.allowed_cidrs' must be a list of IPv4 networks.")
    if not value:
        raise ValueError(
            f"'access.allowed_cidrs' is empty; give at least one network ({EVERYONE} lets "
            "every address in)."
        )
    if len(value) > MAX_CIDRS:
        raise ValueError(f"'access.allowed_cidrs' takes at most {MAX_CIDRS} networks.")
    seen: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError("'access.allowed_cidrs' must be a list of IPv4 networks.")
        try:
            net = ipaddress.ip_network(item.strip(), strict=False)
        except ValueError:
            raise ValueError(
                f"'{shown(item)}' in 'access.allowed_cidrs' is not an IPv4 network in CIDR "
                "notation (such as 203.0.113.0/24)."
            ) from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise ValueError(
                f"'{shown(item)}' in 'access.allowed_cidrs' is not an IPv4 network: Cove "
                "filters IPv4 only."
            )
        if str(net) in seen:
            raise ValueError(f"'access.allowed_cidrs' names {net} twice; each must be unique.")
        seen.append(str(net))
    return tuple(seen)
