"""The host's filter on who may connect to an instance (``access.allowed_cidrs``), in nftables.

One table per Cove of the host (named after its data directory), replaced as a whole in one
``nft -f`` transaction, so a change is atomic and a table left by a crash is simply
overwritten. Its ``input`` chain sends a TCP packet for an instance's address and port (its
own, its published one on the public address, its group's endpoints) to the instance's chain,
which accepts the instance's networks and the host's trusted sources and resets the rest:
the client sees its connection refused before the database server sees anything. Instances
that let every address in have no chain. Every packet is checked, not only new connections,
so a network taken away cuts the connections it had.

:meth:`Firewall.apply` is given the whole wanted state every time (the task manager's
coordinator calls it every 0.2 s) and is cheap when nothing changed; an empty state removes
the table. The table is written again every ``REFRESH`` seconds all the same, so one that
something else removed (``nft flush ruleset``) is back soon. Several task managers of one host
take turns through a lock file of root's (``localfs.host_lock``), each writing the state it
read from the control database.

* :func:`detect` looks once at the host: a :class:`Firewall` when nftables can be used here
  (root, the ``nft`` tool, a kernel that takes a table), otherwise None and the reason, for
  the operator's log.

Raises OSError when ``nft`` refuses the rules (the next call tries again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cove.compute import localfs

LOG = logging.getLogger(__name__)

TIMEOUT = 30.0
#: Seconds after which an unchanged state is written again.
REFRESH = 10.0


@dataclass(frozen=True)
class Guarded:
    """One instance whose connections are filtered."""

    instance_id: str
    #: Where clients reach it: (address, port) pairs.
    targets: tuple[tuple[str, int], ...]
    #: The networks it lets in (never empty: an instance open to all is not guarded).
    allowed: tuple[str, ...]
    #: Sources always let in besides: the host's own services and its group's members.
    trusted: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.instance_id.replace("-", "")


def table_name(data_dir: Path) -> str:
    """The table of the Cove whose data directory is ``data_dir``."""
    return "cove_" + hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]


def render(table: str, guarded: Sequence[Guarded]) -> str:
    """The nft script that makes ``table`` hold exactly ``guarded`` (none: no table)."""
    lines = [f"table ip {table} {{}}", f"delete table ip {table}"]
    rules = sorted((g for g in guarded if g.targets), key=lambda g: g.instance_id)
    if not rules:
        return "\n".join(lines) + "\n"
    targets = ", ".join(
        f"{address} . {port} : jump i_{g.key}" for g in rules for address, port in g.targets
    )
    lines += [
        f"table ip {table} {{",
        "    chain input {",
        "        type filter hook input priority filter; policy accept;",
        f"        ip daddr . tcp dport vmap {{ {targets} }}",
        "    }",
    ]
    for g in rules:
        lines.append(f"    chain i_{g.key} {{")
        for networks in (g.trusted, g.allowed):
            if networks:
                lines.append(f"        ip saddr {{ {', '.join(networks)} }} accept")
        lines += ["        reject with tcp reset", "    }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


class Firewall:
    """The nftables table of one Cove (``table``), written by ``binary``."""

    def __init__(self, table: str, lock_dir: Path, binary: str = "nft") -> None:
        self.table = table
        self.binary = binary
        self._lock_path = lock_dir / "firewall.lock"
        self._lock = threading.Lock()
        self._applied: tuple[Guarded, ...] | None = None
        self._written = 0.0

    def apply(self, guarded: Sequence[Guarded]) -> None:
        """Filter exactly ``guarded``. Raises OSError when nft refuses."""
        wanted = tuple(sorted(guarded, key=lambda g: g.instance_id))
        with self._lock:
            now = time.monotonic()
            if wanted == self._applied and now - self._written < REFRESH:
                return
            with localfs.host_lock(self._lock_path):
                self._run(render(self.table, wanted))
            if wanted != self._applied:
                LOG.info("connections to %d instance(s) are filtered by the host", len(wanted))
            self._applied, self._written = wanted, now

    def check(self) -> None:
        """Have nft check (not apply) a table like this one's. Raises OSError."""
        probe = Guarded("probe", (("127.0.0.2", 1),), ("192.0.2.0/24",), ("127.0.0.1",))
        self._run(render(self.table, [probe]), check=True)

    def _run(self, script: str, check: bool = False) -> None:
        try:
            done = subprocess.run(
                [self.binary, *(["--check"] if check else []), "-f", "-"],
                input=script,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OSError(f"nft failed: {exc}") from exc
        if done.returncode != 0:
            raise OSError(f"nft refused the rules: {done.stderr.strip()[-500:]}")


def detect(data_dir: Path) -> tuple[Firewall | None, str]:
    """The host's filter for this Cove, or None and why there can be none here."""
    if os.geteuid() != 0:
        return None, "Cove does not run as root, and only root sets the host's filter"
    binary = shutil.which("nft")
    if binary is None:
        return None, "nft missing (Debian's nftables package)"
    firewall = Firewall(table_name(data_dir), data_dir / "locks", binary)
    try:
        firewall.check()
    except OSError as exc:
        return None, f"the kernel refuses nftables tables ({exc})"
    return firewall, f"nftables table {firewall.table}"
