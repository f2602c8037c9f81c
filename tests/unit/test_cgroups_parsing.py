"""What ``cove.common.cgroups`` reads from the kernel's files, for both cgroup versions."""

from __future__ import annotations

from pathlib import Path

from cove.common import cgroups

V1_MOUNTS = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/cpuset cgroup rw,relatime,cpuset 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
"""
V2_MOUNTS = "cgroup2 /sys/fs/cgroup cgroup2 rw,nosuid,nodev,noexec,relatime 0 0\n"


def test_hierarchies_are_found_by_controller() -> None:
    found = cgroups._mounts(V1_MOUNTS)
    assert found["memory"] == Path("/sys/fs/cgroup/memory")
    # A controller mounted with another one, not confused with cpuset.
    assert found["cpu"] == Path("/sys/fs/cgroup/cpu,cpuacct")
    assert cgroups._mounts(V2_MOUNTS) == {"unified": Path("/sys/fs/cgroup")}


def test_a_process_group_paths_by_controller() -> None:
    text = "9:name=systemd:/\n4:memory:/cove/abc\n2:cpu,cpuacct:/cove/abc\n0::/\n"
    assert cgroups._own_paths(text) == {"memory": "/cove/abc", "cpu": "/cove/abc", "unified": "/"}
    assert cgroups._own_paths("0::/cove/abc\n") == {"unified": "/cove/abc"}


def test_counters_and_limits_as_the_kernel_writes_them() -> None:
    oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"
    assert cgroups._counter(oom_control, "oom_kill") == 3
    assert cgroups._counter("low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n", "oom_kill") == 1
    assert cgroups._counter("oom 1\n", "oom_kill") == 0
    assert cgroups._bytes("9223372036854771712") is None  # v1's "no limit"
    assert cgroups._bytes("max") is None  # v2's
    assert cgroups._bytes(str(512 << 20)) == 512 << 20
