"""Networks instances can attach to (a Cove extension of the v1.0 API).

Read-only: operators manage networks with ``cove-manage network``. Every project sees every
network, as it would see an operator's shared provider networks.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from cove.api.context import ApiContext, authorize, cove
from cove.api.openapi import answers
from cove.api.responses import NetworkList, NetworkOne
from cove.api.views import links, paged
from cove.db.models import Network
from cove.db.networks import find_network, list_networks

router = APIRouter(prefix="/v1.0/{project_id}/networks")


def network_view(request: Request, project_id: str, network: Network) -> dict[str, Any]:
    return {
        "id": network.id,
        "name": network.name,
        "cidr": network.cidr,
        "is_default": network.is_default,
        "links": links(request, project_id, "networks", network.id),
    }


@router.get("", responses=answers(NetworkList))
def index_networks(
    project_id: str,
    request: Request,
    limit: int | None = None,
    marker: str | None = None,
    c: ApiContext = Depends(cove),
) -> Any:
    authorize(request, project_id, "network:index")
    with c.db.session() as s:
        return paged(
            request,
            "networks",
            list_networks(s),
            lambda n: n.id,
            limit,
            marker,
            c.settings.page_size,
            lambda n: network_view(request, project_id, n),
        )


@router.get("/{network}", responses=answers(NetworkOne, 404))
def show_network(
    project_id: str, network: str, request: Request, c: ApiContext = Depends(cove)
) -> Any:
    """By id or by name; an unknown network is 404."""
    authorize(request, project_id, "network:index")
    with c.db.session() as s:
        return {"network": network_view(request, project_id, find_network(s, network))}
