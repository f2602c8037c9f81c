"""The token cache: a run reuses the token an earlier run got for the same cloud, from a file
only its owner can read, until it is about to expire, its password changes or the API refuses
it."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import yaml
from fake_cove import FakeCove, reply, run


@pytest.fixture
def listed(cove: FakeCove) -> FakeCove:
    cove.on("GET", "instances", reply(200, {"instances": []}))
    return cove


def cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "home" / ".cache" / "cove" / "tokens").glob("*.json"))


def test_a_second_run_reuses_the_token_from_a_private_file(
    listed: FakeCove, tmp_path: Path
) -> None:
    for _ in range(3):
        assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) == 1
    assert [r.headers["x-auth-token"] for r in listed.requests] == ["tok-1"] * 3
    (path,) = cache_files(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    kept = json.loads(path.read_text())
    assert kept["token"] == "tok-1"
    assert "adm1n" not in path.read_text()  # the password is kept as a salted hash only


def test_a_token_about_to_expire_is_renewed_and_kept(listed: FakeCove, tmp_path: Path) -> None:
    listed.expires_in = 100  # less than RENEW_BEFORE: not worth reusing
    assert run("instance", "list").exit_code == 0
    first = len(listed.auth_requests)
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) > first
    listed.expires_in = 3600
    assert run("instance", "list").exit_code == 0
    got = len(listed.auth_requests)
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) == got
    (path,) = cache_files(tmp_path)
    assert json.loads(path.read_text())["token"] == f"tok-{got}"


def test_a_refused_token_is_forgotten_and_the_request_asked_again(listed: FakeCove) -> None:
    assert run("instance", "list").exit_code == 0
    listed.token = "revoked-meanwhile"  # the fake now accepts no token but a new one
    result = run("instance", "list")
    assert result.exit_code == 0, result.output
    assert len(listed.auth_requests) == 2
    assert [r.headers["x-auth-token"] for r in listed.requests] == ["tok-1", "tok-1", "tok-2"]


def test_a_new_password_gets_a_new_token(listed: FakeCove) -> None:
    assert run("instance", "list").exit_code == 0
    conf = Path(os.environ["OS_CLIENT_CONFIG_FILE"])
    doc = yaml.safe_load(conf.read_text())
    doc["clouds"]["cove"]["auth"]["password"] = "wrong-now"
    conf.write_text(yaml.safe_dump(doc))
    # Not the password the token was got with: asked of the identity service, which refuses.
    refused = run("instance", "list")
    assert refused.exit_code == 1 and "authentication refused" in refused.stderr
    assert len(listed.auth_requests) == 2


def test_an_expired_token_file_is_removed(listed: FakeCove, tmp_path: Path) -> None:
    assert run("instance", "list").exit_code == 0
    (path,) = cache_files(tmp_path)
    kept = json.loads(path.read_text())
    path.write_text(json.dumps({**kept, "expires_at": 1.0}))
    listed.expires_in = 100  # the new token is not worth keeping either
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) >= 2
    assert json.loads(cache_files(tmp_path)[0].read_text())["expires_at"] > 1.0


def test_a_symlinked_cache_file_is_not_followed(listed: FakeCove, tmp_path: Path) -> None:
    assert run("instance", "list").exit_code == 0
    (path,) = cache_files(tmp_path)
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(path.read_text())
    elsewhere.chmod(0o600)
    path.unlink()
    path.symlink_to(elsewhere)
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) == 2  # the link was not read
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_clouds_have_a_file_each(listed: FakeCove, tmp_path: Path) -> None:
    assert run("instance", "list").exit_code == 0
    assert run("instance", "list", env={"OS_INTERFACE": "internal"}).exit_code == 0
    assert len(cache_files(tmp_path)) == 2


def test_a_file_others_can_read_is_not_trusted(listed: FakeCove, tmp_path: Path) -> None:
    assert run("instance", "list").exit_code == 0
    (path,) = cache_files(tmp_path)
    path.chmod(0o644)
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) == 2
    assert stat.S_IMODE(cache_files(tmp_path)[0].stat().st_mode) == 0o600


def test_the_cache_can_be_turned_off(listed: FakeCove, tmp_path: Path) -> None:
    for _ in range(2):
        assert run("instance", "list", env={"COVE_TOKEN_CACHE": "off"}).exit_code == 0
    assert len(listed.auth_requests) == 2
    assert cache_files(tmp_path) == []


def test_a_broken_cache_file_is_ignored(listed: FakeCove, tmp_path: Path) -> None:
    assert run("instance", "list").exit_code == 0
    (path,) = cache_files(tmp_path)
    path.write_text("{not json")
    assert run("instance", "list").exit_code == 0
    assert len(listed.auth_requests) == 2
