"""clouds.yaml and OS_* variables: finding credentials as OpenStack clients do, and the ``cove``
cloud that ``cove up`` writes (against a real SQLite control database)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from cove.cli import clouds
from cove.cli.bootstrap import Access, banner, bootstrap_catalog, prepare_access
from cove.cli.clouds import CloudConfigError, Login, NoCredentials
from cove.common.keys import load_key
from cove.common.settings import Settings, load_settings
from cove.db.engine import Database
from cove.db.models import User
from cove.identity import store
from cove.identity.service import IdentityService
from cove.identity.tokens import TokenSigner

AUTH = {"auth_url": "http://cove.test/identity/v3", "username": "u", "password": "Pw-1"}


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """cwd, home, the system file and a data directory, all empty and private to the test."""
    places = {n: tmp_path / n for n in ("cwd", "home", "etc", "data")}
    for path in places.values():
        path.mkdir()
    monkeypatch.setattr(clouds, "SYSTEM_FILE", places["etc"] / "clouds.yaml")
    return places


def write(path: Path, **cloud_map: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"clouds": cloud_map}))
    return path


def cloud(**auth: Any) -> dict[str, Any]:
    return {"auth": {**AUTH, **auth}}


def load(
    dirs: dict[str, Path], env: dict[str, str] | None = None, name: str | None = None
) -> clouds.CloudConfig:
    full = {"COVE_DATA_DIR": str(dirs["data"]), **(env or {})}
    return clouds.load(full, name, dirs["cwd"], dirs["home"])


# -- which file ---------------------------------------------------------------------------------


def test_candidate_order(dirs: dict[str, Path]) -> None:
    env = {"OS_CLIENT_CONFIG_FILE": "/x/c.yaml", "COVE_DATA_DIR": str(dirs["data"])}
    assert clouds.candidate_files(env, dirs["cwd"], dirs["home"]) == [
        Path("/x/c.yaml"),
        dirs["cwd"] / "clouds.yaml",
        dirs["home"] / ".config" / "openstack" / "clouds.yaml",
        dirs["etc"] / "clouds.yaml",
        dirs["data"] / "clouds.yaml",
    ]


def test_first_existing_file_wins(dirs: dict[str, Path]) -> None:
    write(dirs["data"] / "clouds.yaml", cove=cloud(username="from-data"))
    assert load(dirs).username == "from-data"
    write(dirs["etc"] / "clouds.yaml", cove=cloud(username="from-etc"))
    assert load(dirs).username == "from-etc"
    write(dirs["home"] / ".config/openstack/clouds.yaml", cove=cloud(username="from-home"))
    assert load(dirs).username == "from-home"
    write(dirs["cwd"] / "clouds.yaml", cove=cloud(username="from-cwd"))
    assert load(dirs).username == "from-cwd"
    named = write(dirs["home"] / "mine.yaml", cove=cloud(username="named"))
    config = load(dirs, {"OS_CLIENT_CONFIG_FILE": str(named)})
    assert (config.username, config.source) == ("named", f"cloud 'cove' of {named}")


def test_named_file_must_exist(dirs: dict[str, Path]) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove=cloud())
    with pytest.raises(CloudConfigError, match=r"OS_CLIENT_CONFIG_FILE names /no/such\.yaml"):
        load(dirs, {"OS_CLIENT_CONFIG_FILE": "/no/such.yaml"})


# -- which cloud --------------------------------------------------------------------------------


def test_cloud_choice(dirs: dict[str, Path]) -> None:
    path = dirs["cwd"] / "clouds.yaml"
    write(path, other=cloud(username="o"), cove=cloud(username="c"))
    assert load(dirs).username == "c"
    assert load(dirs, {"OS_CLOUD": "ignored by load"}, name="other").username == "o"
    write(path, only=cloud(username="only"))
    assert load(dirs).username == "only"
    write(path, a=cloud(), b=cloud())
    with pytest.raises(CloudConfigError, match=r"several clouds \(a, b\): choose one"):
        load(dirs)
    with pytest.raises(CloudConfigError, match=r"no cloud named 'c' in .* \(clouds: a, b\)"):
        load(dirs, name="c")
    # Several clouds and none chosen: the environment alone may still do.
    env = {f"OS_{k.upper()}": v for k, v in AUTH.items()}
    assert load(dirs, env).source == "the OS_* environment variables"


def test_cloud_asked_for_without_a_file(dirs: dict[str, Path]) -> None:
    with pytest.raises(CloudConfigError, match=r"cloud 'cove' was asked for, but no clouds\.yaml"):
        load(dirs, name="cove")


# -- OS_* variables -----------------------------------------------------------------------------


def test_environment_alone(dirs: dict[str, Path]) -> None:
    env = {
        "OS_AUTH_URL": "https://id.test:5000",
        "OS_USERNAME": "demo",
        "OS_PASSWORD": "Env-pw",
        "OS_PROJECT_NAME": "demo",
        "OS_USER_DOMAIN_NAME": "Users",
        "OS_PROJECT_DOMAIN_NAME": "Projects",
        "OS_REGION_NAME": "north",
        "OS_INTERFACE": "internalURL",
    }
    config = load(dirs, env)
    assert config == clouds.CloudConfig(
        source="the OS_* environment variables",
        auth_url="https://id.test:5000",
        password="Env-pw",
        username="demo",
        project_name="demo",
        user_domain_name="Users",
        project_domain_name="Projects",
        region_name="north",
        interface="internal",
    )


def test_environment_overrides_the_file(dirs: dict[str, Path]) -> None:
    write(
        dirs["cwd"] / "clouds.yaml",
        cove={
            "auth": {**AUTH, "project_id": "ab" * 16, "user_domain_name": "Default"},
            "region_name": "RegionOne",
            "interface": "public",
        },
    )
    env = {"OS_PASSWORD": "Other-pw", "OS_PROJECT_NAME": "shop", "OS_REGION_NAME": "east"}
    config = load(dirs, env)
    assert (config.password, config.project_name, config.project_id) == ("Other-pw", "shop", None)
    assert (config.region_name, config.username) == ("east", "u")
    assert config.source.endswith("clouds.yaml and OS_* variables")
    assert load(dirs, {"OS_TENANT_ID": "cd" * 16}).project_id == "cd" * 16
    assert load(dirs, {"OS_PASSWORD": ""}).password == "Pw-1"  # empty means unset


def test_auth_url_in_the_environment_without_a_cloud_ignores_the_file(
    dirs: dict[str, Path],
) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove={**cloud(), "region_name": "file-region"})
    env = {f"OS_{k.upper()}": v for k, v in AUTH.items()}
    alone = load(dirs, env)
    assert (alone.source, alone.region_name) == ("the OS_* environment variables", None)
    named = load(dirs, env, name="cove")
    assert named.region_name == "file-region"
    assert named.source.endswith("and OS_* variables")


def test_nothing_configured(dirs: dict[str, Path]) -> None:
    with pytest.raises(
        NoCredentials, match=r"export OS_CLIENT_CONFIG_FILE=<data dir>/clouds\.yaml"
    ):
        load(dirs)
    (dirs["cwd"] / "clouds.yaml").write_text("clouds: {}\n")
    with pytest.raises(NoCredentials):
        load(dirs)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"auth": {"auth_url": "http://x/v3", "username": "u"}}, "lacks password"),
        ({"region_name": "r"}, "lacks auth_url, username \\(or user_id\\), password$"),
        ({"auth": {**AUTH, "auth_url": "x/v3"}}, "auth_url must start with http"),
        ({"auth": AUTH, "auth_type": "token"}, "uses auth_type 'token'"),
        ({"auth": AUTH, "interface": "private"}, "interface 'private' is not one of"),
        ({"auth": "nope"}, "'auth' is not a mapping"),
    ],
)
def test_bad_cloud(dirs: dict[str, Path], settings: dict[str, Any], message: str) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove=settings)
    with pytest.raises(CloudConfigError, match=message):
        load(dirs)


def test_bad_files_are_named_without_their_content(dirs: dict[str, Path]) -> None:
    path = dirs["cwd"] / "clouds.yaml"
    path.write_text("clouds:\n  cove:\n    auth: {password: Leak-me, [\n")
    with pytest.raises(CloudConfigError) as err:
        load(dirs)
    assert str(err.value).startswith(f"{path} is not valid YAML (line ")
    assert "Leak-me" not in str(err.value)
    path.write_text("- a list\n")
    with pytest.raises(CloudConfigError, match="has no 'clouds' mapping"):
        load(dirs)


def test_password_stays_out_of_repr(dirs: dict[str, Path]) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove=cloud())
    assert "Pw-1" not in repr(load(dirs))
    assert "Pw-1" not in repr(Login("a", "b", "Pw-1"))


def test_verify_and_cacert(dirs: dict[str, Path]) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove={**cloud(), "verify": False})
    assert load(dirs).verify is False
    assert load(dirs, {"OS_CACERT": "/ca.pem"}).verify is False
    write(dirs["cwd"] / "clouds.yaml", cove=cloud())
    assert load(dirs, {"OS_CACERT": "/ca.pem"}).verify == "/ca.pem"


# -- the token request --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth_url", "expected"),
    [
        ("http://h/identity/v3", "http://h/identity/v3/auth/tokens"),
        ("http://h/identity/v3/", "http://h/identity/v3/auth/tokens"),
        ("http://h:5000", "http://h:5000/v3/auth/tokens"),
        ("http://h:5000/v3.14", "http://h:5000/v3.14/auth/tokens"),
        ("http://h/identity", "http://h/identity/v3/auth/tokens"),
    ],
)
def test_token_url(auth_url: str, expected: str) -> None:
    assert clouds.token_url(auth_url) == expected


def test_token_request_bodies(dirs: dict[str, Path]) -> None:
    write(dirs["cwd"] / "clouds.yaml", cove=cloud(project_name="p"))
    assert clouds.token_request(load(dirs)) == {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"password": "Pw-1", "name": "u", "domain": {"name": "Default"}}
                },
            },
            "scope": {"project": {"name": "p", "domain": {"name": "Default"}}},
        }
    }
    by_ids = {"OS_USER_ID": "ee" * 16, "OS_PROJECT_ID": "ab" * 16}
    auth = clouds.token_request(load(dirs, by_ids))["auth"]
    assert auth["identity"]["password"]["user"] == {"password": "Pw-1", "id": "ee" * 16}
    assert auth["scope"] == {"project": {"id": "ab" * 16}}
    write(dirs["cwd"] / "clouds.yaml", cove=cloud(project_domain_id="default"))
    assert "scope" not in clouds.token_request(load(dirs))["auth"]


def test_find_endpoint() -> None:
    def ep(interface: str, region: str) -> dict[str, str]:
        return {"interface": interface, "region": region, "url": f"http://{interface}.{region}/"}

    catalog = [
        {"type": "identity", "endpoints": [ep("public", "r1")]},
        {"type": "database", "endpoints": [ep("admin", "r1"), ep("public", "r1")]},
        {"type": "database", "endpoints": [ep("public", "r2")]},
    ]
    assert clouds.find_endpoint(catalog, "database") == "http://public.r1"
    assert clouds.find_endpoint(catalog, "database", "public", "r2") == "http://public.r2"
    assert clouds.find_endpoint(catalog, "database", "admin") == "http://admin.r1"
    assert clouds.find_endpoint(catalog, "database", "internal") is None
    assert clouds.find_endpoint(catalog, "compute") is None


# -- what cove up writes ------------------------------------------------------------------------


def test_updated_clouds_keeps_passwords_and_other_clouds() -> None:
    login = Login("admin", "admin", "First-pw")
    doc = clouds.updated_clouds(None, "http://a/identity/v3", "R1", login)
    assert doc == {"clouds": {"cove": clouds.cove_cloud("http://a/identity/v3", "R1", login)}}
    assert doc["clouds"]["cove"]["auth"]["password"] == "First-pw"
    doc["clouds"]["mine"] = {"auth": {"password": "Mine"}}
    assert clouds.updated_clouds(doc, "http://a/identity/v3", "R1", None) is None
    moved = clouds.updated_clouds(doc, "http://b/identity/v3", "R2", None)
    assert moved is not None
    assert moved["clouds"]["cove"]["auth"]["auth_url"] == "http://b/identity/v3"
    assert moved["clouds"]["cove"]["auth"]["password"] == "First-pw"
    assert moved["clouds"]["cove"]["region_name"] == "R2"
    assert moved["clouds"]["mine"] == {"auth": {"password": "Mine"}}
    assert doc["clouds"]["cove"]["auth"]["auth_url"] == "http://a/identity/v3"  # not mutated
    assert clouds.updated_clouds({"clouds": {"mine": {}}}, "u", "r", None) is None


def test_write_private(tmp_path: Path) -> None:
    path = tmp_path / "clouds.yaml"
    path.write_text("old")
    path.chmod(0o644)
    clouds.write_private(path, {"clouds": {"x": {"auth": {"password": "p"}}}}, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.stat().st_uid == os.geteuid()
    assert clouds.read_clouds(path) == {"x": {"auth": {"password": "p"}}}
    assert [p.name for p in tmp_path.iterdir()] == ["clouds.yaml"]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("COVE_DATA_DIR", str(tmp_path / "data"))
    s = load_settings()
    s.data_dir.mkdir()
    bootstrap_catalog(s)
    return s


def authenticates(settings: Settings, config: clouds.CloudConfig) -> bool:
    db = Database(settings.database_url)
    try:
        identity = IdentityService(settings, db, TokenSigner(load_key(settings.token_key_file)))
        _, claims = identity.authenticate(clouds.token_request(config))
        return claims.roles == ("admin",)
    finally:
        db.dispose()


def test_first_start_creates_the_admin_and_its_cloud(settings: Settings, tmp_path: Path) -> None:
    access = prepare_access(settings)
    path = settings.data_dir / "clouds.yaml"
    assert access.clouds_file == path and access.problem == ""
    assert access.created is not None and len(access.project_id or "") == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    env = {"OS_CLIENT_CONFIG_FILE": str(path)}
    config = clouds.load(env, None, tmp_path, tmp_path)
    assert config.auth_url == f"{settings.api_url}/identity/v3"
    assert (config.username, config.project_name, config.region_name) == (
        "admin",
        "admin",
        settings.region,
    )
    assert config.password == access.created.password
    assert authenticates(settings, config)
    text = banner(settings, [], access)
    assert text.count(access.created.password) == 1
    assert "not shown again" in text
    assert "export PATH=" in text and f"OS_CLIENT_CONFIG_FILE={path} OS_CLOUD=cove" in text
    assert "openstack --os-cloud cove database instance list" in text
    assert "pip install python-openstackclient python-troveclient" in text
    assert f"/v1.0/{access.project_id}/instances" in text
    assert f"Console:     {settings.api_url}/console\n" in text


def test_next_starts_keep_the_password(settings: Settings, tmp_path: Path) -> None:
    first = prepare_access(settings)
    assert first.created is not None
    path = settings.data_dir / "clouds.yaml"
    before = path.read_text()
    again = prepare_access(settings)
    assert again.created is None and path.read_text() == before
    assert first.created.password not in banner(settings, [], again)

    moved = settings.model_copy(update={"api_port": 8790, "region": "north"})
    assert prepare_access(moved).problem == ""
    config = clouds.load({"OS_CLIENT_CONFIG_FILE": str(path)}, None, tmp_path, tmp_path)
    assert config.auth_url == "http://127.0.0.1:8790/identity/v3"
    assert config.region_name == "north"
    assert config.password == first.created.password

    path.unlink()
    lost = prepare_access(settings)
    assert lost.clouds_file is None and not path.exists()
    assert "cove-manage user set-password admin" in lost.problem
    assert "OS_USERNAME=admin" in banner(settings, [], lost)

    path.write_text("clouds: [")
    broken = prepare_access(settings)
    assert "not valid YAML" in broken.problem and path.read_text() == "clouds: ["


def test_the_admin_is_made_in_the_administrative_project(
    settings: Settings, tmp_path: Path
) -> None:
    ops = settings.model_copy(update={"admin_project": "ops"})
    access = prepare_access(ops)
    assert access.created is not None and access.created.project_name == "ops"
    config = clouds.load(
        {"OS_CLIENT_CONFIG_FILE": str(ops.data_dir / "clouds.yaml")}, None, tmp_path, tmp_path
    )
    assert config.project_name == "ops"
    db = Database(ops.database_url)
    try:
        identity = IdentityService(ops, db, TokenSigner(load_key(ops.token_key_file)))
        _, claims = identity.authenticate(clouds.token_request(config))
    finally:
        db.dispose()
    assert claims.roles == ("admin",) and claims.admin_project
    assert '"name": "ops"' in banner(ops, [], access)


def test_external_keystone_writes_nothing(settings: Settings) -> None:
    external = settings.model_copy(update={"auth_strategy": "keystone"})
    assert prepare_access(external) == Access(None, None, None)
    assert not (settings.data_dir / "clouds.yaml").exists()


def _users(settings: Settings) -> list[str]:
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            return sorted(s.scalars(select(User.name)))
    finally:
        db.dispose()


def test_admin_is_created_only_while_there_is_no_user(settings: Settings) -> None:
    """Deleting or renaming ``admin`` does not bring a privileged account back at next start."""
    assert prepare_access(settings).created is not None
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            store.create_user(s, "ann", "Ann-pass-1", default_project="admin")
            store.grant_role(s, "ann", "admin", "admin")
            store.delete_user(s, "admin")
    finally:
        db.dispose()
    before = (settings.data_dir / "clouds.yaml").read_text()
    # Written as JSON, which every clouds.yaml reader takes as YAML and the cove command
    # reads without a YAML parser.
    assert json.loads(before)["clouds"]["cove"]["auth"]["username"] == "admin"
    assert yaml.safe_load(before) == json.loads(before)
    deleted = prepare_access(settings)
    assert deleted.created is None and _users(settings) == ["ann"]
    assert (settings.data_dir / "clouds.yaml").read_text() == before
    assert "not shown again" not in banner(settings, [], deleted)

    db = Database(settings.database_url)
    try:
        with db.session() as s:
            store.find_user(s, "ann").name = "root"
    finally:
        db.dispose()
    assert prepare_access(settings).created is None and _users(settings) == ["root"]

    db = Database(settings.database_url)
    try:
        with db.session() as s:
            store.delete_user(s, "root")
    finally:
        db.dispose()
    again = prepare_access(settings)
    assert again.created is not None and _users(settings) == ["admin"]


FAKE_CURL = """#!/bin/sh
# Records its arguments; with --data-binary @- also its standard input, and answers as the
# identity service does (the token in a header).
printf '%s\\n' "$@" >> "$CURL_LOG/argv"
case " $* " in
*" --data-binary @- "*)
    cat > "$CURL_LOG/body"
    printf 'HTTP/1.1 201 Created\\r\\nX-Subject-Token: tok-42\\r\\n\\r\\n' ;;
esac
"""


def test_banner_curl_keeps_the_password_out_of_argv(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curl lines of the banner, run by bash with a curl that records what it gets: the
    password goes through standard input only, as valid JSON, and the token reaches the API
    call."""
    access = prepare_access(settings)
    text = banner(settings, [], access)
    lines = text.split("With curl", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    script = "\n".join(line.removeprefix("  ") for line in lines) + "\n"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "curl").write_text(FAKE_CURL)
    (bin_dir / "curl").chmod(0o755)
    password = "p@ss w0rd$%s `x` 'y'"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("CURL_LOG", str(tmp_path))
    subprocess.run(["bash", "-c", script], input=password + "\n", text=True, check=True, timeout=30)
    argv = (tmp_path / "argv").read_text()
    assert "--data-binary" in argv and password not in argv and "w0rd" not in argv
    body = json.loads((tmp_path / "body").read_text())
    assert body["auth"]["identity"]["password"]["user"] == {
        "name": "admin",
        "domain": {"id": "default"},
        "password": password,
    }
    assert body["auth"]["scope"] == {"project": {"name": "admin", "domain": {"id": "default"}}}
    assert "X-Auth-Token: tok-42" in argv.splitlines()
    assert f"{settings.api_url}/v1.0/{access.project_id}/instances" in argv.splitlines()


def test_the_banner_says_loudly_which_limits_are_not_enforced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cove.cli import bootstrap
    from cove.common import cgroups
    from cove.common.settings import Settings
    from cove.compute import firewall, volumes

    settings = Settings(data_dir=tmp_path)
    line = bootstrap.limits_line(settings)
    assert line.startswith("none\n  NOT ENFORCED: memory and CPU (unit tests make no groups)")
    assert "volume sizes (unit tests mount nothing)" in line
    assert "allowed_cidrs (unit tests filter nothing)" in line
    monkeypatch.setattr(cgroups, "detect", lambda parent: (object(), "cgroup v1"))
    monkeypatch.setattr(volumes, "detect", lambda images: (object(), "loop-mounted XFS images"))
    monkeypatch.setattr(firewall, "detect", lambda data: (object(), "nftables table cove_x"))
    assert bootstrap.limits_line(settings) == (
        "memory and CPU of the flavor (cgroup v1); volume sizes (loop-mounted XFS images); "
        "allowed_cidrs (nftables table cove_x)"
    )


def test_written_json_reads_back_the_same_with_yaml(tmp_path: Path) -> None:
    doc = {"clouds": {"cove": {"auth": {"username": "ann", "password": "pä😀ss"}}}}
    path = tmp_path / "clouds.yaml"
    clouds.write_private(path, doc, None)
    assert path.read_text().startswith("{") and "😀" in path.read_text()
    assert yaml.safe_load(path.read_text()) == doc
    assert clouds.read_document(path) == doc


def test_what_json_cannot_say_is_written_as_yaml(tmp_path: Path) -> None:
    doc = {"clouds": {"cove": {"auth": {"username": "ann"}}, "old": {"since": date(2024, 1, 2)}}}
    path = tmp_path / "clouds.yaml"
    clouds.write_private(path, doc, None)
    assert not path.read_text().startswith("{")
    assert clouds.read_document(path) == doc
