from datetime import UTC, datetime, timedelta

import pytest

from cove.domain.status import (
    RESTARTABLE,
    ComputeState,
    GuestStatus,
    InstanceSnapshot,
    Task,
    can_act,
    can_delete,
    compute_status,
)

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
INTERVAL = 5.0


def snap(
    task=Task.NONE,
    compute=ComputeState.ACTIVE,
    guest=GuestStatus.HEALTHY,
    age=1.0,
    agent_age=60.0,
    backup=False,
):
    return InstanceSnapshot(
        task=task,
        compute=compute,
        guest_status=guest,
        heartbeat_at=None if age is None else NOW - timedelta(seconds=age),
        agent_started_at=None if agent_age is None else NOW - timedelta(seconds=agent_age),
        backup_running=backup,
    )


def view(s):
    v = compute_status(s, NOW, INTERVAL)
    return v.status, v.operating_status


def test_steady_state_is_active_healthy():
    assert view(snap()) == ("ACTIVE", "HEALTHY")


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        (Task.BUILDING, "BUILD"),
        (Task.REBOOTING, "REBOOT"),
        (Task.RESIZING, "RESIZE"),
        (Task.DELETING, "SHUTDOWN"),
        (Task.BUILD_ERROR, "ERROR"),
        (Task.DELETE_ERROR, "ERROR"),
    ],
)
def test_task_wins_and_hides_operating_status(task, expected):
    assert view(snap(task=task)) == (expected, "")


def test_building_on_a_failed_place_is_error():
    assert view(snap(task=Task.BUILDING, compute=ComputeState.ERROR)) == ("ERROR", "")


def test_backup_running():
    assert view(snap(backup=True)) == ("BACKUP", "")


def test_lost_heartbeat_leaves_active():
    assert view(snap(age=INTERVAL * 3 + 0.1)) == ("ERROR", "ERROR")
    assert view(snap(age=INTERVAL * 3 - 0.1)) == ("ACTIVE", "HEALTHY")


def test_agent_restarted_but_not_reported_yet():
    assert view(snap(age=2.0, agent_age=1.0)) == ("REBOOT", "")


def test_agent_down_shows_compute_state():
    assert view(snap(compute=ComputeState.SHUTDOWN)) == ("SHUTDOWN", "")


@pytest.mark.parametrize(
    ("guest", "expected"),
    [
        (GuestStatus.CRASHED, ("SHUTDOWN", "SHUTDOWN")),
        (GuestStatus.SHUTDOWN, ("SHUTDOWN", "SHUTDOWN")),
        (GuestStatus.BLOCKED, ("ACTIVE", "BLOCKED")),
        (GuestStatus.FAILED, ("ERROR", "FAILED")),
        (GuestStatus.RUNNING, ("ACTIVE", "ACTIVE")),
        (GuestStatus.RESTARTING, ("REBOOT", "RESTARTING")),
    ],
)
def test_guest_states(guest, expected):
    assert view(snap(guest=guest)) == expected


def test_a_built_instance_whose_guest_has_not_reported_yet_is_still_building():
    # The task manager ended the build; the guest's first report has not arrived.
    assert view(snap(guest=None, age=None)) == ("BUILD", "")


def test_can_act_needs_a_serving_reporting_guest():
    assert can_act(snap(), NOW, INTERVAL)
    assert not can_act(snap(task=Task.REBOOTING), NOW, INTERVAL)
    assert not can_act(snap(guest=GuestStatus.CRASHED), NOW, INTERVAL)
    assert can_act(snap(guest=GuestStatus.CRASHED), NOW, INTERVAL, RESTARTABLE)
    assert not can_act(snap(age=60), NOW, INTERVAL, RESTARTABLE)
    assert not can_act(snap(compute=ComputeState.SHUTDOWN), NOW, INTERVAL)


def test_delete_refused_only_while_building():
    assert not can_delete(snap(task=Task.BUILDING))
    for task in (Task.NONE, Task.BUILD_ERROR, Task.DELETING, Task.REBOOTING):
        assert can_delete(snap(task=task))
