"""Projects, users, roles and role assignments in the control database.

Every function takes an open session and leaves committing to the caller. Names are unique;
ids are 32 hex digits as Keystone's are (clients treat such a value as an id, not a name).
Functions raise NotFound, Conflict or BadRequest with messages that name the item.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, Conflict, NotFound
from cove.common.ids import utcnow
from cove.common.text import shown
from cove.db.models import Project, Role, RoleAssignment, TokenRevocation, User
from cove.identity.passwords import MAX_PASSWORD_LENGTH, hash_password

#: Roles Cove knows: ``admin``, ``member`` and ``reader`` (strongest first; each includes the
#: rights of those after it) and ``service``, for other services' accounts, which may validate
#: tokens and nothing else.
ROLES = ("admin", "member", "reader", "service")
DOMAIN = {"id": "default", "name": "Default"}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_ID = re.compile(r"^[0-9a-fA-F]{32}$")


def new_identity_id() -> str:
    return uuid.uuid4().hex


def check_name(kind: str, name: str) -> str:
    """Raises BadRequest unless ``name`` is a valid project or user name. A name never looks
    like an id (32 hex digits), so that looking up "by id or name" cannot pick the wrong one."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadRequest(
            f"Invalid {kind} name: it must be 1-64 characters of letters, digits, '_', '.', "
            "'@' or '-', starting with a letter or digit."
        )
    if _ID.match(name):
        raise BadRequest(f"Invalid {kind} name '{name}': a name must not look like an id.")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise BadRequest("The password must not be empty.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise BadRequest(f"The password must be at most {MAX_PASSWORD_LENGTH} characters.")
    if "\x00" in password:
        raise BadRequest("The password must not contain NUL characters.")
    return password


def ensure_roles(s: Session) -> None:
    existing = set(s.scalars(select(Role.name)))
    for name in ROLES:
        if name not in existing:
            s.add(Role(id=new_identity_id(), name=name))
    s.flush()


# -- projects ----------------------------------------------------------------------------------


def find_project(s: Session, ref: str) -> Project:
    """The project with id or name ``ref``. Raises NotFound."""
    project = s.get(Project, ref) or s.scalar(select(Project).where(Project.name == ref))
    if project is None:
        raise NotFound(f"Could not find project: {shown(ref)}.")
    return project


def create_project(s: Session, name: str, description: str = "") -> Project:
    check_name("project", name)
    if s.scalar(select(Project.id).where(Project.name == name)):
        raise Conflict(f"A project named '{name}' already exists.")
    project = Project(
        id=new_identity_id(), name=name, description=description, enabled=True, created=utcnow()
    )
    s.add(project)
    s.flush()
    return project


def set_project_enabled(s: Session, ref: str, enabled: bool) -> Project:
    project = find_project(s, ref)
    project.enabled = enabled
    if not enabled:
        revoke_project_tokens(s, project.id)
    return project


def delete_project(s: Session, ref: str) -> Project:
    project = find_project(s, ref)
    s.execute(delete(RoleAssignment).where(RoleAssignment.project_id == project.id))
    revoke_project_tokens(s, project.id)
    s.delete(project)
    return project


# -- users -------------------------------------------------------------------------------------


def find_user(s: Session, ref: str) -> User:
    """The user with id or name ``ref``. Raises NotFound."""
    user = s.get(User, ref) or s.scalar(select(User).where(User.name == ref))
    if user is None:
        raise NotFound(f"Could not find user: {shown(ref)}.")
    return user


def create_user(s: Session, name: str, password: str, default_project: str | None = None) -> User:
    check_name("user", name)
    check_password(password)
    if s.scalar(select(User.id).where(User.name == name)):
        raise Conflict(f"A user named '{name}' already exists.")
    project_id = find_project(s, default_project).id if default_project else None
    now = utcnow()
    user = User(
        id=new_identity_id(),
        name=name,
        password_hash=hash_password(password),
        enabled=True,
        default_project_id=project_id,
        created=now,
        password_changed_at=now,
    )
    s.add(user)
    s.flush()
    return user


def set_password(s: Session, ref: str, password: str) -> User:
    user = find_user(s, ref)
    user.password_hash = hash_password(check_password(password))
    user.password_changed_at = utcnow()
    revoke_user_tokens(s, user.id)
    return user


def set_user_enabled(s: Session, ref: str, enabled: bool) -> User:
    user = find_user(s, ref)
    user.enabled = enabled
    if not enabled:
        revoke_user_tokens(s, user.id)
    return user


def delete_user(s: Session, ref: str) -> User:
    user = find_user(s, ref)
    s.execute(delete(RoleAssignment).where(RoleAssignment.user_id == user.id))
    revoke_user_tokens(s, user.id)
    s.delete(user)
    return user


# -- roles -------------------------------------------------------------------------------------


def find_role(s: Session, name: str) -> Role:
    role = s.scalar(select(Role).where(Role.name == name)) or s.get(Role, name)
    if role is None:
        raise NotFound(f"Could not find role: {shown(name)} (roles: {', '.join(ROLES)}).")
    return role


def grant_role(s: Session, user_ref: str, project_ref: str, role_name: str) -> bool:
    """Give the user the role on the project; False if it already had it."""
    user, project, role = (
        find_user(s, user_ref),
        find_project(s, project_ref),
        find_role(s, role_name),
    )
    if s.get(RoleAssignment, (user.id, project.id, role.id)):
        return False
    s.add(RoleAssignment(user_id=user.id, project_id=project.id, role_id=role.id))
    # Tokens carry their roles: a new role shows in the next token.
    return True


def revoke_role(s: Session, user_ref: str, project_ref: str, role_name: str) -> bool:
    """Take the role away; tokens that carry it stop working. False if it was not given."""
    user, project, role = (
        find_user(s, user_ref),
        find_project(s, project_ref),
        find_role(s, role_name),
    )
    assignment = s.get(RoleAssignment, (user.id, project.id, role.id))
    if assignment is None:
        return False
    s.delete(assignment)
    revoke_user_tokens(s, user.id)
    return True


@dataclass(frozen=True)
class Assignment:
    user_id: str
    user_name: str
    project_id: str
    project_name: str
    role: str


def assignments(s: Session, user_id: str | None = None) -> list[Assignment]:
    query = (
        select(User.id, User.name, Project.id, Project.name, Role.name)
        .join(RoleAssignment, RoleAssignment.user_id == User.id)
        .join(Project, Project.id == RoleAssignment.project_id)
        .join(Role, Role.id == RoleAssignment.role_id)
        .order_by(Project.name, User.name, Role.name)
    )
    if user_id is not None:
        query = query.where(User.id == user_id)
    return [Assignment(*row) for row in s.execute(query)]


def roles_on(s: Session, user_id: str, project_id: str) -> list[Role]:
    return list(
        s.scalars(
            select(Role)
            .join(RoleAssignment, RoleAssignment.role_id == Role.id)
            .where(RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id)
            .order_by(Role.name)
        )
    )


# -- revocation --------------------------------------------------------------------------------

_MAX_TOKEN_TTL_SECONDS = 7 * 24 * 3600


def _revoke(s: Session, **match: str) -> None:
    now = utcnow()
    s.execute(delete(TokenRevocation).where(TokenRevocation.expires_at < now))
    s.add(
        TokenRevocation(
            issued_before=now, expires_at=now + timedelta(seconds=_MAX_TOKEN_TTL_SECONDS), **match
        )
    )


def revoke_user_tokens(s: Session, user_id: str) -> None:
    _revoke(s, user_id=user_id)


def revoke_project_tokens(s: Session, project_id: str) -> None:
    _revoke(s, project_id=project_id)


def revoke_audit_id(s: Session, audit_id: str) -> None:
    _revoke(s, audit_id=audit_id)
