"""cove-manage against a real SQLite control database."""

from __future__ import annotations

import json
import shlex
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update

from cove.cli.bootstrap import create_private, make_private, sqlite_file
from cove.cli.manage import main
from cove.common.errors import Unauthorized
from cove.common.keys import load_key
from cove.common.settings import Settings, load_settings
from cove.compute.discovery import find_mariadb, find_postgresql, find_redis
from cove.db.engine import Database
from cove.db.migrate import head
from cove.db.models import DatastoreVersion, Instance, Network, Role, User
from cove.identity.service import IdentityService
from cove.identity.tokens import TokenClaims, TokenSigner
from rows import add_instance


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setenv("COVE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("COVE_CONFIG", raising=False)
    monkeypatch.delenv("COVE_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True, stdin: str | None = None) -> Result:
        result = runner.invoke(main, list(args), input=stdin)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    invoke("db", "upgrade")
    return invoke


@pytest.fixture
def settings(run) -> Settings:
    return load_settings()


def authenticate(settings: Settings, user: str, password: str, project: str) -> TokenClaims:
    """Authenticate as clients do, through the identity service; raises Unauthorized."""
    db = Database(settings.database_url)
    try:
        identity = IdentityService(settings, db, TokenSigner(load_key(settings.token_key_file)))
        body: dict[str, Any] = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": user, "password": password, "domain": {"id": "default"}}
                    },
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        return identity.authenticate(body)[1]
    finally:
        db.dispose()


def generated_password(result: Result, user: str) -> str:
    [line] = [line for line in result.stdout.splitlines() if line.startswith("password of")]
    assert line.startswith(f"password of {user}: ")
    assert "not shown again" in result.stderr
    return line.split(": ", 1)[1]


def test_db_version_is_head(run):
    assert run("db", "version").output.strip() == head()


def test_db_upgrade_prepares_identity_and_networks(run, settings):
    key = settings.token_key_file
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    database = settings.data_dir / "cove.sqlite"
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    before = key.read_bytes()
    run("db", "upgrade")
    assert key.read_bytes() == before  # kept: tokens survive
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            assert sorted(s.scalars(select(Role.name))) == ["admin", "member", "reader", "service"]
            assert s.scalar(select(Network).where(Network.is_default.is_(True))) is not None
    finally:
        db.dispose()


def test_db_upgrade_makes_an_old_readable_database_private(run, settings):
    """The control database holds password hashes: one that an earlier version left readable
    to others is made 0600 by the next upgrade, and so are its -wal and -shm files."""
    database = settings.data_dir / "cove.sqlite"
    database.chmod(0o644)
    run("db", "upgrade")
    assert stat.S_IMODE(database.stat().st_mode) == 0o600
    leftovers = [database.with_name("cove.sqlite-wal"), database.with_name("cove.sqlite-shm")]
    for path in (database, *leftovers):
        path.touch()
        path.chmod(0o644)
    make_private(database)
    assert [stat.S_IMODE(p.stat().st_mode) for p in (database, *leftovers)] == [0o600] * 3


def test_sqlite_file_is_created_private(tmp_path: Path):
    assert sqlite_file(f"sqlite:///{tmp_path}/c.sqlite?timeout=5") == tmp_path / "c.sqlite"
    assert sqlite_file("sqlite:///:memory:") is None
    assert sqlite_file("postgresql+psycopg://u@h/db") is None
    create_private(tmp_path / "c.sqlite")
    assert stat.S_IMODE((tmp_path / "c.sqlite").stat().st_mode) == 0o600
    create_private(tmp_path / "missing" / "c.sqlite")  # left to the migration to report
    assert not (tmp_path / "missing").exists()


def test_flavors_add_disable_enable(run):
    assert "small" in run("flavor", "list").output
    assert "added with id 5" in run("flavor", "add", "xl", "--ram", "16384", "--vcpus", "8").output
    assert "already exists" in run("flavor", "add", "xl", "--ram", "1024", ok=False).output
    assert run("flavor", "add", "x", "--ram", "64", ok=False).exit_code != 0
    run("flavor", "disable", "xl")
    assert "xl" not in run("flavor", "list").output
    assert (
        "xl disabled"
        in run("flavor", "list", "--all", "-f", "value", "-c", "name", "-c", "state").output
    )
    run("flavor", "enable", "5")
    assert "xl" in run("flavor", "list").output
    assert "not found" in run("flavor", "disable", "nope", ok=False).output


# -- identity -----------------------------------------------------------------------------------


def test_bootstrap_twice_makes_one_admin_whose_password_works(run, settings):
    first = run("bootstrap")
    password = generated_password(first, "admin")
    assert first.stdout.count(password) == 1
    claims = authenticate(settings, "admin", password, "admin")
    assert claims.roles == ("admin",)
    again = run("bootstrap")
    assert "exists already" in again.stdout
    assert password not in again.output and "password of" not in again.output
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            assert list(s.scalars(select(User.name))) == ["admin"]
    finally:
        db.dispose()
    authenticate(settings, "admin", password, "admin")  # unchanged


def test_bootstrap_from_a_password_file(run, settings, tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("From-a-file 1\n")
    result = run("bootstrap", "--user", "root", "--project", "ops", "--password-file", str(secret))
    assert result.stdout == "user root created with the admin role on project ops\n"
    assert "From-a-file" not in result.output
    assert authenticate(settings, "root", "From-a-file 1", "ops").roles == ("admin",)
    empty = tmp_path / "empty"
    empty.write_text("\n")
    refused = run("bootstrap", "--user", "x", "--password-file", str(empty), ok=False)
    assert (refused.exit_code, refused.output) == (
        1,
        f"Error: the password file {empty} is empty\n",
    )


def test_bootstrap_defaults_to_the_administrative_project(run, monkeypatch):
    monkeypatch.setenv("COVE_ADMIN_PROJECT", "ops")
    result = run("bootstrap")
    assert result.stdout.startswith("user admin created with the admin role on project ops\n")
    claims = authenticate(load_settings(), "admin", generated_password(result, "admin"), "ops")
    assert claims.roles == ("admin",) and claims.admin_project


def test_projects(run):
    created = run("project", "create", "shop", "--description", "The shop")
    assert created.stdout.startswith("project shop created with id ")
    project_id = created.stdout.split()[-1]
    assert len(project_id) == 32
    listed = run("project", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "Name", "State", "Description"]
    assert [line.split(maxsplit=3) for line in listed[1:]] == [
        [project_id, "shop", "enabled", "The shop"]
    ]
    for argv in (("project", "list", "-f", "json"), ("-f", "json", "project", "list")):
        assert json.loads(run(*argv).stdout) == [
            {"ID": project_id, "Name": "shop", "State": "enabled", "Description": "The shop"}
        ]
    assert run("project", "-c", "name", "list", "-f", "value").stdout == "shop\n"
    dup = run("project", "create", "shop", ok=False)
    assert (dup.exit_code, dup.output) == (1, "Error: A project named 'shop' already exists.\n")
    bad = run("project", "create", "no spaces", ok=False)
    assert bad.exit_code == 1 and bad.output.startswith("Error: Invalid project name")
    run("project", "disable", "shop")
    assert " disabled " in run("project", "list").stdout
    run("project", "enable", project_id)
    shown = run("project", "show", "shop").stdout
    assert f"id           {project_id}" in shown and "instances    0" in shown
    run("project", "delete", "shop")
    assert run("project", "list", "-f", "value").stdout == ""
    missing = run("project", "delete", "shop", ok=False)
    assert (missing.exit_code, missing.output) == (1, "Error: Could not find project: shop.\n")


def test_project_with_instances_is_not_deleted(run, settings):
    project_id = run("project", "create", "busy").stdout.split()[-1]
    db = Database(settings.database_url)
    try:
        iid = add_instance(db)
        with db.session() as s:
            s.execute(update(Instance).where(Instance.id == iid).values(project_id=project_id))
    finally:
        db.dispose()
    refused = run("project", "delete", "busy", ok=False)
    assert refused.output == "Error: project busy still has 1 instance(s): delete them first\n"
    assert run("project", "show", "busy", "-c", "instances", "-f", "value").stdout == "1\n"


def test_user_create_prompts_twice_and_never_takes_argv(run, settings):
    run("project", "create", "shop")
    result = run("user", "create", "ann", "--project", "shop", stdin="Typed-pw1\nTyped-pw1\n")
    assert "user ann created with role member on project shop" in result.stdout
    assert "Typed-pw1" not in result.output
    assert authenticate(settings, "ann", "Typed-pw1", "shop").roles == ("member",)
    mismatch = run("user", "create", "bob", stdin="one\ntwo\nthree\nthree\n")
    assert "do not match" in mismatch.output
    assert run("user", "create", "eve", "--password", "x", ok=False).exit_code == 2
    usage = run("user", "create", "eve", "--role", "reader", ok=False)
    assert usage.exit_code == 2 and "--role needs --project" in usage.output


def test_user_generated_password_and_lifecycle(run, settings):
    run("project", "create", "shop")
    created = run(
        "user", "create", "ro", "--project", "shop", "--role", "reader", "--generate-password"
    )
    password = generated_password(created, "ro")
    token = authenticate(settings, "ro", password, "shop")
    assert token.roles == ("reader",)
    listed = run("user", "list").stdout.splitlines()
    assert listed[0].split() == ["ID", "Name", "State", "Default", "project"]
    assert listed[1].split()[1:] == ["ro", "enabled", "shop"]

    run("user", "disable", "ro")
    with pytest.raises(Unauthorized):
        authenticate(settings, "ro", password, "shop")
    run("user", "enable", "ro")
    authenticate(settings, "ro", password, "shop")

    changed = run("user", "set-password", "ro", "--generate-password")
    new = generated_password(changed, "ro")
    with pytest.raises(Unauthorized):
        authenticate(settings, "ro", password, "shop")
    authenticate(settings, "ro", new, "shop")
    run("user", "set-password", "ro", stdin="Prompted-2\nPrompted-2\n")
    authenticate(settings, "ro", "Prompted-2", "shop")
    nobody = run("user", "set-password", "nobody", ok=False)
    assert nobody.output == "Error: Could not find user: nobody.\n"  # asked no password first

    run("user", "delete", "ro")
    assert run("user", "list", "-f", "csv").stdout == '"ID","Name","State","Default project"\n'


def test_roles(run, settings, tmp_path: Path):
    secret = tmp_path / "pw"
    secret.write_text("Role-test-1")
    run("project", "create", "a")
    run("project", "create", "b")
    run("user", "create", "ann", "--password-file", str(secret))
    with pytest.raises(Unauthorized):  # no role on a yet
        authenticate(settings, "ann", "Role-test-1", "a")
    assert "now has role member" in run("role", "add", "ann", "a", "member").stdout
    assert "already had" in run("role", "add", "ann", "a", "member").stdout
    run("role", "add", "ann", "b", "admin")
    assert authenticate(settings, "ann", "Role-test-1", "b").roles == ("admin",)
    unknown = run("role", "add", "ann", "a", "owner", ok=False)
    assert (
        unknown.output
        == "Error: Could not find role: owner (roles: admin, member, reader, service).\n"
    )
    listed = [line.split() for line in run("role", "list").stdout.splitlines()]
    assert listed == [["User", "Project", "Role"], ["ann", "a", "member"], ["ann", "b", "admin"]]
    assert run("role", "list", "--user", "ann").stdout == run("role", "list").stdout
    run("role", "remove", "ann", "b", "admin")
    with pytest.raises(Unauthorized):
        authenticate(settings, "ann", "Role-test-1", "b")
    again = run("role", "remove", "ann", "b", "admin", ok=False)
    assert again.output == "Error: user ann does not have role admin on project b\n"
    assert "Could not find user" in run("role", "list", "--user", "zed", ok=False).output


def test_identity_commands_need_a_migrated_database(tmp_path, monkeypatch):
    monkeypatch.setenv("COVE_DATA_DIR", str(tmp_path))
    create_private(tmp_path / "cove.sqlite")  # there, but empty
    result = CliRunner().invoke(main, ["project", "list"])
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: the control database at {tmp_path / 'cove.sqlite'} is not usable ("
    )
    assert result.output.endswith("run 'cove-manage db upgrade' first\n")


# -- which data directory -------------------------------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_commands(section: str) -> list[tuple[list[str], str]]:
    """The ``cove-manage`` commands of a README section's console block, as written, with
    their comment (``# prompts for the password``)."""
    text = README.read_text()
    body = text[text.index(f"### {section}\n") :]
    body = body[: body.index("\n### ", 1)]
    commands = []
    for line in body.splitlines():
        if line.startswith("$ cove-manage "):
            command, _, comment = line.removeprefix("$ ").partition("#")
            commands.append((shlex.split(command)[1:], comment.strip()))
    return commands


@pytest.fixture
def clone(tmp_path, monkeypatch, migrated_db):
    """A clone where ``make run`` has made its Cove (``.cove``, as bootstrap leaves it), the
    commands run from the clone without any COVE_ variable, and the user's own default data
    directory elsewhere (``home-default``), empty."""
    from cove.cli.bootstrap import bootstrap, prepare_data_dir
    from cove.common import datadir

    project = tmp_path / "clone"
    (project / "docs").mkdir(parents=True)
    data = project / ".cove"
    settings = load_settings(data_dir=data)
    prepare_data_dir(settings)
    migrated_db(settings.database_url)
    bootstrap(settings)
    default = tmp_path / "home-default"
    monkeypatch.setattr(datadir, "user_data_dir", lambda: default)
    monkeypatch.chdir(project)
    return project


def invoke_here(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def test_the_readme_user_commands_work_as_written_in_the_clone(clone, monkeypatch):
    commands = readme_commands("Users and projects")
    assert [c[:2] for c, _ in commands] == [
        ["project", "create"],
        ["user", "create"],
        ["user", "create"],
        ["role", "list"],
    ]
    for where in (clone, clone / "docs"):  # from the clone or any directory below it
        monkeypatch.chdir(where)
        for args, comment in commands:
            stdin = "Ann-pw-1\nAnn-pw-1\n" if "prompts" in comment else None
            result = invoke_here(*args, stdin=stdin)
            if where == clone or args[0] == "role":
                assert result.exit_code == 0, (args, result.output)
            else:  # the same Cove: what was made is there already
                assert result.exit_code == 1, (args, result.output)
                assert "already exists" in result.output, (args, result.output)
    db = Database(load_settings(data_dir=clone / ".cove").database_url)
    try:
        with db.session() as s:
            assert {"admin", "ann", "audit"} <= set(s.scalars(select(User.name)))
    finally:
        db.dispose()
    assert "member" in invoke_here("role", "list").output
    assert not (clone.parent / "home-default").exists()  # no second Cove was made


def test_a_missing_control_database_is_named_with_the_cove_found_elsewhere(clone, monkeypatch):
    wrong = clone.parent / "elsewhere"
    monkeypatch.setenv("COVE_DATA_DIR", str(wrong))
    for args in (["project", "list"], ["flavor", "list"], ["network", "list"], ["db", "version"]):
        result = invoke_here(*args)
        assert result.exit_code == 1, args
        assert result.output == (
            f"Error: no control database at {wrong / 'cove.sqlite'} (data directory {wrong}, "
            f"from COVE_DATA_DIR); a Cove data directory is at {clone / '.cove'}: run with "
            f"COVE_DATA_DIR={clone / '.cove'}\n"
        )
        assert "db upgrade" not in result.output
    assert not wrong.exists()  # nothing was made there
    result = invoke_here("bootstrap", "--password-file", "-", stdin="pw-x\n")
    assert result.exit_code == 1 and "no control database at" in result.output
    assert not wrong.exists()


def test_without_any_cove_the_error_names_the_default_it_tried(clone, monkeypatch, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    default = tmp_path / "home-default"
    result = invoke_here("project", "list")
    assert result.exit_code == 1
    assert result.output.startswith(
        f"Error: no control database at {default / 'cove.sqlite'} (data directory {default}, "
        "the default without COVE_DATA_DIR); set COVE_DATA_DIR to your Cove's data directory"
    )
    assert not default.exists()


def test_a_cove_directory_others_may_write_is_not_taken(clone, tmp_path):
    """A .cove that someone else could have put there never decides where the Cove is: it is
    only pointed at."""
    data = clone / ".cove"
    data.chmod(0o777)
    try:
        result = invoke_here("project", "list")
        default = tmp_path / "home-default"
        assert result.exit_code == 1
        assert f"no control database at {default / 'cove.sqlite'}" in result.output
        assert f"a Cove data directory is at {data}" in result.output
    finally:
        data.chmod(0o700)


# -- datastores ---------------------------------------------------------------------------------


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_versions_found_disabled_and_enabled(run):
    found = find_postgresql()[-1]
    listing = run("datastore", "list", "-f", "value", "-c", "datastore", "-c", "version").output
    assert f"postgresql {found.name}" in listing.splitlines()
    rows = json.loads(run("datastore", "list", "-f", "json").output)
    (row,) = [r for r in rows if (r["Datastore"], r["Version"]) == ("postgresql", found.name)]
    assert row["Default"] is True and row["State"] == "active"
    run("datastore", "disable-version", "postgresql", found.name)
    assert "disabled" in run("datastore", "list").output
    run("datastore", "enable-version", "postgresql", found.name)
    assert "not be found" in run("datastore", "disable-version", "postgresql", "7", ok=False).output
    out = run("datastore", "add-version", "postgresql", "custom", "--bin-dir", found.bin_dir).output
    assert "registered" in out
    bad = run("datastore", "add-version", "postgresql", "x", "--bin-dir", "/nonexistent", ok=False)
    assert "no postgresql server (postgres and initdb)" in bad.output
    bad = run("datastore", "add-version", "mongodb", "x", "--bin-dir", found.bin_dir, ok=False)
    assert "unknown datastore 'mongodb'" in bad.output
    # Every managed datastore can be added by hand, with its catalogue read from the binaries.
    for datastore, finder in (("redis", find_redis), ("mariadb", find_mariadb)):
        versions = finder()
        if not versions:
            continue
        out = run("datastore", "add-version", datastore, "mine", "--bin-dir", versions[0].bin_dir)
        assert "registered" in out.output
        listed = run("datastore", "list", "-f", "value", "-c", "Datastore", "-c", "Version").output
        assert f"{datastore} mine" in listed.splitlines()
        wrong = run("datastore", "add-version", datastore, "y", "--bin-dir", "/tmp", ok=False)
        assert f"no {datastore} server" in wrong.output
    with Database(load_settings().database_url).session() as s:
        custom = s.scalar(select(DatastoreVersion).where(DatastoreVersion.name == "custom"))
        assert custom is not None and custom.parameters_version == found.version


@pytest.mark.skipif(not find_postgresql(), reason="needs PostgreSQL binaries")
def test_disabling_the_default_version_moves_the_default(run):
    found = find_postgresql()[-1]
    run("datastore", "add-version", "postgresql", "other", "--bin-dir", found.bin_dir)
    run("datastore", "disable-version", "postgresql", found.name)
    rows = json.loads(run("datastore", "list", "-f", "json").output)
    default = [r["Version"] for r in rows if r["Default"] and r["Datastore"] == "postgresql"]
    assert default == ["other"]
