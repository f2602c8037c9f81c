"""Who may do what: every rule of the API in one table.

A rule names the weakest role that may perform an action (or several such roles, any of
which will do); roles include one another (``admin`` ⊃ ``member`` ⊃ ``reader``), as Keystone's
default implied roles do. ``admin`` of a project administers that project. ``cloud_admin`` is
not a role anyone is given: a token carries it when it holds ``admin`` on the administrative
project (setting ``admin_project``, Keystone's ``is_admin_project``), and it is what the
management endpoints and the identity service's administration ask for. Operators override
rules in a TOML file (``policy_file``, default ``<data>/policy.toml``)::

    [rules]
    "instance:delete" = "admin"
    "database:index" = "member"
    "identity:validate_token" = ["cloud_admin", "service"]

Rules of actions that reach every project (``mgmt:...``, ``identity:...``,
``instance:any_project``) may name only ``cloud_admin`` and ``service``.

An unknown rule or role in the file stops the API at start-up with a clear message.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from cove.common.errors import ConfigurationError, Forbidden

LEVELS = {"reader": 1, "member": 2, "admin": 3}
CLOUD_ADMIN = "cloud_admin"
#: Roles outside the hierarchy: they satisfy only rules that name them.
OTHER_ROLES = frozenset({"service", CLOUD_ADMIN})

READ, WRITE, ADMIN = "reader", "member", "admin"
#: A caller this rule allows reaches any project's instance through its own project's path
#: (show, actions, delete, databases, users, root, configuration), as Trove's admin context does;
#: lists stay per project.
ANY_PROJECT = "instance:any_project"
#: Rules whose actions reach beyond the caller's project.
CLOUD_RULES = ("mgmt:", "identity:", ANY_PROJECT)

DEFAULT_RULES: dict[str, str | tuple[str, ...]] = {
    "flavor:index": READ,
    "datastore:index": READ,
    "network:index": READ,
    "limits:index": READ,
    "instance:index": READ,
    "instance:show": READ,
    "instance:create": WRITE,
    "instance:update": WRITE,
    "instance:delete": WRITE,
    "instance:restart": WRITE,
    "instance:resize": WRITE,
    "instance:reset_status": CLOUD_ADMIN,
    ANY_PROJECT: CLOUD_ADMIN,
    "database:index": READ,
    "database:create": WRITE,
    "database:delete": WRITE,
    "user:index": READ,
    "user:show": READ,
    "user:create": WRITE,
    "user:update": WRITE,
    "user:delete": WRITE,
    "user:access": READ,
    "user:grant": WRITE,
    "user:revoke": WRITE,
    "root:show": READ,
    "root:enable": WRITE,
    "root:disable": WRITE,
    "quota:show": READ,
    "configuration:index": READ,
    "configuration:show": READ,
    "configuration:create": WRITE,
    "configuration:update": WRITE,
    "configuration:delete": WRITE,
    "configuration-parameter:index": READ,
    "instance:configuration": READ,
    "instance:events": READ,
    "instance:vitals": READ,
    "backup:index": READ,
    "backup:index:all_projects": CLOUD_ADMIN,
    "backup:show": READ,
    "backup:create": WRITE,
    "backup:delete": WRITE,
    "backup_schedule:index": READ,
    "backup_schedule:show": READ,
    "backup_schedule:create": WRITE,
    "backup_schedule:update": WRITE,
    "backup_schedule:delete": WRITE,
    "cluster:index": READ,
    "cluster:show": READ,
    "cluster:create": WRITE,
    "cluster:action": WRITE,
    "cluster:delete": WRITE,
    "cluster:reset_status": CLOUD_ADMIN,
    # Trove's features Cove does not have yet: whoever a rule allows is told so (501); anyone
    # else is refused as for any other action (cove.api.routers.unimplemented).
    "backup_strategy:index": READ,
    "backup_strategy:create": WRITE,
    "backup_strategy:delete": WRITE,
    "instance:guest_log_list": READ,
    "instance:guest_log_action": WRITE,
    "instance:module_list": READ,
    "instance:module_apply": WRITE,
    "instance:module_remove": WRITE,
    "instance:ssl_show": READ,
    "instance:ssl_action": WRITE,
    "module:index": READ,
    "module:show": READ,
    "module:create": WRITE,
    "module:update": WRITE,
    "module:delete": WRITE,
    "mgmt:clusters": CLOUD_ADMIN,
    "mgmt:datastores": CLOUD_ADMIN,
    "mgmt:instances": CLOUD_ADMIN,
    "mgmt:quotas": CLOUD_ADMIN,
    "identity:validate_token": (CLOUD_ADMIN, "service"),
    "identity:revoke_token": CLOUD_ADMIN,
    "identity:list_projects": CLOUD_ADMIN,
}


def effective_roles(roles: tuple[str, ...] | frozenset[str], admin_project: bool) -> frozenset[str]:
    """The roles a token's holder acts with: its roles, plus ``cloud_admin`` for ``admin`` on
    the administrative project. A role that merely bears that name (an external Keystone may
    have one) counts for nothing."""
    out = frozenset(roles) - {CLOUD_ADMIN}
    if "admin" in out and admin_project:
        out |= {CLOUD_ADMIN}
    return out


def level(roles: frozenset[str]) -> int:
    return max((LEVELS.get(r, 0) for r in roles), default=0)


class Policy:
    def __init__(self, overrides: dict[str, str | list[str]] | None = None) -> None:
        """Raises ConfigurationError for an unknown rule or role in ``overrides``."""
        self.rules: dict[str, tuple[str, ...]] = {
            rule: (want,) if isinstance(want, str) else want for rule, want in DEFAULT_RULES.items()
        }
        for rule, want in (overrides or {}).items():
            if rule not in DEFAULT_RULES:
                raise ConfigurationError(f"policy: unknown rule '{rule}'")
            roles = (want,) if isinstance(want, str) else tuple(want)
            unknown = [r for r in roles if r not in LEVELS and r not in OTHER_ROLES]
            if not roles or unknown:
                raise ConfigurationError(
                    f"policy: rule '{rule}' names unknown role '{(unknown or [''])[0]}' "
                    f"(roles: {', '.join([*LEVELS, *sorted(OTHER_ROLES)])})"
                )
            if rule.startswith(CLOUD_RULES) and any(r in LEVELS for r in roles):
                # Any project's reader, member or admin would reach every project.
                raise ConfigurationError(
                    f"policy: rule '{rule}' reaches every project: it may name only "
                    f"{' or '.join(sorted(OTHER_ROLES))}"
                )
            self.rules[rule] = roles

    def allows(self, rule: str, roles: frozenset[str]) -> bool:
        held = level(roles)
        return any(
            (want in LEVELS and held >= LEVELS[want]) or want in roles for want in self.rules[rule]
        )

    def enforce(self, rule: str, roles: frozenset[str]) -> None:
        """Raises Forbidden unless ``roles`` satisfy ``rule``."""
        if not self.allows(rule, roles):
            raise Forbidden(f"Policy doesn't allow {rule} to be performed.")


def load_policy(path: Path | None) -> Policy:
    """The default rules, overridden by the file at ``path`` when it exists.

    Raises ConfigurationError for an unreadable file, an unknown rule or role.
    """
    if path is None or not path.is_file():
        return Policy()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"policy file {path}: {exc}") from exc
    rules = data.get("rules", {})
    if not isinstance(rules, dict) or not all(
        isinstance(v, str) or (isinstance(v, list) and all(isinstance(r, str) for r in v))
        for v in rules.values()
    ):
        raise ConfigurationError(
            f"policy file {path}: [rules] must map rule names to a role name or a list of them"
        )
    return Policy(rules)
