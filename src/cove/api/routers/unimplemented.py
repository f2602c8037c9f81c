"""Trove paths that Cove does not serve yet.

Each answers ``501 notImplemented`` with a message naming its feature ("Clusters are not
supported by Cove yet."), so a client says what is missing instead of "not found". The caller
passes the same gate as anywhere else first: a valid token of the path's project (401, 403),
the policy rule of the action (403), and an instance of the project when the path names one
(404); a method Trove does not have at the path is ``405``, as for any route. The table lists
every such path of Trove's v1.0 API with the methods Trove serves there and their rules; a path
leaves it when Cove implements its feature.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from fastapi import APIRouter, Request, Response

from cove.api.context import authorize, authorize_instance, cove
from cove.api.openapi import answers
from cove.common.errors import NotImplementedFault
from cove.db.instances import get_instance


@dataclass(frozen=True)
class Unimplemented:
    path: str  # under /v1.0/{project_id}
    rules: Mapping[str, str]  # method -> policy rule
    feature: str  # the subject of the message
    plural: bool = True

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.rules)

    @property
    def message(self) -> str:
        return f"{self.feature} {'are' if self.plural else 'is'} not supported by Cove yet."


_CLUSTERS = "The management API's clusters"
_MODULES = "Modules"
_VERSIONS = "Managing datastore versions through the API"
_PARAMETERS = "Managing configuration parameters through the API"

UNIMPLEMENTED: tuple[Unimplemented, ...] = (
    Unimplemented(
        "/backup_strategies",
        {
            "GET": "backup_strategy:index",
            "POST": "backup_strategy:create",
            "DELETE": "backup_strategy:delete",
        },
        "Backup strategies",
    ),
    Unimplemented("/modules", {"GET": "module:index", "POST": "module:create"}, _MODULES),
    Unimplemented(
        "/modules/{module_id}",
        {"GET": "module:show", "PUT": "module:update", "DELETE": "module:delete"},
        _MODULES,
    ),
    Unimplemented(
        "/modules/{module_id}/instances", {"GET": "module:show", "PUT": "module:update"}, _MODULES
    ),
    Unimplemented(
        "/instances/{instance_id}/modules",
        {"GET": "instance:module_list", "POST": "instance:module_apply"},
        _MODULES,
    ),
    Unimplemented(
        "/instances/{instance_id}/modules/{module_id}",
        {"DELETE": "instance:module_remove"},
        _MODULES,
    ),
    Unimplemented(
        "/instances/{instance_id}/ssl",
        {"GET": "instance:ssl_show", "POST": "instance:ssl_action"},
        "TLS (SSL) for instances",
        plural=False,
    ),
    Unimplemented(
        "/datastores/{datastore}/versions/{version}/volume-types",
        {"GET": "datastore:index"},
        "Volume types",
    ),
    Unimplemented(
        "/datastores/{datastore}", {"DELETE": "mgmt:datastores"}, "Deleting datastores", False
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/action",
        {"POST": "mgmt:instances"},
        "Management actions (stop, reboot, migrate, rebuild, reset-task-status)",
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/root",
        {"GET": "mgmt:instances"},
        "Root-enable history",
        False,
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/diagnostics", {"GET": "mgmt:instances"}, "Diagnostics"
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/hwinfo",
        {"GET": "mgmt:instances"},
        "Hardware information",
        plural=False,
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/rpc_ping", {"GET": "mgmt:instances"}, "Guest pings"
    ),
    Unimplemented(
        "/mgmt/instances/{instance_id}/upgrade", {"POST": "mgmt:instances"}, "Guest upgrades"
    ),
    Unimplemented("/mgmt/clusters", {"GET": "mgmt:clusters"}, _CLUSTERS),
    Unimplemented("/mgmt/clusters/{cluster_id}", {"GET": "mgmt:clusters"}, _CLUSTERS),
    Unimplemented("/mgmt/clusters/{cluster_id}/action", {"POST": "mgmt:clusters"}, _CLUSTERS),
    Unimplemented(
        "/mgmt/datastore-versions",
        {"GET": "mgmt:datastores", "POST": "mgmt:datastores"},
        _VERSIONS,
        plural=False,
    ),
    Unimplemented(
        "/mgmt/datastore-versions/{version_id}",
        {"GET": "mgmt:datastores", "PATCH": "mgmt:datastores", "DELETE": "mgmt:datastores"},
        _VERSIONS,
        plural=False,
    ),
    Unimplemented(
        "/mgmt/datastores/versions/{version_id}/parameters",
        {"GET": "mgmt:datastores", "POST": "mgmt:datastores"},
        _PARAMETERS,
        plural=False,
    ),
    Unimplemented(
        "/mgmt/datastores/versions/{version_id}/parameters/{name}",
        {"GET": "mgmt:datastores", "PUT": "mgmt:datastores", "DELETE": "mgmt:datastores"},
        _PARAMETERS,
        plural=False,
    ),
)

router = APIRouter(prefix="/v1.0/{project_id}")


def _refusal(item: Unimplemented, rule: str) -> Callable[[str, Request], NoReturn]:
    names_instance = "{instance_id}" in item.path and not item.path.startswith("/mgmt/")

    def refuse(project_id: str, request: Request) -> NoReturn:
        """Raises Unauthorized, Forbidden, InstanceNotFound, or else NotImplementedFault."""
        if names_instance:
            instance_id = request.path_params["instance_id"]
            _, project_id = authorize_instance(request, project_id, instance_id, rule)
            with cove(request).db.session() as s:
                get_instance(s, instance_id, project_id)
        else:
            authorize(request, project_id, rule)
        raise NotImplementedFault(item.message)

    return refuse


def _path_parameters(path: str) -> dict[str, Any]:
    """The OpenAPI parameters of the path's ``{names}``, which the handler does not declare."""
    names = re.findall(r"\{(\w+)\}", path)
    params = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names
    ]
    return {"parameters": params}


def _operation_id(method: str, path: str) -> str:
    return f"unimplemented_{method.lower()}_" + re.sub(r"\W+", "_", path).strip("_")


for _item in UNIMPLEMENTED:
    for _method, _rule in _item.rules.items():
        router.add_api_route(
            _item.path,
            _refusal(_item, _rule),
            methods=[_method],
            status_code=501,
            response_model=None,
            response_class=Response,
            summary=_item.message,
            operation_id=_operation_id(_method, _item.path),
            responses=answers(None, *((404,) if "{instance_id}" in _item.path else ()), 501),
            openapi_extra=_path_parameters(_item.path),
        )
