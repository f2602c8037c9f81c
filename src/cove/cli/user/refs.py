"""Names where ids are taken: every argument or option of the ``cove`` command that names an
instance, configuration group, backup, cluster or flavor accepts its name or its id, as the
openstack command does.

A reference shaped like a UUID is an id and costs no request (another project's instance, as
an admin sees it, is named by its id). Any other is looked for in the list of the project's
resources of that kind, among the ids first (Trove's flavor ids are small numbers), then the
names: one match gives its id, several are an error listing them, none an error saying where
to look.

The same lists complete names in the shell (see :mod:`.completion`), with the cached token
(see :mod:`.tokens`); a completion that cannot reach Cove offers nothing rather than printing
an error into the user's prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import click
from click.shell_completion import CompletionItem

from cove.cli.user.app import App
from cove.cli.userfmt import Body

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?([0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


@dataclass(frozen=True)
class Kind:
    """A kind of resource: the collection it is listed from and how a user names it."""

    noun: str  # "instance"
    plural: str  # "instances": the collection's path and its body's key
    listed_by: str  # the command that lists them, for messages

    def ids(self, item: Body) -> list[str]:
        """The ids ``item`` answers to (a flavor has a ``str_id`` besides its ``id``)."""
        return [str(item[k]) for k in ("id", "str_id") if item.get(k) is not None]


INSTANCE = Kind("instance", "instances", "cove instance list")
CONFIGURATION = Kind("configuration group", "configurations", "cove configuration list")
BACKUP = Kind("backup", "backups", "cove backup list")
CLUSTER = Kind("cluster", "clusters", "cove cluster list")
FLAVOR = Kind("flavor", "flavors", "cove flavor list")


def resolve(app: App, kind: Kind, ref: str) -> str:
    """The id of the project's ``kind`` that ``ref`` names, by id or by name.

    Raises click.ClickException when none or several match, ApiError and
    click.ClickException when the list cannot be read.
    """
    if _UUID.match(ref):
        return ref
    items = app.api.paginate(kind.plural, kind.plural)
    if any(ref in kind.ids(item) for item in items):
        return ref
    named = [item for item in items if item.get("name") == ref]
    if len(named) > 1:
        listed = ", ".join(kind.ids(item)[0] for item in named)
        raise click.ClickException(
            f"{len(named)} {kind.noun}s are named '{ref}' ({listed}): give the id of one"
        )
    if not named or not kind.ids(named[0]):
        raise click.ClickException(
            f"no {kind.noun} has the id or name '{ref}' (see '{kind.listed_by}')"
        )
    return kind.ids(named[0])[0]


class Ref(click.ParamType[str, Any]):
    """A click type whose value is a ``kind``'s name or id and which converts to the id.

    Converting needs the :class:`App` a run's ``cove`` group made; while click only parses
    (``--help``, completion) the value is left as given.
    """

    def __init__(self, kind: Kind, *, resolved: bool = True) -> None:
        self.kind = kind
        self.name = kind.noun
        self.resolved = resolved

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        app = ctx.find_object(App) if ctx is not None else None
        if not self.resolved or app is None or (ctx is not None and ctx.resilient_parsing):
            return value
        return resolve(app, self.kind, str(value))

    def shell_complete(
        self, ctx: click.Context, param: click.Parameter, incomplete: str
    ) -> list[CompletionItem]:
        return [CompletionItem(n) for n in names(ctx, self.kind) if n.startswith(incomplete)]


#: How long a completion waits for Cove, in seconds: a prompt must not hang.
COMPLETE_TIMEOUT = 3.0


def names(ctx: click.Context, kind: Kind) -> list[str]:
    """The names (or ids, for what has no name) of the project's resources of ``kind``, with
    the credentials and ``--os-cloud``/``--url`` of the line being completed; [] when they
    cannot be listed."""
    params = ctx.find_root().params
    app = App(url=params.get("url"), cloud=params.get("cloud"), timeout=COMPLETE_TIMEOUT)
    try:
        items = app.api.paginate(kind.plural, kind.plural)
    except (click.ClickException, OSError):
        return []
    finally:
        app.close()
    found = [str(item.get("name") or (kind.ids(item) or [""])[0]) for item in items]
    return sorted({n for n in found if n})


INSTANCE_REF = Ref(INSTANCE)
CONFIGURATION_REF = Ref(CONFIGURATION)
BACKUP_REF = Ref(BACKUP)
CLUSTER_REF = Ref(CLUSTER)
FLAVOR_REF = Ref(FLAVOR)
#: A flavor sent as given: the API takes a flavor's name as well as its id where a request
#: names one (``flavorRef``), so the option only completes.
FLAVOR_NAME = Ref(FLAVOR, resolved=False)
