"""Control groups on this host, for real (``cove.common.cgroups``): a group gets its limits,
takes processes and their children, is read back as a process inside it sees it, and goes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest

from cove.common import cgroups


@pytest.fixture
def groups() -> Iterator[cgroups.Cgroups]:
    found, why = cgroups.detect("cove-test")
    if found is None:
        pytest.skip(f"control groups cannot be made here: {why}")
    yield found


def test_a_group_limits_its_processes_and_their_children(groups: cgroups.Cgroups) -> None:
    name = uuid.uuid4().hex
    groups.limit(name, 256, 1)
    # The probe waits to be moved, then starts a child and reads its own limits.
    probe = (
        "import json, subprocess, sys; from cove.common import cgroups; sys.stdin.readline(); "
        "read = 'print(open(\"/proc/self/cgroup\").read())'; "
        "child = subprocess.run([sys.executable, '-c', read], capture_output=True, text=True); "
        "print(json.dumps([cgroups.own_limits(sys.argv[1]).__dict__, "
        "cgroups.own_limits('another'), child.stdout]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", probe, name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        groups.join(name, [proc.pid])
        assert groups.contains(name, proc.pid)
        assert groups.pids(name) == [proc.pid]
        out, _ = proc.communicate("go\n", timeout=60)
    finally:
        proc.kill()
        proc.wait()
    seen, another, child = json.loads(out)
    assert another is None  # only the instance's own group is read as its limits
    assert seen["memory_bytes"] == 256 << 20 and seen["cpus"] == 1.0
    assert seen["oom_kills"] == 0 and 0 < seen["memory_used_bytes"] < 256 << 20
    assert f"/cove-test/{name}" in child  # born in the group

    # Limits change live, both ways.
    groups.limit(name, 1024, 2)
    assert groups.limits(name).memory_bytes == 1024 << 20 and groups.limits(name).cpus == 2.0
    groups.limit(name, 128, 1)
    assert groups.limits(name).memory_bytes == 128 << 20

    groups.remove(name)
    groups.remove(name)  # idempotent
    assert groups.pids(name) == []
    with pytest.raises(FileNotFoundError):
        groups.limits(name)


def test_a_group_is_not_removed_while_a_process_is_in_it(groups: cgroups.Cgroups) -> None:
    name = uuid.uuid4().hex
    groups.limit(name, 256, 1)
    gone = subprocess.Popen(["true"])
    gone.wait()
    proc = subprocess.Popen(["sleep", "60"])
    try:
        groups.join(name, [gone.pid, proc.pid])  # a process gone meanwhile is skipped
        assert groups.pids(name) == [proc.pid]
        with pytest.raises(OSError):
            groups.remove(name)
    finally:
        proc.kill()
        proc.wait()
    groups.remove(name)
    assert not groups.contains(name, proc.pid)


def test_names_that_are_not_one_path_component_are_refused(groups: cgroups.Cgroups) -> None:
    for bad in ("", ".", "..", "a/b"):
        with pytest.raises(ValueError):
            groups.limit(bad, 256, 1)
