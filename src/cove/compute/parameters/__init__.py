"""Reading a datastore version's catalogue of configurable parameters from the server itself.

One module per datastore (``postgresql``, ``mariadb``, ``redis``), each with
``read_parameters(bin_dir) -> list[Parameter]`` that asks the installed server what settings it
has (the settings views each server exposes). The datastore's descriptor
(``cove.domain.datastores``) names its reader and imports it only when a version of that
datastore is read, so a machine without a server never loads its reader. Whatever a reader
returns passes the datastore's deny-list again here, so no denied parameter can reach the
catalogue.
"""

from __future__ import annotations

from cove.domain.datastores import FoundVersion, datastore
from cove.domain.parameters import Parameter, denied


def read_parameters(found: FoundVersion) -> list[Parameter]:
    """The catalogue of ``found``, read from its binaries, without denied parameters.

    Raises UnknownDatastore (a LookupError listing the known datastores) for a datastore Cove
    does not know; whatever the reader raises (it runs the server's binaries) passes through:
    the caller decides what a failure means.
    """
    params = datastore(found.datastore).read_parameters(found.bin_dir)
    return [p for p in params if not denied(found.datastore, p.name)]
