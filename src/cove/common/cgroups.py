"""Kernel limits on an instance's processes: one control group per instance, sized by its
flavor (``docs/architecture.md``, "Isolation").

Both cgroup versions are spoken. Version 1 mounts each controller as a hierarchy of its own
(``memory`` and ``cpu`` are the two used: an instance's group exists in both); version 2 has
one unified hierarchy, whose root must offer the ``memory`` and ``cpu`` controllers (they
are switched on for Cove's parent group and its children). An instance's group is
``<parent>/<instance id>`` in every hierarchy used, ``parent`` being Cove's setting
(``cgroup_parent``, default ``cove``) below each hierarchy's root.

* :func:`detect` looks once at the host: a :class:`Cgroups` when groups can be made here
  (as root, with both controllers), otherwise None and the reason, for the operator's log.
* :meth:`Cgroups.limit` makes the group (idempotent) and writes its limits: memory (the
  flavor's RAM, swap included where the kernel accounts for it) and CPU (a quota of the
  flavor's vCPUs every period, and a weight in proportion). A memory limit below what the
  group uses now is not set (version 1's kernel refuses it with ``EBUSY``; version 2's would
  take it and kill processes at once): :class:`LimitPending` says so and the caller asks
  again later.
* :meth:`Cgroups.join` moves processes into the group (a process gone meanwhile is skipped);
  their later children are born in it.
* :meth:`Cgroups.rename` gives a group another name, its processes and limits with it (a
  spare place's group becomes its instance's: no process is moved, which in version 1 waits
  for the kernel).
* :meth:`Cgroups.remove` removes the group once its processes are gone; idempotent.
* :func:`own_limits` is what a process finds about its own group (the guest agent reports
  it): no privilege needed, nothing written.

Raises OSError where the kernel refuses something else (a controller gone, a full group).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger(__name__)

#: The scheduler period CPU quotas are counted in (microseconds).
CPU_PERIOD_US = 100_000
#: A limit the kernel reports as "none" is at least this large (v1 writes a huge number).
_UNLIMITED = 1 << 60
MOUNTS = Path("/proc/self/mounts")
CONTROLLERS = ("memory", "cpu")


class LimitPending(Exception):
    """The group uses more memory than the new limit: the kernel kept the old one."""


@dataclass(frozen=True)
class Limits:
    """What a group's limits are, and what it has used."""

    #: Bytes; None when unlimited.
    memory_bytes: int | None
    #: CPU cores a period's quota buys; None when unlimited.
    cpus: float | None
    memory_used_bytes: int | None = None
    #: Processes the kernel killed for want of memory in the group.
    oom_kills: int = 0


def _mounts(text: str) -> dict[str, Path]:
    """Hierarchy roots by controller (``unified`` for version 2) from ``/proc/self/mounts``."""
    found: dict[str, Path] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount_point, kind, options = fields[1], fields[2], fields[3].split(",")
        if kind == "cgroup2":
            found.setdefault("unified", Path(mount_point))
        elif kind == "cgroup":
            for controller in CONTROLLERS:
                if controller in options:
                    found.setdefault(controller, Path(mount_point))
    return found


def _read(path: Path) -> str:
    return path.read_text().strip()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as fh:
        fh.write(value)


def _counter(text: str, name: str) -> int:
    """A ``name value`` line of a flat keyed file (``memory.events``, ``memory.oom_control``)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name and value.strip().isdigit():
            return int(value)
    return 0


def _bytes(text: str) -> int | None:
    if text == "max" or not text.isdigit():
        return None
    value = int(text)
    return None if value >= _UNLIMITED else value


class Cgroups:
    """Groups below ``parent`` in the hierarchies ``roots`` (controller -> root directory)."""

    def __init__(self, roots: dict[str, Path], parent: str) -> None:
        self.version = 2 if "unified" in roots else 1
        self.parent = parent.strip("/")
        self._roots = roots

    def describe(self) -> str:
        return f"cgroup v{self.version}"

    def _dirs(self, instance_id: str) -> dict[str, Path]:
        """The group's directory in each hierarchy used."""
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise ValueError(f"bad instance id {instance_id!r}")
        return {
            controller: root / self.parent / instance_id for controller, root in self._roots.items()
        }

    def _prepare_parent(self) -> None:
        for root in self._roots.values():
            (root / self.parent).mkdir(exist_ok=True)
        if self.version == 2:
            unified = self._roots["unified"]
            for group in (unified, unified / self.parent):
                _write(group / "cgroup.subtree_control", "+memory +cpu")

    def limit(self, instance_id: str, ram_mb: int, vcpus: int) -> None:
        """Raises LimitPending when the memory limit could not be lowered yet (the CPU limits
        are written all the same), OSError otherwise."""
        self._prepare_parent()
        dirs = self._dirs(instance_id)
        for group in dirs.values():
            group.mkdir(exist_ok=True)
        memory = ram_mb * 1024 * 1024
        quota = vcpus * CPU_PERIOD_US
        pending = False
        if self.version == 1:
            mem, cpu = dirs["memory"], dirs["cpu"]
            pending = not self._set_memory_v1(mem, memory)
            _write(cpu / "cpu.cfs_period_us", str(CPU_PERIOD_US))
            _write(cpu / "cpu.cfs_quota_us", str(quota))
            _write(cpu / "cpu.shares", str(1024 * vcpus))
        else:
            group = dirs["unified"]
            used = _bytes(_read(group / "memory.current")) or 0
            if used > memory:
                pending = True
            else:
                _write(group / "memory.max", str(memory))
            with contextlib.suppress(FileNotFoundError):  # no swap accounting
                _write(group / "memory.swap.max", "0")
            _write(group / "cpu.max", f"{quota} {CPU_PERIOD_US}")
            _write(group / "cpu.weight", str(min(10_000, 100 * vcpus)))
        if pending:
            raise LimitPending(
                f"instance {instance_id} uses more than {ram_mb} MB; its memory limit is "
                "lowered once it uses less"
            )

    @staticmethod
    def _set_memory_v1(group: Path, memory: int) -> bool:
        """Memory and memory+swap (where swap is accounted: ``memsw``) both at ``memory``;
        the kernel wants memory <= memsw at every step, so the order depends on the way.
        False when it refused to go lower than the group uses."""
        memsw = group / "memory.memsw.limit_in_bytes"
        files = [group / "memory.limit_in_bytes"] + ([memsw] if memsw.exists() else [])
        current = _bytes(_read(files[0]))
        lowering = current is None or memory < current
        try:
            for path in files if lowering else reversed(files):
                _write(path, str(memory))
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            return False
        return True

    def join(self, instance_id: str, pids: Iterable[int]) -> None:
        """Raises OSError when the group is missing (make it with ``limit`` first)."""
        pids = list(pids)
        for group in self._dirs(instance_id).values():
            for pid in pids:
                try:
                    _write(group / "cgroup.procs", str(pid))
                except ProcessLookupError:
                    continue  # gone meanwhile

    def rename(self, old: str, new: str) -> None:
        """Raises OSError when ``old`` is missing or ``new`` exists."""
        for controller, group in self._dirs(old).items():
            target = self._dirs(new)[controller]
            if target.exists():
                raise FileExistsError(f"the control group {target} exists")
            group.rename(target)

    def contains(self, instance_id: str, pid: int) -> bool:
        """Whether ``pid`` is in the instance's group in every hierarchy (False once gone)."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        paths = _own_paths(text)
        want = f"/{self.parent}/{instance_id}"
        if self.version == 2:
            return paths.get("unified") == want
        return all(paths.get(c) == want for c in CONTROLLERS)

    def pids(self, instance_id: str) -> list[int]:
        """The processes in the instance's group (none when it is missing)."""
        found: set[int] = set()
        for group in self._dirs(instance_id).values():
            with contextlib.suppress(FileNotFoundError):
                found.update(int(p) for p in _read(group / "cgroup.procs").split())
        return sorted(found)

    def remove(self, instance_id: str) -> None:
        """Raises OSError (EBUSY) while processes remain in the group."""
        for group in self._dirs(instance_id).values():
            with contextlib.suppress(FileNotFoundError):
                group.rmdir()

    def limits(self, instance_id: str) -> Limits:
        """Raises OSError when the group is missing."""
        dirs = self._dirs(instance_id)
        if self.version == 1:
            return _limits_v1(dirs["memory"], dirs["cpu"])
        return _limits_v2(dirs["unified"])


def _limits_v1(memory: Path, cpu: Path) -> Limits:
    quota = int(_read(cpu / "cpu.cfs_quota_us"))
    period = int(_read(cpu / "cpu.cfs_period_us")) or CPU_PERIOD_US
    return Limits(
        memory_bytes=_bytes(_read(memory / "memory.limit_in_bytes")),
        cpus=None if quota < 0 else quota / period,
        memory_used_bytes=_bytes(_read(memory / "memory.usage_in_bytes")),
        oom_kills=_counter(_read(memory / "memory.oom_control"), "oom_kill"),
    )


def _limits_v2(group: Path) -> Limits:
    quota, _, period = _read(group / "cpu.max").partition(" ")
    return Limits(
        memory_bytes=_bytes(_read(group / "memory.max")),
        cpus=None if quota == "max" else int(quota) / int(period or CPU_PERIOD_US),
        memory_used_bytes=_bytes(_read(group / "memory.current")),
        oom_kills=_counter(_read(group / "memory.events"), "oom_kill"),
    )


def _own_paths(text: str) -> dict[str, str]:
    """Group paths by controller (``unified`` for version 2) from ``/proc/<pid>/cgroup``."""
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:
            paths["unified"] = path
        for controller in controllers.split(","):
            if controller in CONTROLLERS:
                paths[controller] = path
    return paths


def detect(parent: str) -> tuple[Cgroups | None, str]:
    """The host's groups for instances, or None and why they cannot be had here."""
    if os.geteuid() != 0:
        return None, "Cove does not run as root, and only root makes control groups here"
    try:
        roots = _mounts(MOUNTS.read_text())
    except OSError as exc:
        return None, f"cannot read the mounted cgroup hierarchies: {exc.strerror}"
    if all(c in roots for c in CONTROLLERS):
        chosen = {c: roots[c] for c in CONTROLLERS}
    elif "unified" in roots:
        try:
            available = set(_read(roots["unified"] / "cgroup.controllers").split())
        except OSError as exc:
            return None, f"cannot read the cgroup v2 controllers: {exc.strerror}"
        missing = sorted(set(CONTROLLERS) - available)
        if missing:
            return None, f"the cgroup v2 hierarchy has no {' or '.join(missing)} controller"
        chosen = {"unified": roots["unified"]}
    else:
        return None, "no cgroup hierarchy has the memory and cpu controllers mounted"
    groups = Cgroups(chosen, parent)
    try:
        groups._prepare_parent()
    except OSError as exc:
        return None, f"cannot make Cove's control group ({exc.strerror})"
    return groups, groups.describe()


def own_limits(instance_id: str) -> Limits | None:
    """The limits of the calling process's own group when it is ``instance_id``'s; None
    otherwise (another group's limits, a service's or a container's, are not the instance's,
    nor are its kills), or when a hierarchy cannot be read."""
    try:
        paths = _own_paths(Path("/proc/self/cgroup").read_text())
        roots = _mounts(MOUNTS.read_text())
        used = [c for c in CONTROLLERS if c in roots and c in paths] or ["unified"]
        if not all(paths.get(c, "/").rsplit("/", 1)[-1] == instance_id for c in used):
            return None
        if used == list(CONTROLLERS):
            found = _limits_v1(
                roots["memory"] / paths["memory"].lstrip("/"),
                roots["cpu"] / paths["cpu"].lstrip("/"),
            )
        elif used == ["unified"] and "unified" in roots:
            found = _limits_v2(roots["unified"] / paths["unified"].lstrip("/"))
        else:
            return None
    except (OSError, ValueError):
        return None
    if found.memory_bytes is None and found.cpus is None:
        return None
    return found
