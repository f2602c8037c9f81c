"""Redis replication without a server: what ``INFO replication`` and ``ACL GETUSER`` say as
values, the replica's lines of redis.conf and its record, the log lines that explain a failed
copy, why a tenant cannot read the replica's password, and which users a replica copies from
its source and how (the integration tests run the whole thing against real servers)."""

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
from cove.guestagent.datastores.redis.usersync import (
    UserChanges,
    UserMirror,
    canonical,
    credentials,
    parse_acl_list,
    tenant_users,
    user_changes,
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
        "commands": "-@all +psync +ping +replconf +acl|list",
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
    # An earlier agent's account, which could not list users: the agent's, set again.
    assert account_state(getuser(commands="-@all +psync +replconf +ping"), "pw-1") == "stale"
    # A tenant's user under that name (made before the name was reserved) is never taken over.
    for foreign in (
        getuser(keys="~*"),
        getuser(channels="&*"),
        getuser(commands="+@all -@admin"),
        getuser(commands="-@all +psync +replconf +ping +get"),
        getuser(commands="-@all +psync +replconf +ping +acl|list +acl|setuser"),
        getuser(commands="-@all +psync +replconf +ping +acl"),
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
        "+acl|list",  # to read only: a replica's agent copies its source's users
    )
    # What an earlier agent gave it: recognised as the agent's, and set again.
    assert (*acl.FORMER_REPLICATION_RULES, "+acl|list") == acl.REPLICATION_RULES


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


#: Password hashes as ACL LIST shows them.
HASH_A = conf.password_hash("pw-alice-1")
HASH_A2 = conf.password_hash("pw-alice-2")
HASH_B = conf.password_hash("pw-bob-1")
HASH_ROOT = conf.password_hash("pw-root-1")
USER = "~* &* +@all -@admin -migrate -restore -restore-asking"
#: ``ACL LIST`` of a primary with two tenant users, root on, the agent's user and the
#: replication account.
SOURCE_LIST = [
    f"user alice on sanitize-payload {HASH_A} {USER}",
    f"user bob on sanitize-payload {HASH_B} {USER}",
    "user cove_admin on sanitize-payload #aa ~* &* +@all",
    "user cove_replication on sanitize-payload #bb resetchannels -@all +replconf +acl|list "
    "+psync +ping",
    f"user default on sanitize-payload {HASH_ROOT} {USER} +monitor +client|list",
]


def test_acl_list_is_read_as_users_and_rules() -> None:
    users = parse_acl_list(
        [
            *SOURCE_LIST[:1],
            # A selector is one rule, as ACL SETUSER takes it.
            "user sel on #cc resetchannels -@all (~x* resetchannels -@all +get) +ping",
            "not a user line",
            "user",
            # Cut short inside a selector: never set half a user.
            "user half on #dd (~x* +get",
        ]
    )
    assert users == {
        "alice": ("on", "sanitize-payload", HASH_A, *USER.split()),
        "sel": ("on", "#cc", "resetchannels", "-@all", "(~x* resetchannels -@all +get)", "+ping"),
    }


def test_a_replica_copies_the_tenants_users_and_root_only() -> None:
    users = parse_acl_list(SOURCE_LIST)
    assert sorted(tenant_users(users)) == ["alice", "bob", "default"]
    # Never the agent's own user nor the replication account, whatever its case, nor a name
    # no tenant user can have.
    odd = {"COVE_REPLICATION": ("on",), "Cove_Admin": ("on",), "a'b": ("on",), "x y": ("on",)}
    assert tenant_users(odd) == {}
    assert acl.tenant_user("default") and acl.tenant_user("app.user-1")
    assert not acl.tenant_user("cove_admin") and not acl.tenant_user("cove_replication")


def test_a_replica_in_step_with_its_source_changes_nothing() -> None:
    source = tenant_users(parse_acl_list(SOURCE_LIST))
    changes = user_changes(source, dict(source))
    assert changes == UserChanges() and not changes


def test_a_new_replica_gets_every_tenant_user_and_root() -> None:
    source = tenant_users(parse_acl_list(SOURCE_LIST))
    fresh = tenant_users(parse_acl_list(["user default off resetchannels -@all"]))
    changes = user_changes(source, fresh)
    assert changes.set == source
    assert changes.delete == ()
    # Root's password came with root switched on: its sessions (none could log in) end.
    assert changes.logout == ("default",)


def test_a_changed_password_a_deleted_and_a_renamed_user_follow() -> None:
    replica = tenant_users(parse_acl_list(SOURCE_LIST))
    source = {
        **{n: r for n, r in replica.items() if n != "bob"},
        "alice": ("on", "sanitize-payload", HASH_A2, *USER.split()),
        "robert": replica["bob"],  # bob renamed: the same rules under a new name
    }
    changes = user_changes(source, replica)
    assert changes.set == {"alice": source["alice"], "robert": replica["bob"]}
    assert changes.delete == ("bob",)
    assert changes.logout == ("alice",)  # as the primary ended alice's sessions


def test_root_is_never_deleted_and_root_disabled_ends_its_sessions() -> None:
    replica = tenant_users(parse_acl_list(SOURCE_LIST))
    without_root = {n: r for n, r in replica.items() if n != "default"}
    assert user_changes(without_root, replica) == UserChanges()
    disabled = {**replica, "default": ("off", "resetchannels", "-@all")}
    changes = user_changes(disabled, replica)
    assert changes.set == {"default": disabled["default"]}
    assert changes.logout == ("default",)


def test_new_rules_with_the_same_password_keep_the_sessions() -> None:
    replica = tenant_users(parse_acl_list(SOURCE_LIST))
    source = {**replica, "bob": (*replica["bob"], "+restore")}
    changes = user_changes(source, replica)
    assert changes.set == {"bob": source["bob"]} and changes.logout == ()
    assert credentials(("on", "#aa", "~*", "+@all")) == {"on", "#aa"}
    assert credentials(("off", "nopass", ">clear", "-@all")) == {"off", "nopass", ">clear"}


def test_the_same_rules_in_another_order_are_the_same_user() -> None:
    # Two servers' ACL LIST of root, made with the same rules: Redis lists a command's
    # subcommands in an order of its own.
    source = ("on", HASH_ROOT, "~*", "+@all", "-@admin", "+latency|doctor", "+latency|reset")
    replica = ("on", HASH_ROOT, "~*", "+@all", "-@admin", "+latency|reset", "+latency|doctor")
    assert canonical(source) == canonical(replica)
    assert user_changes({"default": source}, {"default": replica}) == UserChanges()
    # An order that changes what the user may do is kept: categories, a command and its
    # subcommands, a command named twice.
    for first, second in (
        (("+@all", "-@admin"), ("-@admin", "+@all")),
        (("-@all", "+get", "-@read"), ("-@all", "-@read", "+get")),
        (("+latency", "-latency|reset"), ("-latency|reset", "+latency")),
        (("+get", "-get"), ("-get", "+get")),
        (("~a*", "+get", "%R~b*"), ("%R~b*", "+get", "~a*")),
    ):
        assert canonical(first) != canonical(second)
    assert canonical(("-@all", "+set", "+get", "-@read", "+ping")) == (
        "-@all",
        "+get",
        "+set",
        "-@read",
        "+ping",
    )


class Recording:
    """A client that records the commands it is sent, refusing those named in ``refuse``."""

    def __init__(self, *refuse: str) -> None:
        self.sent: list[tuple[str, ...]] = []
        self.refuse = refuse

    def execute_command(self, *args: str) -> object:
        self.sent.append(args)
        if " ".join(args[:3]) in self.refuse:
            raise GuestError("refused")
        return "OK"


def test_changes_are_applied_then_saved_also_when_one_fails() -> None:
    changes = UserChanges(
        set={"alice": ("on", HASH_A2), "default": ("off",)},
        delete=("bob", "carol"),
        logout=("alice",),
    )
    client = Recording()
    UserMirror._apply(client, changes)  # type: ignore[arg-type]
    assert client.sent == [
        ("ACL", "SETUSER", "alice", "reset", "on", HASH_A2),
        ("ACL", "SETUSER", "default", "reset", "off"),
        ("ACL", "DELUSER", "bob", "carol"),
        ("CLIENT", "KILL", "USER", "alice"),
        ("ACL", "SAVE"),
    ]
    refusing = Recording("ACL SETUSER default")
    with pytest.raises(GuestError):
        UserMirror._apply(refusing, changes)  # type: ignore[arg-type]
    assert refusing.sent[-1] == ("ACL", "SAVE")  # alice's new password is kept


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
