"""``cove-manage`` identity commands: ``bootstrap`` and the ``project``, ``user`` and ``role``
groups of the embedded identity service, acting on the control database through
:mod:`cove.identity.store`. Passwords come from a file, a hidden prompt or a generator, never
from the command line; a generated one is printed once.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from cove.cli import controldb, output
from cove.cli.userfmt import Pairs, Table
from cove.common.errors import CoveError
from cove.common.settings import Settings, load_settings
from cove.db.engine import Database


def _settings() -> Settings:
    try:
        return load_settings()
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc


@contextmanager
def _errors(settings: Settings) -> Iterator[None]:
    """Cove's errors, and a control database that is not set up, become one-line errors
    (exit status 1)."""
    try:
        yield
    except CoveError as exc:
        raise click.ClickException(exc.message) from exc
    except (OperationalError, ProgrammingError) as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig else type(exc).__name__
        raise click.ClickException(controldb.not_usable(settings, reason)) from exc


@contextmanager
def _identity_session() -> Iterator[Session]:
    """A session on the control database, which must exist already, that commits on success;
    errors mapped by _errors."""
    settings = _settings()
    db = controldb.existing(settings)
    try:
        with _errors(settings), db.session() as s:
            yield s
    finally:
        db.dispose()


def _read_password_file(path: str) -> str:
    """The password in ``path`` (``-``: standard input), without its final newline."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read the password file {path}: {exc}") from exc
    password = text.rstrip("\r\n")
    if not password:
        raise click.ClickException(f"the password file {path} is empty")
    return password


def _new_password(password_file: str | None, generate: bool) -> tuple[str, bool]:
    """(password, generated): from the file, generated, or typed twice at a hidden prompt."""
    if password_file and generate:
        raise click.UsageError("give --password-file or --generate-password, not both")
    if password_file:
        return _read_password_file(password_file), False
    if generate:
        return secrets.token_urlsafe(18), True
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True)), False


def _show_generated(name: str, password: str) -> None:
    click.echo(f"password of {name}: {password}")
    click.echo("The password is not shown again: store it now.", err=True)


password_file_option = click.option(
    "--password-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the password from this file ('-': standard input).",
)
generate_option = click.option(
    "--generate-password", "generate", is_flag=True, help="Generate a password; printed once."
)


@click.command("bootstrap")
@click.option("--user", "user_name", default="admin", show_default=True, help="Admin user.")
@click.option(
    "--project",
    help="Its project (default: the administrative project, setting admin_project).",
)
@password_file_option
def bootstrap(user_name: str, project: str | None, password_file: str | None) -> None:
    """Create the roles, the token key, a project and a user holding the admin role on it.

    Running it again changes nothing but giving the user the admin role back. Without
    --password-file, a new user's password is generated and printed once.
    """
    from cove.common.keys import ensure_key
    from cove.identity.service import IdentityService
    from cove.identity.tokens import TokenSigner

    settings = _settings()
    project = project or settings.admin_project
    password = _read_password_file(password_file) if password_file else None
    controldb.require(settings)  # before the key is made in a data directory of its own
    try:
        with _errors(settings):
            key = ensure_key(settings.token_key_file)
    except OSError as exc:
        raise click.ClickException(
            f"cannot create the token key {settings.token_key_file}: {exc.strerror}"
        ) from exc
    db = Database(settings.database_url)
    try:
        service = IdentityService(settings, db, TokenSigner(key))
        with _errors(settings):
            created = service.bootstrap(password, project=project, user=user_name)
    finally:
        db.dispose()
    if created is None:
        click.echo(
            f"user {user_name} exists already (password unchanged); "
            f"it holds the admin role on project {project}"
        )
        return
    click.echo(f"user {user_name} created with the admin role on project {project}")
    if password is None:
        _show_generated(user_name, created)


@click.group()
def project() -> None:
    """Projects: what owns instances and quotas."""


@project.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the project is for.")
def project_create(name: str, description: str) -> None:
    """Create project NAME."""
    from cove.identity import store

    with _identity_session() as s:
        created = store.create_project(s, name, description)
        click.echo(f"project {created.name} created with id {created.id}")


@project.command("list")
def project_list() -> None:
    """List projects: id, name, state, description."""
    from cove.db.models import Project

    with _identity_session() as s:
        rows = [
            [p.id, p.name, "enabled" if p.enabled else "disabled", p.description]
            for p in s.scalars(select(Project).order_by(Project.name))
        ]
    output.emit(Table.of(["ID", "Name", "State", "Description"], rows))


@project.command("show")
@click.argument("ref")
def project_show(ref: str) -> None:
    """Show project REF (an id or a name) and who holds which role on it."""
    from cove.db.models import Instance
    from cove.identity import store

    with _identity_session() as s:
        p = store.find_project(s, ref)
        live = s.scalar(
            select(func.count(Instance.id)).where(
                Instance.project_id == p.id, Instance.deleted.is_(False)
            )
        )
        roles = [f"{a.role} of {a.user_name}" for a in store.assignments(s) if a.project_id == p.id]
        shown = Pairs.of(
            [
                ("id", p.id),
                ("name", p.name),
                ("enabled", p.enabled),
                ("description", p.description),
                ("created", f"{p.created:%Y-%m-%d %H:%M:%S}"),
                ("instances", live),
                ("roles", roles),
            ]
        )
    output.emit(shown)


def _set_project_enabled(ref: str, enabled: bool) -> None:
    from cove.identity import store

    with _identity_session() as s:
        p = store.set_project_enabled(s, ref, enabled)
    click.echo(f"project {p.name} {'enabled' if enabled else 'disabled'}")


@project.command("enable")
@click.argument("ref")
def project_enable(ref: str) -> None:
    """Let project REF's users get tokens for it again."""
    _set_project_enabled(ref, True)


@project.command("disable")
@click.argument("ref")
def project_disable(ref: str) -> None:
    """Refuse tokens for project REF; the tokens it has stop working. Instances keep running."""
    _set_project_enabled(ref, False)


@project.command("delete")
@click.argument("ref")
def project_delete(ref: str) -> None:
    """Delete project REF, which must have no instances left."""
    from cove.db.models import Instance
    from cove.identity import store

    with _identity_session() as s:
        p = store.find_project(s, ref)
        live = s.scalar(
            select(func.count(Instance.id)).where(
                Instance.project_id == p.id, Instance.deleted.is_(False)
            )
        )
        if live:
            raise click.ClickException(
                f"project {p.name} still has {live} instance(s): delete them first"
            )
        store.delete_project(s, p.id)
    click.echo(f"project {p.name} deleted")


@click.group()
def user() -> None:
    """Users: who gets tokens."""


@user.command("create")
@click.argument("name")
@click.option("--project", help="Default project, on which the user gets --role.")
@click.option("--role", help="Role on --project (admin, member, reader).  [default: member]")
@password_file_option
@generate_option
def user_create(
    name: str, project: str | None, role: str | None, password_file: str | None, generate: bool
) -> None:
    """Create user NAME; the password is asked twice unless a file or --generate-password
    gives it."""
    from cove.identity import store

    if role and not project:
        raise click.UsageError("--role needs --project")
    password, generated = _new_password(password_file, generate)
    with _identity_session() as s:
        created = store.create_user(s, name, password, default_project=project)
        if project:
            store.grant_role(s, created.id, project, role or "member")
    where = f" with role {role or 'member'} on project {project}" if project else ""
    click.echo(f"user {name} created{where}")
    if generated:
        _show_generated(name, password)


@user.command("list")
def user_list() -> None:
    """List users: id, name, state, default project."""
    from cove.db.models import Project, User

    with _identity_session() as s:
        names = {p.id: p.name for p in s.scalars(select(Project))}
        rows = [
            [
                u.id,
                u.name,
                "enabled" if u.enabled else "disabled",
                names.get(u.default_project_id or "", ""),
            ]
            for u in s.scalars(select(User).order_by(User.name))
        ]
    output.emit(Table.of(["ID", "Name", "State", "Default project"], rows))


@user.command("set-password")
@click.argument("ref")
@password_file_option
@generate_option
def user_set_password(ref: str, password_file: str | None, generate: bool) -> None:
    """Change the password of user REF; the user's tokens stop working."""
    from cove.identity import store

    with _identity_session() as s:
        store.find_user(s, ref)  # fail before asking for a password
    password, generated = _new_password(password_file, generate)
    with _identity_session() as s:
        u = store.set_password(s, ref, password)
    click.echo(f"user {u.name}: password changed; its tokens no longer work")
    if generated:
        _show_generated(u.name, password)


def _set_user_enabled(ref: str, enabled: bool) -> None:
    from cove.identity import store

    with _identity_session() as s:
        u = store.set_user_enabled(s, ref, enabled)
    click.echo(f"user {u.name} {'enabled' if enabled else 'disabled'}")


@user.command("enable")
@click.argument("ref")
def user_enable(ref: str) -> None:
    """Let user REF get tokens again."""
    _set_user_enabled(ref, True)


@user.command("disable")
@click.argument("ref")
def user_disable(ref: str) -> None:
    """Refuse tokens to user REF; the tokens it has stop working."""
    _set_user_enabled(ref, False)


@user.command("delete")
@click.argument("ref")
def user_delete(ref: str) -> None:
    """Delete user REF and its roles."""
    from cove.identity import store

    with _identity_session() as s:
        u = store.delete_user(s, ref)
    click.echo(f"user {u.name} deleted")


@click.group()
def role() -> None:
    """Roles of users on projects: admin, member, reader."""


@role.command("add")
@click.argument("user_ref", metavar="USER")
@click.argument("project_ref", metavar="PROJECT")
@click.argument("role_name", metavar="ROLE")
def role_add(user_ref: str, project_ref: str, role_name: str) -> None:
    """Give USER the role ROLE on PROJECT (it shows in the user's next token)."""
    from cove.identity import store

    with _identity_session() as s:
        added = store.grant_role(s, user_ref, project_ref, role_name)
    what = "now has" if added else "already had"
    click.echo(f"user {user_ref} {what} role {role_name} on project {project_ref}")


@role.command("remove")
@click.argument("user_ref", metavar="USER")
@click.argument("project_ref", metavar="PROJECT")
@click.argument("role_name", metavar="ROLE")
def role_remove(user_ref: str, project_ref: str, role_name: str) -> None:
    """Take ROLE on PROJECT away from USER; the user's tokens stop working."""
    from cove.identity import store

    with _identity_session() as s:
        removed = store.revoke_role(s, user_ref, project_ref, role_name)
    if not removed:
        raise click.ClickException(
            f"user {user_ref} does not have role {role_name} on project {project_ref}"
        )
    click.echo(f"user {user_ref} no longer has role {role_name} on project {project_ref}")


@role.command("list")
@click.option("--user", "user_ref", help="Only this user's roles.")
def role_list(user_ref: str | None) -> None:
    """List role assignments: user, project, role."""
    from cove.identity import store

    with _identity_session() as s:
        user_id = store.find_user(s, user_ref).id if user_ref else None
        rows = [[a.user_name, a.project_name, a.role] for a in store.assignments(s, user_id)]
    output.emit(Table.of(["User", "Project", "Role"], rows))
