"""Reading a datastore version's catalogue of configurable parameters from the server itself.

One module per datastore (``postgresql``, ``mariadb``, ``redis``), each with
``read_parameters(bin_dir) -> list[Parameter]`` that asks the installed server what settings it
has (the settings views each server exposes). They are imported only when a version of their
datastore is registered, so a machine without a server never loads its reader. Whatever a
reader returns passes the datastore's deny-list again here, so no denied parameter can reach
the catalogue.
"""

from __future__ import annotations

import importlib
from typing import Protocol, cast

from cove.compute.discovery import FoundVersion
from cove.domain.parameters import Parameter, denied

#: Datastore name -> module of this package that reads its catalogue.
READERS: dict[str, str] = {
    "postgresql": "postgresql",
    "mariadb": "mariadb",
    "redis": "redis",
}


class _Reader(Protocol):
    def read_parameters(self, bin_dir: str) -> list[Parameter]: ...


def read_parameters(found: FoundVersion) -> list[Parameter]:
    """The catalogue of ``found``, read from its binaries, without denied parameters.

    Raises LookupError for a datastore without a reader; whatever the reader raises (it runs
    the server's binaries) passes through: the caller decides what a failure means.
    """
    module_name = READERS.get(found.datastore)
    if module_name is None:
        raise LookupError(
            f"no parameter reader for datastore '{found.datastore}' "
            f"(known: {', '.join(sorted(READERS))})"
        )
    reader = cast(_Reader, importlib.import_module(f"{__name__}.{module_name}"))
    params = reader.read_parameters(found.bin_dir)
    return [p for p in params if not denied(found.datastore, p.name)]
