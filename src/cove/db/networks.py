"""Networks: for the local driver, named loopback address pools; one is the default."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest
from cove.db.models import Network


def resolve_network(s: Session, nics: list[dict[str, Any]]) -> Network:
    """The network a create asks for in ``nics`` (``net-id`` or ``network_id``), or the default.

    Raises BadRequest for an unknown network or when no default exists.
    """
    network = s.scalar(select(Network).where(Network.is_default.is_(True)))
    if network is None:
        raise BadRequest("No default network is defined.")
    return network
