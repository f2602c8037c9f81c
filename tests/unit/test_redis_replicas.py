"""Redis replication without a server: what ``INFO replication`` and ``ACL GETUSER`` say as
values, the replica's lines of redis.conf and its record, the log lines that explain a failed
copy, and why a tenant cannot read the replica's password (the integration tests run the whole
thing against real servers)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.domain.replication import ReplicaSource, ReplicationState, Role
from cove.guestagent.datastores.redis import acl, conf
from cove.guestagent.datastores.redis.backup import restored_acl
from cove.guestagent.datastores.redis.replication import (
    account_state,
    lagging,
    last_warning,
    log_message,
    position_of,
    state_of,
    sync_refusal,
    without_user,
)

SOURCE = ReplicaSource("i-1", "127.0.0.9", 6379, "cove_replication", 'pw "with" \\ odd\nbytes')

#: ``INFO replication`` as the Redis client parses it, on a primary with one online replica
#: and one being copied.
PRIMARY = {
    "role": "master",
    "connected_slaves": 2,
    "slave0": {"ip": "127.0.0.5", "port": 6379, "state": "online", "offset": 3003, "lag": 0},
    "slave1": {"ip": "127.0.0.6", "port": 6379, "state": "wait_bgsave", "offset": 0, "lag": 0},
    "master_failover_state": "no-failover",
    "master_replid": "b395d7c562cbea78ba32c948d51ec0bef94bd91d",
    "master_replid2": 0,
    "master_repl_offset": 3059,
    "second_repl_offset": -1,
}
#: A replica streaming from its primary.
REPLICA = {
    "role": "slave",
    "master_host": "127.0.0.9",
    "master_port": 6379,
    "master_link_status": "up",
    "master_sync_in_progress": 0,
    "slave_read_repl_offset": 3059,
    "slave_repl_offset": 3059,
    "master_repl_offset": 3059,
}
#: A replica started a moment ago: no link yet, and Redis's placeholder offsets.
NEW_REPLICA = {
    **REPLICA,
    "master_link_status": "down",
    "master_last_io_seconds_ago": -1,
    "slave_read_repl_offset": 1,
    "slave_repl_offset": 1,
    "master_repl_offset": 0,
}


def test_the_state_of_a_primary_and_of_replicas() -> None:
    assert state_of(PRIMARY) == ReplicationState(Role.PRIMARY, 3059, False)
    assert state_of(REPLICA) == ReplicationState(Role.REPLICA, 3059, True)
    # Not synced since it started: its offset tells nothing yet.
    assert state_of(NEW_REPLICA) == ReplicationState(Role.REPLICA, None, False)
    # A link lost keeps what was applied; a first sync of a primary that had written nothing
    # starts at 0.
    assert position_of({**REPLICA, "master_link_status": "down"}) == 3059
    assert position_of({**NEW_REPLICA, "master_link_status": "up"}) == 0
    # A standalone server has no backlog and so no offset to speak of.
    assert state_of({"role": "master", "master_repl_offset": 0}).position == 0


def test_replicas_that_have_not_acknowledged_an_offset() -> None:
    assert lagging(PRIMARY, 3003) == []
    # The one being copied is no follower yet: it gets the whole data set anyway.
    assert lagging(PRIMARY, 3059) == ["127.0.0.5:6379"]
    assert lagging({"role": "master", "master_repl_offset": 7}, 7) == []


def getuser(**changes: object) -> dict[str, object]:
    """``ACL GETUSER`` of the replication account as the agent makes it, with ``changes``."""
    user: dict[str, object] = {
        "flags": ["on", "sanitize-payload"],
        "passwords": [conf.password_hash("pw-1")[1:]],
        "commands": "-@all +psync +ping +replconf",
        "keys": "",
        "channels": "",
        "selectors": [],
    }
    return {**user, **changes}


def test_the_replication_account_is_recognised() -> None:
    assert account_state(None, "pw-1") == "missing"
    assert account_state(getuser(), "pw-1") == "current"
    # Another password, or switched off: set again, in place.
    assert account_state(getuser(), "pw-2") == "stale"
    assert account_state(getuser(flags=["off"]), "pw-1") == "stale"
    assert account_state(getuser(passwords=[]), "pw-1") == "stale"
    # A tenant's user under that name (made before the name was reserved) is never taken over.
    for foreign in (
        getuser(keys="~*"),
        getuser(channels="&*"),
        getuser(commands="+@all -@admin"),
        getuser(commands="-@all +psync +replconf +ping +get"),
    ):
        assert account_state(foreign, "pw-1") == "foreign"


def test_the_account_has_only_what_a_replica_needs() -> None:
    assert acl.REPLICATION_RULES == (
        "resetkeys",
        "resetchannels",
        "-@all",
        "+psync",
        "+replconf",
        "+ping",
    )


def test_no_tenant_can_read_the_replicas_password_back() -> None:
    # masterauth is shown by CONFIG GET only; CONFIG (like ACL, DEBUG and MODULE) is in
    # @admin, which tenant users and root are refused, and root is granted none of them back.
    for rules in (acl.USER_RULES, acl.ROOT_RULES):
        assert "-@admin" in rules
        assert rules.index("-@admin") > rules.index("+@all")
        granted = {rule[1:].split("|")[0] for rule in rules if rule.startswith("+")}
        assert granted.isdisjoint({"config", "acl", "debug", "module", "@admin", "@dangerous"})


def test_the_account_is_no_tenants() -> None:
    assert acl.own_user("cove_replication")
    assert acl.own_user("COVE_REPLICATION")
    assert not acl.own_user("app")


def test_a_replicas_redis_conf_ends_with_its_source() -> None:
    config = settings()
    plain = conf.redis_conf(config)
    assert "replicaof" not in plain and "masterauth" not in plain
    text = conf.redis_conf(config, SOURCE)
    assert text.startswith(plain)
    assert text[len(plain) :] == (
        "replicaof 127.0.0.9 6379\n"
        "masteruser cove_replication\n"
        'masterauth "pw \\"with\\" \\\\ odd\\x0abytes"\n'
        "replica-read-only yes\n"
    )
    # Never part of what the instance shows as its configuration.
    assert not {"replicaof", "masteruser", "masterauth"} & set(conf.settings(config))


def test_the_record_of_the_source(tmp_path: Path) -> None:
    assert conf.read_replica_of(tmp_path) is None
    conf.record_replica_of(tmp_path, SOURCE)
    assert conf.read_replica_of(tmp_path) == SOURCE
    assert stat.S_IMODE((tmp_path / conf.REPLICA_OF).stat().st_mode) == 0o600
    conf.forget_replica_of(tmp_path)
    conf.forget_replica_of(tmp_path)  # idempotent
    assert conf.read_replica_of(tmp_path) is None
    # A damaged record is reported without its text, which holds the password.
    (tmp_path / conf.REPLICA_OF).write_text('{"password": "pw-secret"')
    with pytest.raises(GuestError, match="damaged") as err:
        conf.read_replica_of(tmp_path)
    assert "pw-secret" not in str(err.value)


def test_a_former_primary_drops_its_replication_account() -> None:
    text = (
        "user cove_admin on #aa ~* &* +@all\n"
        "user cove_replication on #bb resetchannels -@all +psync +replconf +ping\n"
        "user cove_replication_fan on #cc ~* &* +@all\n"
        "user default off resetchannels -@all\n"
    )
    assert without_user(text, "cove_replication") == (
        "user cove_admin on #aa ~* &* +@all\n"
        "user cove_replication_fan on #cc ~* &* +@all\n"
        "user default off resetchannels -@all\n"
    )
    assert without_user(text, "nobody") == text


def test_a_restored_instance_gets_no_replication_account() -> None:
    current = "user cove_admin on #aa ~* &* +@all\nuser default off\n"
    backed_up = ["user cove_replication on #bb -@all +psync", "user default on #cc ~* +@all"]
    assert restored_acl(current, backed_up) == (
        "user cove_admin on #aa ~* &* +@all\nuser default on #cc ~* +@all\n"
    )


LOG = [
    "22416:C 06 Dec 2026 04:27:11.994 # Configuration loaded",
    "29359:S 06 Dec 2026 04:30:00.749 * Connecting to MASTER 127.0.0.9:6379",
    "29359:S 06 Dec 2026 04:30:00.749 # Error condition on socket for SYNC: Connection refused",
    "29359:S 06 Dec 2026 04:30:01.749 * MASTER <-> REPLICA sync started",
]


def test_log_lines_explain_a_failed_copy() -> None:
    assert log_message(LOG[1]) == ("*", "Connecting to MASTER 127.0.0.9:6379")
    assert log_message("not a log line") == ("", "not a log line")
    assert last_warning(LOG) == "Error condition on socket for SYNC: Connection refused"
    assert last_warning(LOG[1:2]) is None
    # A source that does not answer may yet; one that refuses the account will not.
    assert sync_refusal(LOG) is None
    refused = (
        "29359:S 06 Dec 2026 04:30:00.749 # Unable to AUTH to MASTER: -WRONGPASS invalid "
        "username-password pair or user is disabled."
    )
    assert sync_refusal([*LOG, refused]) == (
        "Unable to AUTH to MASTER: -WRONGPASS invalid username-password pair or user is disabled."
    )


def settings() -> GuestSettings:
    return GuestSettings(
        instance_id="r1",
        datastore="redis",
        datastore_version="7.0",
        bin_dir="/usr/bin",
        address="127.0.0.5",
        port=6379,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis://unused",
        heartbeat_interval=5,
        instance_dir="/srv/cove/r1",
    )
