"""The policy table: implied roles, the administrative project, the service role, overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.api.policy import DEFAULT_RULES, Policy, effective_roles, load_policy
from cove.common.errors import ConfigurationError, Forbidden


def test_roles_include_weaker_ones() -> None:
    policy = Policy()
    assert policy.allows("instance:index", frozenset({"reader"}))
    assert not policy.allows("instance:create", frozenset({"reader"}))
    assert policy.allows("instance:create", frozenset({"admin"}))
    assert not policy.allows("mgmt:quotas", frozenset({"member"}))
    with pytest.raises(Forbidden, match="Policy doesn't allow mgmt:instances"):
        policy.enforce("mgmt:instances", frozenset({"member", "reader"}))


def test_cloud_admin_only_from_the_administrative_project() -> None:
    assert effective_roles(("admin",), admin_project=True) == {"admin", "cloud_admin"}
    assert effective_roles(("admin", "reader"), admin_project=False) == {"admin", "reader"}
    # A role merely named so (an external Keystone may have one) gives nothing.
    assert effective_roles(("cloud_admin", "member"), admin_project=True) == {"member"}
    policy = Policy()
    assert not policy.allows("mgmt:instances", effective_roles(("admin",), False))
    assert policy.allows("mgmt:instances", effective_roles(("admin",), True))


def test_a_project_admin_administers_its_project() -> None:
    policy = Policy({"instance:delete": "admin"})
    project_admin = effective_roles(("admin",), admin_project=False)
    assert policy.allows("instance:delete", project_admin)
    assert not policy.allows("instance:delete", frozenset({"member"}))


def test_the_service_role_only_validates_tokens() -> None:
    policy = Policy()
    service = frozenset({"service"})
    assert policy.allows("identity:validate_token", service)
    assert not any(
        policy.allows(rule, service)
        for rule in DEFAULT_RULES
        if rule.startswith(("instance", "mgmt"))
    )


def test_overrides_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(
        '[rules]\n"instance:delete" = "admin"\n"instance:index" = ["member", "service"]\n'
    )
    policy = load_policy(path)
    assert not policy.allows("instance:delete", frozenset({"member"}))
    assert policy.allows("instance:index", frozenset({"service"}))
    assert not policy.allows("instance:index", frozenset({"reader"}))
    assert load_policy(tmp_path / "missing.toml").rules == Policy().rules


@pytest.mark.parametrize(
    "text",
    [
        '[rules]\n"instance:fly" = "admin"\n',
        '[rules]\n"instance:delete" = "owner"\n',
        '[rules]\n"instance:delete" = []\n',
        '[rules]\n"instance:delete" = 3\n',
        "not toml",
    ],
)
def test_bad_policy_files_stop_the_api(tmp_path: Path, text: str) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(text)
    with pytest.raises(ConfigurationError):
        load_policy(path)


def test_rules_that_reach_every_project_name_no_project_role() -> None:
    with pytest.raises(ConfigurationError, match="reaches every project"):
        Policy({"mgmt:instances": "admin"})
    with pytest.raises(ConfigurationError, match="reaches every project"):
        Policy({"identity:validate_token": ["admin", "service"]})
    assert Policy({"identity:revoke_token": ["cloud_admin", "service"]}).allows(
        "identity:revoke_token", frozenset({"service"})
    )


def test_resetting_status_and_reaching_other_projects_are_for_cloud_administrators() -> None:
    policy = Policy()
    cloud_admin = effective_roles(("admin",), admin_project=True)
    project_admin = effective_roles(("admin",), admin_project=False)
    for rule in ("instance:reset_status", "instance:any_project"):
        assert policy.allows(rule, cloud_admin)
        assert not policy.allows(rule, project_admin)
        assert not policy.allows(rule, frozenset({"member", "service"}))
    with pytest.raises(Forbidden, match="Policy doesn't allow instance:reset_status"):
        policy.enforce("instance:reset_status", project_admin)
    # Reaching every project's instances may not be given to a project's role.
    with pytest.raises(ConfigurationError, match="reaches every project"):
        Policy({"instance:any_project": "admin"})
    # A reset acts in the caller's project: an operator may let project administrators do it.
    assert Policy({"instance:reset_status": "admin"}).allows("instance:reset_status", project_admin)
