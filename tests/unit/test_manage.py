"""cove-manage against a real SQLite control database."""

import pytest
from click.testing import CliRunner

from cove.cli.manage import main
from cove.compute.discovery import find_postgresql


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("COVE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    monkeypatch.delenv("COVE_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True):
        result = runner.invoke(main, list(args))
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke("db", "upgrade")
    return invoke


def test_db_version_is_head(run):
    assert run("db", "version").output.strip() == "0001"


def test_flavors_add_disable_enable(run):
    assert "small" in run("flavor", "list").output
    assert "added with id 5" in run("flavor", "add", "xl", "--ram", "16384", "--vcpus", "8").output
    assert "already exists" in run("flavor", "add", "xl", "--ram", "1024", ok=False).output
    assert run("flavor", "add", "x", "--ram", "64", ok=False).exit_code != 0
    run("flavor", "disable", "xl")
    assert "xl" not in run("flavor", "list").output
    assert "(disabled)" in run("flavor", "list", "--all").output
    run("flavor", "enable", "5")
    assert "xl" in run("flavor", "list").output
    assert "not found" in run("flavor", "disable", "nope", ok=False).output


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_versions_found_disabled_and_enabled(run):
    found = find_postgresql()[-1]
    listing = run("datastore", "list").output
    assert f"postgresql   {found.name}" in listing and "(default)" in listing
    run("datastore", "disable-version", "postgresql", found.name)
    assert "disabled" in run("datastore", "list").output
    run("datastore", "enable-version", "postgresql", found.name)
    assert "not be found" in run("datastore", "disable-version", "postgresql", "7", ok=False).output
    out = run("datastore", "add-version", "postgresql", "custom", "--bin-dir", found.bin_dir).output
    assert "registered" in out
    bad = run("datastore", "add-version", "postgresql", "x", "--bin-dir", "/nonexistent", ok=False)
    assert "no PostgreSQL server" in bad.output


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_disabling_the_default_version_moves_the_default(run):
    found = find_postgresql()[-1]
    run("datastore", "add-version", "postgresql", "other", "--bin-dir", found.bin_dir)
    run("datastore", "disable-version", "postgresql", found.name)
    listing = run("datastore", "list").output.splitlines()
    default = [line for line in listing if "(default)" in line]
    assert len(default) == 1 and "other" in default[0]
