"""Pure helpers of the ``cove`` CLI: parsing ``--user`` specs and rendering API bodies as text.

Nothing here talks to the network or to click, so every rule is unit-testable on plain data.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Body = dict[str, Any]

#: Database names as Cove accepts them; a ``@suffix`` of a ``--user`` spec must look like a
#: comma-separated list of these to be read as databases rather than as part of the password.
_DB_LIST = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]*(,[A-Za-z_][A-Za-z0-9_$-]*)*$")

#: Default ports, used in connection hints when the instance view carries no ``port``.
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306, "redis": 6379}


class SpecError(ValueError):
    """A ``--user`` spec that cannot be understood; the message is fit for a user."""


@dataclass(frozen=True)
class UserSpec:
    """One ``--user`` option of ``cove instance create``.

    ``password`` is None when the user must be prompted for it; ``databases`` is None when the
    user gets every database of the instance.
    """

    name: str
    password: str | None = field(repr=False)
    databases: tuple[str, ...] | None


def _split_dbs(text: str) -> tuple[str, tuple[str, ...] | None]:
    """Split ``head@db1,db2`` at the last '@' when the tail is a database list."""
    head, at, tail = text.rpartition("@")
    if at and _DB_LIST.match(tail):
        return head, tuple(tail.split(","))
    return text, None


def parse_user_spec(spec: str, option: str = "--user") -> UserSpec:
    """Read ``NAME[:PASSWORD][@DB1,DB2]``.

    The name ends at the first ':'; the password may contain ':'. A trailing ``@...`` is a
    database list only if everything after the last '@' is made of database-name characters and
    commas; otherwise it is part of the password. Without ':' the password is to be prompted.

    Raises SpecError for an empty name or an empty password; its message names ``option``,
    where the spec was given.
    """
    name, colon, rest = spec.partition(":")
    if not colon:
        name, dbs = _split_dbs(spec)
        password: str | None = None
    else:
        password, dbs = _split_dbs(rest)
        if not password:
            raise SpecError(f"{option} {name}: the password after ':' is empty")
    if not name:
        raise SpecError(f"{option} needs a user name before ':' (NAME:PASSWORD[@DB,...])")
    return UserSpec(name=name, password=password, databases=dbs)


def spec_databases(spec: UserSpec, all_databases: Sequence[str]) -> list[str]:
    """The databases a spec's user gets, checking each one is created with the instance.

    Raises SpecError when the spec names a database that is not in ``all_databases``.
    """
    if spec.databases is None:
        return list(all_databases)
    missing = [db for db in spec.databases if db not in all_databases]
    if missing:
        raise SpecError(
            f"--user {spec.name}: database {', '.join(missing)} is not created by this command; "
            "add it with --database, or, if '@' is part of the password, leave the password out "
            "of --user to be prompted for it"
        )
    return list(spec.databases)


def redact(value: Any) -> Any:
    """A copy of a JSON value without any ``password`` key, so output never shows one."""
    if isinstance(value, Mapping):
        return {k: redact(v) for k, v in value.items() if k != "password"}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def text(value: Any) -> str:
    """A JSON value as one table cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(text(v.get("name", v) if isinstance(v, Mapping) else v) for v in value)
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={text(v)}" for k, v in value.items() if k != "links")
    return str(value)


@dataclass(frozen=True)
class Table:
    """What a listing shows: named columns, a row of JSON values per item."""

    headers: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]

    @classmethod
    def of(cls, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
        return cls(tuple(headers), tuple(tuple(r) for r in rows))

    def records(self) -> list[dict[str, Any]]:
        """A row as an object keyed by the headers."""
        return [dict(zip(self.headers, row, strict=True)) for row in self.rows]


@dataclass(frozen=True)
class Pairs:
    """What a show command shows: fields and their JSON values, in order; ``detail``, a table
    of what the object holds (a cluster's members), is shown under them as the field
    ``detail_name``."""

    items: tuple[tuple[str, Any], ...]
    detail: Table | None = None
    detail_name: str = ""

    @classmethod
    def of(
        cls, items: Iterable[tuple[str, Any]], detail: Table | None = None, detail_name: str = ""
    ) -> Pairs:
        return cls(tuple(items), detail, detail_name)

    def records(self) -> dict[str, Any]:
        """The fields as one object, the detail's rows as a list of objects in it."""
        found = dict(self.items)
        if self.detail is not None:
            found[self.detail_name] = self.detail.records()
        return found


#: What ``-f`` takes; ``table`` is the default.
FORMATS = ("table", "json", "yaml", "value", "csv")


class ColumnError(ValueError):
    """A ``-c`` naming no column of the output; the message is fit for a user."""


def select(shown: Table | Pairs, columns: Sequence[str]) -> Table | Pairs:
    """``shown`` with only ``columns`` (headers or field names, matched without regard to
    case), in the order given; all of it when ``columns`` is empty.

    Raises ColumnError for a name that matches nothing.
    """
    if not columns:
        return shown
    names = list(shown.headers) if isinstance(shown, Table) else [k for k, _ in shown.items]
    if isinstance(shown, Pairs) and shown.detail is not None:
        names.append(shown.detail_name)
    index = {n.lower(): i for i, n in reversed(list(enumerate(names)))}
    unknown = [c for c in columns if c.lower() not in index]
    if unknown:
        raise ColumnError(
            f"no column {', '.join(repr(c) for c in unknown)}; the columns are: {', '.join(names)}"
        )
    picked = [index[c.lower()] for c in columns]
    if isinstance(shown, Table):
        return Table(
            tuple(shown.headers[i] for i in picked),
            tuple(tuple(row[i] for i in picked) for row in shown.rows),
        )
    detail = shown.detail if len(shown.items) in picked else None
    return Pairs(
        tuple(shown.items[i] for i in picked if i < len(shown.items)), detail, shown.detail_name
    )


def render(shown: Table | Pairs, form: str) -> str:
    """``shown`` in output format ``form`` (one of FORMATS).

    ``table`` aligns the cells as text, leaving out a show's empty fields; ``json`` and
    ``yaml`` give a list of objects (a listing) or an object (a show) keyed by column, with
    the values as the API gave them; ``value`` prints the cells alone, a row per line (a
    show's values one per line), for shell scripts; ``csv`` has a header line. A show's
    detail is in the table and the JSON and YAML objects, not in ``value`` and ``csv``.
    """
    records: Any = shown.records()
    if isinstance(shown, Table):
        headers, rows = shown.headers, shown.rows
    else:
        headers, rows = ("Field", "Value"), shown.items
    if form == "json":
        return json.dumps(records, indent=2)
    if form == "yaml":
        # Imported here: the parser is a tenth of a short command's start.
        import yaml

        return yaml.safe_dump(records, sort_keys=False, allow_unicode=True).rstrip("\n")
    if form == "value":
        if isinstance(shown, Pairs):
            return "\n".join(text(v) for _, v in shown.items)
        return "\n".join(" ".join(text(c) for c in row) for row in rows)
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        writer.writerow(headers)
        for row in rows:
            writer.writerow([c if _number(c) else text(c) for c in row])
        return out.getvalue().rstrip("\n")
    if isinstance(shown, Table):
        return table(shown.headers, shown.rows)
    if shown.detail is None or not shown.detail.rows:
        return pairs(shown.items)
    under = table(shown.detail.headers, shown.detail.rows)
    return f"{pairs(shown.items)}\n\n{under}" if shown.items else under


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An aligned text table: a header line, then one line per row, columns two spaces apart."""
    cells = [list(headers), *([text(c) for c in row] for row in rows)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def pairs(items: Iterable[tuple[str, Any]]) -> str:
    """``key  value`` lines with the values aligned; empty values are left out."""
    kept = [(k, text(v)) for k, v in items if v is not None and text(v) != ""]
    width = max((len(k) for k, _ in kept), default=0)
    return "\n".join(f"{k.ljust(width)}  {v}".rstrip() for k, v in kept)


def flat_pairs(body: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Every field of an object as pairs, nested objects as dotted keys, ``links`` skipped."""
    out: list[tuple[str, Any]] = []
    for key, value in body.items():
        if key in ("links", "password"):
            continue
        if isinstance(value, Mapping):
            out.extend(flat_pairs(value, f"{prefix}{key}."))
        else:
            out.append((f"{prefix}{key}", value))
    return out


# -- instances ------------------------------------------------------------------------------


def reach(inst: Mapping[str, Any]) -> tuple[str, int | None]:
    """Where to reach an instance: hostname, else a public address (on the port it is
    published on), else the first; and the port when it is not the datastore's standard one
    (None)."""
    port = inst.get("port")
    if inst.get("hostname"):
        return str(inst["hostname"]), port
    addresses = inst.get("addresses") or []
    for kind in ("public", "private"):
        for a in addresses:
            if a.get("type") == kind and a.get("address"):
                return str(a["address"]), a.get("port") or port
    ips = inst.get("ip") or []
    return (str(ips[0]) if ips else ""), port


def _datastore(inst: Mapping[str, Any]) -> str:
    ds = inst.get("datastore") or {}
    return " ".join(str(ds[k]) for k in ("type", "version") if ds.get(k))


def status_label(inst: Mapping[str, Any]) -> str:
    """``status``, with ``operating_status`` after a '/' when it says something more."""
    status = str(inst.get("status") or "")
    health = inst.get("operating_status")
    return f"{status}/{health}" if health and health != status else status


INSTANCE_HEADERS = ("ID", "Name", "Datastore", "Status", "Flavor", "Size", "Address")


def instance_row(inst: Mapping[str, Any]) -> list[Any]:
    host, port = reach(inst)
    if host and port:
        host = f"{host}:{port}"
    return [
        inst.get("id"),
        inst.get("name"),
        _datastore(inst),
        status_label(inst),
        (inst.get("flavor") or {}).get("id"),
        (inst.get("volume") or {}).get("size"),
        host,
    ]


def instance_pairs(inst: Mapping[str, Any]) -> list[tuple[str, Any]]:
    volume = inst.get("volume") or {}
    size = f"{volume['size']} GB" if volume.get("size") is not None else None
    if size and volume.get("used") is not None:
        size += f" ({volume['used']} GB used)"
    addresses = [address(a) for a in inst.get("addresses") or []] or inst.get("ip")
    return [
        ("id", inst.get("id")),
        ("name", inst.get("name")),
        ("status", inst.get("status")),
        ("operating_status", inst.get("operating_status")),
        ("datastore", _datastore(inst)),
        ("flavor", (inst.get("flavor") or {}).get("id")),
        ("volume", size),
        ("configuration", _configuration(inst)),
        ("replica_of", (inst.get("replica_of") or {}).get("id")),
        ("replicas", [r.get("id") for r in inst.get("replicas") or []] or None),
        ("read_write", (inst.get("endpoints") or {}).get("read_write")),
        ("read_only", (inst.get("endpoints") or {}).get("read_only")),
        ("replication", _replication(inst)),
        ("hostname", inst.get("hostname")),
        ("addresses", addresses),
        ("ip", inst.get("ip")),
        ("port", inst.get("port")),
        ("access", _access(inst)),
        ("created", inst.get("created")),
        ("updated", inst.get("updated")),
        ("fault", (inst.get("fault") or {}).get("message")),
    ]


def address(entry: Mapping[str, Any]) -> Any:
    """``127.42.0.5 (private)``, ``203.0.113.5:20000 (public)``."""
    where = entry.get("address")
    if entry.get("port") is not None:
        where = f"{where}:{entry['port']}"
    return f"{where} ({entry['type']})" if entry.get("type") else where


def _access(inst: Mapping[str, Any]) -> str | None:
    """Who may connect, in one line."""
    access = inst.get("access") or {}
    if not access:
        return None
    cidrs = ", ".join(access.get("allowed_cidrs") or ["0.0.0.0/0"])
    return f"{'public' if access.get('is_public') else 'private'}, from {cidrs}"


def _replication(inst: Mapping[str, Any]) -> str | None:
    """A group member's replication settings in one line."""
    found = inst.get("replication")
    if not found:
        return None
    mode = "synchronous" if found.get("synchronous") else "asynchronous"
    failover = "automatic failover" if found.get("auto_failover") else "no automatic failover"
    return f"{mode}, {failover}, weight {found.get('weight')}"


def _configuration(inst: Mapping[str, Any]) -> str | None:
    group = inst.get("configuration") or {}
    if not group:
        return None
    return f"{group.get('name')} ({group.get('id')})" if group.get("name") else group.get("id")


def connect_hint(inst: Mapping[str, Any], database: str | None, user: str | None) -> str | None:
    """A command line that connects to the instance's database, or None if unknown."""
    kind = str((inst.get("datastore") or {}).get("type") or "").lower()
    host, port = reach(inst)
    if kind not in DEFAULT_PORTS or not host:
        return None
    port = port or DEFAULT_PORTS[kind]
    if kind == "postgresql":
        parts = [f"host={host}", f"port={port}", f"dbname={database or 'postgres'}"]
        if user:
            parts.append(f"user={user}")
        return f'psql "{" ".join(parts)}"'
    if kind == "redis":
        # --askpass: the password is asked for, never put on the command line.
        return f"redis-cli -h {host} -p {port}" + (f" --user {user} --askpass" if user else "")
    line = f"mysql -h {host} -P {port}"
    if user:
        line += f" -u {user} -p"
    return f"{line} {database}" if database else line


def fault_message(inst: Mapping[str, Any]) -> str:
    fault = inst.get("fault") or {}
    return str(fault.get("message") or "no fault message was recorded")


# -- datastores, flavors, limits --------------------------------------------------------------


def default_version_name(ds: Mapping[str, Any]) -> str:
    default = ds.get("default_version")
    for v in ds.get("versions") or []:
        if v.get("id") == default:
            return str(v.get("name"))
    return str(default or "")


def datastore_pairs(ds: Mapping[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("id", ds.get("id")),
        ("name", ds.get("name")),
        ("default_version", default_version_name(ds)),
        ("versions", ds.get("versions")),
    ]


def flavor_id(flavor: Mapping[str, Any]) -> Any:
    return flavor.get("str_id") or flavor.get("id")


def limit_text(value: Any) -> Any:
    """A quota limit, with -1 spelled out."""
    return "unlimited" if value == -1 else value


def quotas_shown(quotas: Any) -> Table | Pairs:
    """Quotas as Trove shows them (a list of ``{resource, in_use, reserved, limit}``), or the
    ``{resource: limit}`` mapping a change answers with."""
    if isinstance(quotas, Mapping):
        return Pairs.of((str(k), limit_text(v)) for k, v in quotas.items())
    rows = (
        [q.get("resource"), q.get("in_use"), q.get("reserved"), limit_text(q.get("limit"))]
        for q in quotas or []
        if isinstance(q, Mapping)
    )
    return Table.of(["Resource", "In use", "Reserved", "Limit"], rows)


def limits_shown(limits: Sequence[Mapping[str, Any]]) -> Pairs:
    """Absolute limits as fields, rate limits as a table under them (``rate_limits``)."""
    items: list[tuple[str, Any]] = []
    for lim in limits:
        if lim.get("verb") == "ABSOLUTE":
            items += [(str(k), v) for k, v in lim.items() if k != "verb"]
    rates = [lim for lim in limits if lim.get("verb") != "ABSOLUTE"]
    keys = ("verb", "uri", "value", "remaining", "unit", "nextAvailable")
    table = Table.of(keys, ([r.get(k) for k in keys] for r in rates)) if rates else None
    return Pairs.of(items, table, "rate_limits")
