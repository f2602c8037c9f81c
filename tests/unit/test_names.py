import pytest

from cove.common.text import shown
from cove.domain import names
from cove.domain.datastores import DATASTORES
from cove.guestagent.datastores.mariadb import conf as maria_conf
from cove.guestagent.datastores.postgresql import admin as pg_admin
from cove.guestagent.datastores.postgresql import conf as pg_conf
from cove.guestagent.datastores.redis import conf as redis_conf


@pytest.mark.parametrize("value", ["orders", "_x", "a-b", "A$1", "x" * 63])
def test_good_database_names(value):
    for datastore in (None, "postgresql", "mariadb"):
        assert names.database_name(value, datastore) == value


@pytest.mark.parametrize("value", ["", "1abc", "a b", "x" * 64, "a;drop", "é"])
def test_bad_database_names(value):
    with pytest.raises(ValueError):
        names.database_name(value, None)


@pytest.mark.parametrize(
    ("datastore", "value"),
    [
        ("postgresql", "postgres"),
        ("postgresql", "Template1"),
        ("postgresql", "template0"),
        ("postgresql", "pg_foo"),
        ("mariadb", "mysql"),
        ("mariadb", "INFORMATION_SCHEMA"),
        ("mariadb", "performance_schema"),
        ("mariadb", "sys"),
    ],
)
def test_each_datastore_keeps_its_own_databases(datastore, value):
    with pytest.raises(ValueError, match="reserved on"):
        names.database_name(value, datastore)
    # The form alone lets them through, and another datastore has no such database.
    assert names.database_name(value, None) == value
    other = "mariadb" if datastore == "postgresql" else "postgresql"
    assert names.database_name(value, other) == value


@pytest.mark.parametrize("value", ["app", "u.2", "a-b_c", "public1", "Nonesuch", "x" * 63])
def test_good_user_names(value):
    for datastore in (None, *DATASTORES):
        assert names.user_name(value, datastore) == value


@pytest.mark.parametrize("value", ["", "a b", "x" * 64, "a'b", "1x"])
def test_bad_user_names(value):
    with pytest.raises(ValueError):
        names.user_name(value, None)


@pytest.mark.parametrize(
    ("datastore", "value"),
    [
        ("postgresql", "public"),
        ("postgresql", "PUBLIC"),
        ("postgresql", "none"),
        ("postgresql", "current_user"),
        ("postgresql", "session_user"),
        ("postgresql", "current_role"),
        ("postgresql", "system_user"),
        ("postgresql", "user"),
        ("postgresql", "select"),
        ("postgresql", "postgres"),
        ("postgresql", "os_admin"),
        ("postgresql", "root"),
        ("postgresql", "cove_orphans"),
        ("postgresql", "pg_monitor"),
        ("postgresql", "PG_x"),
        ("mariadb", "PUBLIC"),
        ("mariadb", "public"),
        ("mariadb", "CURRENT_USER"),
        ("mariadb", "current_role"),
        ("mariadb", "none"),
        ("mariadb", "mariadb.sys"),
        ("mariadb", "mysql.sys"),
        ("mariadb", "mysql"),
        ("mariadb", "root"),
        ("mariadb", "cove_admin"),
        ("redis", "default"),
        ("redis", "Default"),
        ("redis", "cove_admin"),
    ],
)
def test_reserved_user_names_are_refused_per_datastore(datastore, value):
    with pytest.raises(ValueError, match="reserved on"):
        names.user_name(value, datastore)
    assert names.user_name(value, None) == value  # the form alone lets them through


def test_a_name_one_datastore_reserves_is_free_on_another():
    assert names.user_name("default", "mariadb") == "default"  # Redis keeps it
    assert names.user_name("select", "mariadb") == "select"  # a quoted string there
    assert names.user_name("pg_app", "redis") == "pg_app"
    assert names.user_name("public", "redis") == "public"


def test_existing_accounts_under_special_names_stay_reachable():
    """A name refused for a new account can still name an account that has it, except the
    server's and Cove's own."""
    assert names.user_name("PUBLIC", "mariadb", existing=True) == "PUBLIC"
    assert names.user_name("current_user", "postgresql", existing=True) == "current_user"
    for datastore, own in (("mariadb", "root"), ("postgresql", "pg_monitor"), ("redis", "default")):
        with pytest.raises(ValueError, match="reserved"):
            names.user_name(own, datastore, existing=True)


def test_messages_say_why():
    with pytest.raises(ValueError) as caught:
        names.user_name("public", "postgresql")
    assert str(caught.value) == "user name 'public' is reserved on PostgreSQL; choose another"
    with pytest.raises(ValueError) as caught:
        names.user_name("pg_x", "postgresql")
    assert str(caught.value) == "user names starting with 'pg_' are reserved on PostgreSQL"


def test_rules_are_lower_case_and_cover_the_guests_own_accounts():
    """The guests compare without regard to case through the same rules; every account a
    guest makes or hides for itself is among its datastore's own."""
    for ds in DATASTORES.values():
        rules = ds.names
        for group in (rules.own_users, rules.special_users, rules.databases):
            assert all(name == name.lower() for name in group), ds.name
        assert all(p == p.lower() for p in (*rules.own_user_prefixes, *rules.database_prefixes))
    pg = DATASTORES["postgresql"].names
    assert all(pg.own_user(n) for n in (*pg_admin.HIDDEN_USERS, pg_conf.ADMIN_USER))
    assert all(pg.own_user(n) for n in pg_admin.ROOT_ROLES)
    assert all(pg.database_refused(n) for n in pg_admin.HIDDEN_DATABASES)
    maria = DATASTORES["mariadb"].names
    assert maria.own_user(maria_conf.ADMIN_USER) and maria.own_user(maria_conf.ROOT_USER)
    assert all(maria.database_refused(n) for n in maria_conf.SYSTEM_DATABASES)
    rds = DATASTORES["redis"].names
    assert rds.own_user(redis_conf.ADMIN_USER) and rds.own_user(redis_conf.ROOT_USER)


def test_passwords():
    assert names.password("p:@ ss'\"") == "p:@ ss'\""
    for bad in ("", "x" * 129, "a\nb", "a\x00b"):
        with pytest.raises(ValueError):
            names.password(bad)


def test_instance_names():
    assert names.instance_name("my db") == "my db"
    for bad in ("", "   ", "---", "x" * 256, "a\tb"):
        with pytest.raises(ValueError):
            names.instance_name(bad)


def test_hosts():
    assert names.user_host(None) == "%"
    assert names.user_host("10.0.0.%") == "10.0.0.%"
    with pytest.raises(ValueError):
        names.user_host("a b")
    with pytest.raises(ValueError) as caught:
        names.user_host("h" * 5000 + " ")
    assert str(caught.value) == f"user host '{'h' * 64}…' is invalid"


def test_lone_surrogates_are_refused():
    for rule in (names.instance_name, names.password):
        with pytest.raises(ValueError, match="valid Unicode"):
            rule("a\ud800b")


def test_shown_caps_what_a_message_quotes():
    assert shown("short") == "short"
    assert shown("x" * 64) == "x" * 64
    assert shown("x" * 5000) == "x" * 64 + "…"
    assert shown(12345, limit=3) == "123…"
