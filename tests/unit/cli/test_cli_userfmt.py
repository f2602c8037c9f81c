"""Rendering and the ``--user`` syntax of the ``cove`` command (no server)."""

from __future__ import annotations

from fake_cove import instance

from cove.cli import userfmt as fmt


def test_parse_user_spec_keeps_password_out_of_repr() -> None:
    spec = fmt.parse_user_spec("app:s3cret@orders")
    assert (spec.name, spec.password, spec.databases) == ("app", "s3cret", ("orders",))
    assert "s3cret" not in repr(spec)
    assert fmt.parse_user_spec("app") == fmt.UserSpec("app", None, None)


def test_table_alignment() -> None:
    assert fmt.table(["A", "Long"], [["xyz", None], ["1", True]]).splitlines() == [
        "A    Long",
        "xyz",
        "1    true",
    ]


def test_mysql_connect_hint() -> None:
    inst = instance("ACTIVE", datastore={"type": "mysql"}, hostname="db.example")
    assert fmt.connect_hint(inst, "orders", "app") == "mysql -h db.example -P 3306 -u app -p orders"
    assert fmt.connect_hint(instance(datastore={"type": "mongodb"}), None, None) is None


def test_redis_connect_hint_asks_for_the_password() -> None:
    inst = instance("ACTIVE", datastore={"type": "redis"}, hostname="cache.example")
    hint = fmt.connect_hint(inst, None, "app")
    assert hint == "redis-cli -h cache.example -p 6379 --user app --askpass"


def test_a_published_instance_is_reached_on_its_public_port() -> None:
    inst = {
        "datastore": {"type": "postgresql"},
        "addresses": [
            {"address": "127.42.0.5", "type": "private"},
            {"address": "203.0.113.5", "type": "public", "port": 20001},
        ],
    }
    assert fmt.connect_hint(inst, "orders", "app") == (
        'psql "host=203.0.113.5 port=20001 dbname=orders user=app"'
    )
    assert fmt.instance_row(inst)[-1] == "203.0.113.5:20001"
    inst["addresses"] = inst["addresses"][:1]
    assert fmt.instance_row(inst)[-1] == "127.42.0.5"
