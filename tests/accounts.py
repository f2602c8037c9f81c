"""Projects, users and tokens for tests, made through Cove's own identity code."""

from __future__ import annotations

import secrets

from cove.common.errors import NotFound
from cove.common.ids import utcnow
from cove.db.engine import Database
from cove.db.models import Project
from cove.identity import store


def add_account(
    db: Database, project: str, user: str, role: str = "member", project_id: str | None = None
) -> tuple[str, str]:
    """Make ``user`` (with a random password) hold ``role`` on ``project``, creating both as
    needed; returns (project id, password)."""
    password = secrets.token_urlsafe(12)
    with db.session() as s:
        store.ensure_roles(s)
        try:
            proj = store.find_project(s, project)
        except NotFound:
            if project_id:
                proj = Project(id=project_id, name=project, description="", created=utcnow())
                s.add(proj)
                s.flush()
            else:
                proj = store.create_project(s, project)
        try:
            store.find_user(s, user)
            store.set_password(s, user, password)
        except NotFound:
            store.create_user(s, user, password)
        store.grant_role(s, user, proj.id, role)
        return proj.id, password


def password_auth(user: str, password: str, project_id: str) -> dict[str, object]:
    """The body keystoneauth sends for a password authentication."""
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": user, "password": password, "domain": {"name": "Default"}}
                },
            },
            "scope": {"project": {"id": project_id}},
        }
    }
