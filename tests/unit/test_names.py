import pytest

from cove.domain import names


@pytest.mark.parametrize("value", ["orders", "_x", "a-b", "A$1", "x" * 63])
def test_good_database_names(value):
    assert names.database_name(value) == value


@pytest.mark.parametrize(
    "value", ["", "1abc", "a b", "x" * 64, "postgres", "template1", "pg_foo", "a;drop", "é"]
)
def test_bad_database_names(value):
    with pytest.raises(ValueError):
        names.database_name(value)


@pytest.mark.parametrize("value", ["app", "u.2", "a-b_c"])
def test_good_user_names(value):
    assert names.user_name(value) == value


@pytest.mark.parametrize("value", ["", "root", "os_admin", "pg_monitor", "a b", "x" * 64, "a'b"])
def test_bad_user_names(value):
    with pytest.raises(ValueError):
        names.user_name(value)


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


def test_lone_surrogates_are_refused():
    for rule in (names.instance_name, names.password):
        with pytest.raises(ValueError, match="valid Unicode"):
            rule("a\ud800b")
