"""The ``cove`` command: a terminal client of Cove's Trove v1.0 API.

This module owns the HTTP side (one client per run, error envelopes turned into one-line
messages, pagination, waiting on instance status) and the click commands. Rendering and the
``--user`` syntax live in :mod:`cove.cli.userfmt`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

import click
import httpx

from cove import __version__
from cove.cli import userfmt as fmt
from cove.cli.userfmt import Body

DEFAULT_URL = "http://127.0.0.1:8779"
#: Seconds between two status polls of ``--wait``; tests set it to 0.
POLL_INTERVAL = 0.5
#: Lists stop following ``next`` links after this many items.
MAX_ITEMS = 10_000


def request_headers() -> dict[str, str]:
    """Headers sent with every request; the one place an ``X-Auth-Token`` will be added."""
    return {"Accept": "application/json", "User-Agent": f"cove-cli/{__version__}"}


def make_http_client(base_url: str, timeout: float, headers: Mapping[str, str]) -> httpx.Client:
    """The HTTP client of a run; tests replace this factory to plug in a fake transport."""
    return httpx.Client(base_url=base_url, timeout=timeout, headers=dict(headers))


class ApiError(click.ClickException):
    """A non-2xx answer of the API, shown as ``Error (<code> <faultName>): <message>``."""

    def __init__(self, code: int, fault: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.fault = fault

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Error ({self.code} {self.fault}): {self.message}", file=file, err=True)


def api_error(resp: httpx.Response) -> ApiError:
    """Read Trove's ``{"<fault>": {"code", "message"}}`` envelope, tolerating other shapes."""
    fault, message = resp.reason_phrase or "error", resp.text.strip()[:500]
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        first = next(iter(body.items()), None)
        if len(body) == 1 and first and isinstance(first[1], dict):
            fault, message = first[0], str(first[1].get("message") or message)
        elif "message" in body:
            fault, message = str(body.get("title") or fault), str(body["message"])
    return ApiError(resp.status_code, fault, message or "(no message)")


class Api:
    """Thin typed access to the API under ``<url>/v1.0/<project>``.

    Every method raises ApiError for a non-2xx answer and click.ClickException when Cove cannot
    be reached or answers something that is not JSON.
    """

    def __init__(self, http: httpx.Client, url: str, timeout: float) -> None:
        self._http = http
        self._url = url
        self._timeout = timeout

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Body | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Body:
        try:
            resp = self._http.request(method, path, json=body, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise click.ClickException(
                f"cannot reach Cove at {self._url}: is it running? (start it with 'make run')"
            ) from exc
        except httpx.TimeoutException as exc:
            raise click.ClickException(
                f"Cove at {self._url} did not answer within {self._timeout:g} s (see --timeout)"
            ) from exc
        except httpx.HTTPError as exc:
            raise click.ClickException(f"request to Cove at {self._url} failed: {exc}") from exc
        if resp.is_error:
            raise api_error(resp)
        if not resp.content.strip():
            return {}
        try:
            data = resp.json()
        except ValueError as exc:
            raise click.ClickException(
                f"Cove answered {method} {path} with a body that is not JSON"
            ) from exc
        if not isinstance(data, dict):
            raise click.ClickException(f"Cove answered {method} {path} with an unexpected body")
        return data

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Body:
        return self.request("GET", path, params=params)

    def paginate(self, path: str, key: str) -> list[Body]:
        """Every item of a list, following ``next`` links up to MAX_ITEMS.

        The next page is asked of ``path`` with the query of the link's href: Trove writes
        ``https://`` into its links whatever the scheme, so the href itself is not trusted.
        """
        items: list[Body] = []
        params: dict[str, str] = {}
        seen: set[tuple[tuple[str, str], ...]] = set()
        while True:
            body = self.get(path, params or None)
            items.extend(body.get(key) or [])
            params = _next_params(body)
            marker = tuple(sorted(params.items()))
            if not params or marker in seen:
                return items
            if len(items) >= MAX_ITEMS:
                click.echo(f"Warning: showing only the first {MAX_ITEMS} items", err=True)
                return items[:MAX_ITEMS]
            seen.add(marker)


def _next_params(body: Body) -> dict[str, str]:
    for link in body.get("links") or []:
        if isinstance(link, dict) and link.get("rel") == "next" and link.get("href"):
            return dict(httpx.URL(str(link["href"])).params)
    return {}


def need(body: Body, key: str) -> Any:
    """``body[key]``, or a clear error when Cove's answer lacks it."""
    if key not in body:
        raise click.ClickException(f"Cove's answer lacks the '{key}' field")
    return body[key]


@dataclass
class App:
    """What every command shares: the options of ``cove`` and the API client, made on first use."""

    url: str
    project: str
    json_output: bool
    timeout: float
    _api: Api | None = field(default=None, repr=False)

    @property
    def api(self) -> Api:
        if self._api is None:
            base = f"{self.url}/v1.0/{quote(self.project, safe='')}"
            http = make_http_client(base, self.timeout, request_headers())
            self._api = Api(http, self.url, self.timeout)
        return self._api

    def close(self) -> None:
        if self._api is not None:
            self._api.close()

    def output(self, body: Any, render: Callable[[], str], *, secret: bool = False) -> None:
        """Print ``body`` as JSON with ``--json``, else ``render()``; passwords are dropped
        unless ``secret`` says showing one is the point."""
        if self.json_output:
            click.echo(json.dumps(body if secret else fmt.redact(body), indent=2))
        else:
            click.echo(render())

    def done(self, message: str) -> None:
        """Confirm a change whose answer has no body (nothing to print with ``--json``)."""
        if not self.json_output:
            click.echo(message)


def inst_path(instance_id: str) -> str:
    return f"instances/{quote(instance_id, safe='')}"


def user_path(instance_id: str, user: str) -> str:
    """The path of ``NAME`` or ``NAME@HOST``, encoded as one segment."""
    return f"{inst_path(instance_id)}/users/{quote(user, safe='')}"


class StoppedWaiting(click.ClickException):
    """Ctrl-C during ``--wait``: the change goes on, only the CLI stops watching."""

    exit_code = 130


class _Progress:
    """Status and elapsed time on stderr: rewritten in place on a terminal, else one line per
    status change so that logs stay readable."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._last: str | None = None
        self._open = False

    def show(self, label: str, elapsed: float) -> None:
        line = f"{label} ({elapsed:.1f}s)"
        if self._tty:
            click.echo(f"\r{line}\x1b[K", err=True, nl=False)
            self._open = True
        elif label != self._last:
            click.echo(line, err=True)
        self._last = label

    def end(self) -> None:
        if self._open:
            click.echo("", err=True)
            self._open = False


def wait_for(app: App, instance_id: str, *, gone: bool, timeout: float) -> Body | None:
    """Poll an instance until it is ACTIVE (or, with ``gone``, until it no longer exists).

    Returns the last instance view (None once gone). Raises click.ClickException when the
    instance goes to ERROR, when ``timeout`` seconds pass, or on Ctrl-C.
    """
    progress = _Progress()
    start = time.monotonic()
    try:
        while True:
            elapsed = time.monotonic() - start
            try:
                inst = need(app.api.get(inst_path(instance_id)), "instance")
            except ApiError as exc:
                if gone and exc.code == 404:
                    progress.show("DELETED", elapsed)
                    return None
                raise
            status = str(inst.get("status") or "UNKNOWN")
            progress.show(fmt.status_label(inst), elapsed)
            if status == "ERROR":
                raise click.ClickException(
                    f"instance {instance_id} is in ERROR: {fmt.fault_message(inst)}"
                )
            if status == "ACTIVE" and not gone:
                return dict(inst)
            if elapsed >= timeout:
                raise click.ClickException(
                    f"gave up waiting after {timeout:g} s: instance {instance_id} is {status}; "
                    f"it carries on in the background (see 'cove instance show {instance_id}')"
                )
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        raise StoppedWaiting(
            f"stopped waiting; instance {instance_id} carries on in the background"
        ) from None
    finally:
        progress.end()


# -- the command tree -------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="COVE_URL",
    show_envvar=True,
    default=DEFAULT_URL,
    show_default=True,
    help="Cove API address.",
)
@click.option(
    "--project",
    envvar="COVE_PROJECT",
    show_envvar=True,
    default="default",
    show_default=True,
    help="Project id.",
)
@click.option("--json", "json_output", is_flag=True, help="Print JSON bodies instead of tables.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="HTTP timeout in seconds.",
)
@click.version_option(__version__, prog_name="cove")
@click.pass_context
def cli(ctx: click.Context, url: str, project: str, json_output: bool, timeout: float) -> None:
    """Manage Cove database instances."""
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("must start with http:// or https://", param_hint="--url")
    app = App(url=url.rstrip("/"), project=project, json_output=json_output, timeout=timeout)
    ctx.obj = app
    ctx.call_on_close(app.close)


wait_option = click.option("--wait", is_flag=True, help="Wait until the change is done.")


def wait_timeout_option(default: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "--wait-timeout",
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        help="Seconds to wait before giving up (with --wait).",
    )


def show_instance(app: App, inst: Body) -> None:
    app.output({"instance": inst}, lambda: fmt.pairs(fmt.instance_pairs(inst)))


# -- instances --------------------------------------------------------------------------------


@cli.group()
def instance() -> None:
    """Create, inspect and manage instances."""


def _users_body(specs: tuple[str, ...], databases: list[str]) -> list[Body]:
    """The ``users`` of a create request, prompting for passwords left out of ``--user``."""
    try:
        parsed = [fmt.parse_user_spec(s) for s in specs]
        grants = [fmt.spec_databases(p, databases) for p in parsed]
    except fmt.SpecError as exc:
        raise click.UsageError(str(exc)) from exc
    users = []
    for spec, dbs in zip(parsed, grants, strict=True):
        password = spec.password or click.prompt(
            f"Password for user {spec.name}", hide_input=True, confirmation_prompt=True
        )
        users.append(
            {"name": spec.name, "password": password, "databases": [{"name": d} for d in dbs]}
        )
    return users


@instance.command("create")
@click.argument("name")
@click.option("--flavor", required=True, help="Flavor id (see 'cove flavor list').")
@click.option("--size", required=True, type=click.IntRange(min=1), help="Volume size in GB.")
@click.option("--datastore", help="Datastore type, e.g. postgresql.")
@click.option("--datastore-version", help="Datastore version name.")
@click.option("--database", "databases", multiple=True, help="Create this database (repeatable).")
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME[:PASSWORD][@DB,...]",
    help="Create this user (repeatable); without a password you are prompted for it.",
)
@wait_option
@wait_timeout_option(900)
@click.pass_obj
def instance_create(
    app: App,
    name: str,
    flavor: str,
    size: int,
    datastore: str | None,
    datastore_version: str | None,
    databases: tuple[str, ...],
    users: tuple[str, ...],
    wait: bool,
    wait_timeout: float,
) -> None:
    """Create an instance NAME.

    \b
    --user NAME:PASSWORD          access to every --database
    --user NAME:PASSWORD@DB1,DB2  access to DB1 and DB2 only
    --user NAME[@DB1,DB2]         prompt for the password (use this when it contains '@')
    """
    dbs = list(databases)
    req: Body = {"name": name, "flavorRef": flavor, "volume": {"size": size}}
    store = {"type": datastore, "version": datastore_version}
    if any(store.values()):
        req["datastore"] = {k: v for k, v in store.items() if v}
    user_items = _users_body(users, dbs)
    req["databases"] = [{"name": d} for d in dbs]
    req["users"] = user_items
    inst = need(app.api.request("POST", "instances", {"instance": req}), "instance")
    if not wait:
        show_instance(app, inst)
        return
    inst = wait_for(app, str(need(inst, "id")), gone=False, timeout=wait_timeout) or inst
    show_instance(app, inst)
    first = user_items[0] if user_items else {}
    grants = [d["name"] for d in first.get("databases", [])] or dbs
    hint = fmt.connect_hint(inst, grants[0] if grants else None, first.get("name"))
    if hint:
        click.echo(f"\nConnect with:\n  {hint}", err=app.json_output)


@instance.command("list")
@click.pass_obj
def instance_list(app: App) -> None:
    """List instances."""
    items = app.api.paginate("instances", "instances")
    app.output(
        {"instances": items},
        lambda: fmt.table(fmt.INSTANCE_HEADERS, (fmt.instance_row(i) for i in items)),
    )


@instance.command("show")
@click.argument("instance_id", metavar="ID")
@click.pass_obj
def instance_show(app: App, instance_id: str) -> None:
    """Show instance ID."""
    show_instance(app, need(app.api.get(inst_path(instance_id)), "instance"))


@instance.command("delete")
@click.argument("instance_id", metavar="ID")
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_delete(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Delete instance ID."""
    app.api.request("DELETE", inst_path(instance_id))
    if wait:
        wait_for(app, instance_id, gone=True, timeout=wait_timeout)
        app.done(f"Instance {instance_id} deleted.")
    else:
        app.done(f"Instance {instance_id} is being deleted.")


@instance.command("restart")
@click.argument("instance_id", metavar="ID")
@wait_option
@wait_timeout_option(600)
@click.pass_obj
def instance_restart(app: App, instance_id: str, wait: bool, wait_timeout: float) -> None:
    """Restart the database server of instance ID."""
    app.api.request("POST", f"{inst_path(instance_id)}/action", {"restart": {}})
    if wait:
        wait_for(app, instance_id, gone=False, timeout=wait_timeout)
        app.done(f"Instance {instance_id} restarted and ACTIVE.")
    else:
        app.done(f"Instance {instance_id} is restarting.")


@instance.command("rename")
@click.argument("instance_id", metavar="ID")
@click.argument("new_name")
@click.pass_obj
def instance_rename(app: App, instance_id: str, new_name: str) -> None:
    """Rename instance ID to NEW_NAME."""
    app.api.request("PUT", inst_path(instance_id), {"instance": {"name": new_name}})
    app.done(f"Instance {instance_id} renamed to {new_name}.")


# -- databases --------------------------------------------------------------------------------


@cli.group()
def database() -> None:
    """Manage the databases of an instance."""


@database.command("list")
@click.argument("instance_id", metavar="INSTANCE")
@click.pass_obj
def database_list(app: App, instance_id: str) -> None:
    """List the databases of INSTANCE."""
    items = app.api.paginate(f"{inst_path(instance_id)}/databases", "databases")
    app.output({"databases": items}, lambda: fmt.table(["Name"], ([d.get("name")] for d in items)))


@database.command("create")
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("name")
@click.option("--character-set", help="Character set (encoding) of the database.")
@click.option("--collate", help="Collation of the database.")
@click.pass_obj
def database_create(
    app: App, instance_id: str, name: str, character_set: str | None, collate: str | None
) -> None:
    """Create database NAME on INSTANCE."""
    item: Body = {"name": name}
    if character_set:
        item["character_set"] = character_set
    if collate:
        item["collate"] = collate
    app.api.request("POST", f"{inst_path(instance_id)}/databases", {"databases": [item]})
    app.done(f"Database {name} is being created on instance {instance_id}.")


@database.command("delete")
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("name")
@click.pass_obj
def database_delete(app: App, instance_id: str, name: str) -> None:
    """Delete database NAME of INSTANCE."""
    app.api.request("DELETE", f"{inst_path(instance_id)}/databases/{quote(name, safe='')}")
    app.done(f"Database {name} is being deleted from instance {instance_id}.")


# -- users ------------------------------------------------------------------------------------


def _password(given: str | None, name: str) -> str:
    if given:
        return given
    prompt = f"Password for user {name}"
    return str(click.prompt(prompt, hide_input=True, confirmation_prompt=True))


password_option = click.option(
    "--password", help="The password (prompted for, unseen, when left out; safer)."
)
user_arg = click.argument("user", metavar="NAME[@HOST]")


@cli.group()
def user() -> None:
    """Manage the users of an instance."""


@user.command("list")
@click.argument("instance_id", metavar="INSTANCE")
@click.pass_obj
def user_list(app: App, instance_id: str) -> None:
    """List the users of INSTANCE."""
    items = app.api.paginate(f"{inst_path(instance_id)}/users", "users")
    rows = ([u.get("name"), u.get("host"), u.get("databases")] for u in items)
    app.output({"users": items}, lambda: fmt.table(["Name", "Host", "Databases"], rows))


@user.command("create")
@click.argument("instance_id", metavar="INSTANCE")
@click.argument("name")
@password_option
@click.option("--host", help="Host the user may connect from (default: any).")
@click.option("--database", "databases", multiple=True, help="Grant this database (repeatable).")
@click.pass_obj
def user_create(
    app: App,
    instance_id: str,
    name: str,
    password: str | None,
    host: str | None,
    databases: tuple[str, ...],
) -> None:
    """Create user NAME on INSTANCE."""
    item: Body = {"name": name, "password": _password(password, name)}
    if host:
        item["host"] = host
    item["databases"] = [{"name": d} for d in databases]
    app.api.request("POST", f"{inst_path(instance_id)}/users", {"users": [item]})
    app.done(f"User {name} is being created on instance {instance_id}.")


@user.command("show")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@click.pass_obj
def user_show(app: App, instance_id: str, user: str) -> None:
    """Show a user of INSTANCE."""
    body = need(app.api.get(user_path(instance_id, user)), "user")
    keys = ("name", "host", "databases")
    app.output({"user": body}, lambda: fmt.pairs((k, body.get(k)) for k in keys))


@user.command("delete")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@click.pass_obj
def user_delete(app: App, instance_id: str, user: str) -> None:
    """Delete a user of INSTANCE."""
    app.api.request("DELETE", user_path(instance_id, user))
    app.done(f"User {user} is being deleted from instance {instance_id}.")


@user.command("set-password")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@password_option
@click.pass_obj
def user_set_password(app: App, instance_id: str, user: str, password: str | None) -> None:
    """Change the password of a user of INSTANCE."""
    body = {"user": {"password": _password(password, user)}}
    app.api.request("PUT", user_path(instance_id, user), body)
    app.done(f"Password of user {user} is being changed.")


@user.command("grant")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@click.argument("databases", metavar="DB...", nargs=-1, required=True)
@click.pass_obj
def user_grant(app: App, instance_id: str, user: str, databases: tuple[str, ...]) -> None:
    """Give a user of INSTANCE access to databases."""
    body = {"databases": [{"name": d} for d in databases]}
    app.api.request("PUT", f"{user_path(instance_id, user)}/databases", body)
    app.done(f"User {user} is being granted {', '.join(databases)}.")


@user.command("revoke")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@click.argument("db", metavar="DB")
@click.pass_obj
def user_revoke(app: App, instance_id: str, user: str, db: str) -> None:
    """Take away a user's access to database DB."""
    path = f"{user_path(instance_id, user)}/databases/{quote(db, safe='')}"
    app.api.request("DELETE", path)
    app.done(f"User {user} is losing access to {db}.")


@user.command("access")
@click.argument("instance_id", metavar="INSTANCE")
@user_arg
@click.pass_obj
def user_access(app: App, instance_id: str, user: str) -> None:
    """List the databases a user of INSTANCE may use."""
    items = app.api.paginate(f"{user_path(instance_id, user)}/databases", "databases")
    app.output({"databases": items}, lambda: fmt.table(["Name"], ([d.get("name")] for d in items)))


# -- root -------------------------------------------------------------------------------------


@cli.group()
def root() -> None:
    """Manage the superuser of an instance."""


@root.command("enable")
@click.argument("instance_id", metavar="INSTANCE")
@click.option("--password", help="Use this password instead of a generated one.")
@click.pass_obj
def root_enable(app: App, instance_id: str, password: str | None) -> None:
    """Enable the superuser and print its password (shown only this once)."""
    req = {"password": password} if password else None
    body = app.api.request("POST", f"{inst_path(instance_id)}/root", req)
    root_user = need(body, "user")
    keys = ("name", "password")
    app.output(body, lambda: fmt.pairs((k, root_user.get(k)) for k in keys), secret=True)
    click.echo("The password is not shown again: store it now.", err=True)


@root.command("show")
@click.argument("instance_id", metavar="INSTANCE")
@click.pass_obj
def root_show(app: App, instance_id: str) -> None:
    """Tell whether the superuser was ever enabled."""
    body = app.api.get(f"{inst_path(instance_id)}/root")
    enabled = need(body, "rootEnabled")
    app.output(body, lambda: fmt.pairs([("root_enabled", bool(enabled))]))


@root.command("disable")
@click.argument("instance_id", metavar="INSTANCE")
@click.pass_obj
def root_disable(app: App, instance_id: str) -> None:
    """Disable the superuser."""
    app.api.request("DELETE", f"{inst_path(instance_id)}/root")
    app.done(f"Superuser of instance {instance_id} disabled.")


# -- catalogue --------------------------------------------------------------------------------


@cli.group()
def flavor() -> None:
    """Instance sizes."""


@flavor.command("list")
@click.pass_obj
def flavor_list(app: App) -> None:
    """List flavors."""
    items = app.api.paginate("flavors", "flavors")
    keys = ("name", "vcpus", "ram", "disk")
    rows = ([fmt.flavor_id(f), *(f.get(k) for k in keys)] for f in items)
    headers = ["ID", "Name", "vCPUs", "RAM (MB)", "Disk (GB)"]
    app.output({"flavors": items}, lambda: fmt.table(headers, rows))


@flavor.command("show")
@click.argument("flavor_id", metavar="ID")
@click.pass_obj
def flavor_show(app: App, flavor_id: str) -> None:
    """Show flavor ID."""
    body = app.api.get(f"flavors/{quote(flavor_id, safe='')}")
    app.output(body, lambda: fmt.pairs(fmt.flat_pairs(need(body, "flavor"))))


@cli.group()
def datastore() -> None:
    """Database engines and their versions."""


@datastore.command("list")
@click.pass_obj
def datastore_list(app: App) -> None:
    """List datastores."""
    items = app.api.paginate("datastores", "datastores")
    rows = (
        [d.get("name"), d.get("id"), fmt.default_version_name(d), d.get("versions")] for d in items
    )
    headers = ["Name", "ID", "Default version", "Versions"]
    app.output({"datastores": items}, lambda: fmt.table(headers, rows))


@datastore.command("show")
@click.argument("name")
@click.pass_obj
def datastore_show(app: App, name: str) -> None:
    """Show datastore NAME (a name or an id)."""
    body = app.api.get(f"datastores/{quote(name, safe='')}")
    app.output(body, lambda: fmt.pairs(fmt.datastore_pairs(need(body, "datastore"))))


@datastore.command("versions")
@click.argument("name")
@click.pass_obj
def datastore_versions(app: App, name: str) -> None:
    """List the versions of datastore NAME."""
    items = app.api.paginate(f"datastores/{quote(name, safe='')}/versions", "versions")
    rows = ([v.get("name"), v.get("version"), v.get("id")] for v in items)
    app.output({"versions": items}, lambda: fmt.table(["Name", "Version", "ID"], rows))


@cli.command("limits")
@click.pass_obj
def limits(app: App) -> None:
    """Show the limits of the project."""
    body = app.api.get("limits")
    app.output(body, lambda: fmt.limits_text(need(body, "limits")))


@cli.command("up")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="COVE_DATA_DIR",
    help="Where Cove keeps everything it writes (COVE_DATA_DIR).",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    envvar="COVE_API_PORT",
    help="API port (COVE_API_PORT, default 8779).",
)
def up_command(data_dir: str | None, port: int | None) -> None:
    """Run the whole control plane here: API, task manager, conductor, embedded bus."""
    from cove.cli.up import up
    from cove.common.errors import CoveError
    from cove.common.log import setup_logging
    from cove.common.settings import load_settings

    overrides: dict[str, Any] = {}
    if data_dir:
        overrides["data_dir"] = data_dir
    if port:
        overrides["api_port"] = port
    try:
        settings = load_settings(**overrides)
        setup_logging("up", settings.log_level)
        status = up(settings)
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc
    sys.exit(status)


def main() -> None:
    """Entry point of ``cove``."""
    cli.main(prog_name="cove")


if __name__ == "__main__":
    main()
