"""``clouds.yaml`` and ``OS_*`` variables: how OpenStack clients, and the ``cove`` command, find
their credentials; and the ``cove`` cloud that ``cove up`` writes.

Reading follows the OpenStack conventions: the first file that exists among
``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``, ``~/.config/openstack/clouds.yaml`` and
``/etc/openstack/clouds.yaml`` (then, for Cove, ``<data dir>/clouds.yaml``); the cloud named by
``--os-cloud``/``OS_CLOUD``, else ``cove`` or the only cloud of the file; then each ``OS_*``
variable that is set replaces the file's value. With OS_AUTH_URL set and no cloud named, the
variables are used alone. Everything here is a function of its arguments
(the environment is passed in), and every problem is a :class:`CloudConfigError` whose message
is fit for a user and never holds a password.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.common.urls import identity_v3

#: The cloud ``cove up`` writes and the ``cove`` command picks when none is named.
COVE_CLOUD = "cove"
#: The system-wide file; a module constant so that tests can move it.
SYSTEM_FILE = Path("/etc/openstack/clouds.yaml")

#: ``OS_*`` variables that replace a value of the cloud's ``auth`` section.
AUTH_ENV = {
    "OS_AUTH_URL": "auth_url",
    "OS_USERNAME": "username",
    "OS_USER_ID": "user_id",
    "OS_PASSWORD": "password",
    "OS_PROJECT_NAME": "project_name",
    "OS_TENANT_NAME": "project_name",
    "OS_PROJECT_ID": "project_id",
    "OS_TENANT_ID": "project_id",
    "OS_USER_DOMAIN_NAME": "user_domain_name",
    "OS_USER_DOMAIN_ID": "user_domain_id",
    "OS_PROJECT_DOMAIN_NAME": "project_domain_name",
    "OS_PROJECT_DOMAIN_ID": "project_domain_id",
}
#: ``OS_*`` variables that replace a top-level value of the cloud.
CLOUD_ENV = {"OS_REGION_NAME": "region_name", "OS_INTERFACE": "interface", "OS_CACERT": "cacert"}
_AUTH_ALIASES = {"tenant_name": "project_name", "tenant_id": "project_id"}
_PROJECT_KEYS = ("project_name", "project_id")
_INTERFACES = {"public", "internal", "admin"}
_PASSWORD_AUTH = {"password", "v3password"}
_KEYSTONE_ID = re.compile(r"^[0-9a-f]{32}$")

HOW_TO_CONFIGURE = (
    "run 'export OS_CLIENT_CONFIG_FILE=<data dir>/clouds.yaml OS_CLOUD=cove' as printed by "
    "'make run', or set OS_AUTH_URL, OS_USERNAME, OS_PASSWORD and OS_PROJECT_NAME"
)


class CloudConfigError(ValueError):
    """The credentials cannot be worked out; the message says why, never with a password."""


class NoCredentials(CloudConfigError):
    """Nothing configures credentials at all."""


@dataclass(frozen=True)
class CloudConfig:
    """Password credentials and endpoint choice of one cloud. ``source`` says where they came
    from, for messages."""

    source: str
    auth_url: str
    password: str = field(repr=False)
    username: str | None = None
    user_id: str | None = None
    project_name: str | None = None
    project_id: str | None = None
    user_domain_name: str | None = None
    user_domain_id: str | None = None
    project_domain_name: str | None = None
    project_domain_id: str | None = None
    region_name: str | None = None
    interface: str = "public"
    verify: bool | str = True

    @property
    def who(self) -> str:
        """``user X in project Y``, for messages."""
        user = self.username or self.user_id
        project = self.project_name or self.project_id
        return f"user {user} in project {project}" if project else f"user {user}"


# -- finding the file ---------------------------------------------------------------------------


def candidate_files(env: Mapping[str, str], cwd: Path, home: Path) -> list[Path]:
    """The files looked at, in order; the first that exists is used."""
    files: list[Path] = []
    if env.get("OS_CLIENT_CONFIG_FILE"):
        files.append(Path(env["OS_CLIENT_CONFIG_FILE"]).expanduser())
    files += [cwd / "clouds.yaml", home / ".config" / "openstack" / "clouds.yaml", SYSTEM_FILE]
    if env.get("COVE_DATA_DIR"):
        files.append(Path(env["COVE_DATA_DIR"]).expanduser() / "clouds.yaml")
    elif os.geteuid() == 0:
        files.append(Path("/var/lib/cove/clouds.yaml"))
    else:
        files.append(home / ".local" / "share" / "cove" / "clouds.yaml")
    return files


def find_file(env: Mapping[str, str], cwd: Path, home: Path) -> Path | None:
    """The clouds.yaml to read, or None.

    Raises CloudConfigError when OS_CLIENT_CONFIG_FILE names a file that does not exist.
    """
    files = candidate_files(env, cwd, home)
    if env.get("OS_CLIENT_CONFIG_FILE") and not files[0].is_file():
        raise CloudConfigError(f"OS_CLIENT_CONFIG_FILE names {files[0]}, which does not exist")
    return next((f for f in files if f.is_file()), None)


def read_document(path: Path) -> dict[str, Any]:
    """The whole clouds.yaml at ``path`` ({} when empty).

    Raises CloudConfigError when the file cannot be read or is not a clouds.yaml. The message
    names the line of a YAML error but never quotes the file, which holds passwords.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CloudConfigError(f"cannot read {path}: {exc}") from exc
    if text.lstrip().startswith("{"):  # JSON (as cove up writes it): no YAML parser needed
        try:
            data = json.loads(text)
        except ValueError:
            pass  # YAML's flow style, perhaps: the YAML parser says what is wrong
        else:
            return _clouds_document(path, data)
    # Imported here: the parser is a tenth of a short command's start.
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise CloudConfigError(f"{path} is not valid YAML{where}") from None
    return _clouds_document(path, data)


def _clouds_document(path: Path, data: Any) -> dict[str, Any]:
    if data is None:
        return {}
    clouds = data.get("clouds", {}) if isinstance(data, dict) else None
    if not isinstance(clouds, dict) or not all(isinstance(c, dict) for c in clouds.values()):
        raise CloudConfigError(f"{path} has no 'clouds' mapping of cloud names to settings")
    return dict(data)


def read_clouds(path: Path) -> dict[str, Any]:
    """The ``clouds`` mapping of the clouds.yaml at ``path``. Raises CloudConfigError."""
    return dict(read_document(path).get("clouds") or {})


def choose_cloud(clouds: Mapping[str, Any], wanted: str | None, path: Path) -> str | None:
    """The name of the cloud to use: ``wanted``, else ``cove``, else the only one; None when
    the file has several and names none of them ``cove``.

    Raises CloudConfigError when ``wanted`` is not in the file.
    """
    if wanted:
        if wanted not in clouds:
            known = ", ".join(sorted(clouds)) or "none"
            raise CloudConfigError(f"no cloud named '{wanted}' in {path} (clouds: {known})")
        return wanted
    if COVE_CLOUD in clouds:
        return COVE_CLOUD
    return next(iter(clouds)) if len(clouds) == 1 else None


# -- merging the file and the environment -------------------------------------------------------


def _settings_of(cloud: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(auth values, top-level values) of one cloud of the file, aliases resolved."""
    auth_section = cloud.get("auth") or {}
    if not isinstance(auth_section, dict):
        raise CloudConfigError("the cloud's 'auth' is not a mapping")
    auth: dict[str, Any] = {
        _AUTH_ALIASES.get(str(k), str(k)): v for k, v in auth_section.items() if v not in (None, "")
    }
    top = {k: v for k, v in cloud.items() if k != "auth" and v not in (None, "")}
    if "endpoint_type" in top and "interface" not in top:
        top["interface"] = top["endpoint_type"]
    return auth, top


def _apply_env(env: Mapping[str, str], auth: dict[str, Any], top: dict[str, Any]) -> bool:
    """Let each ``OS_*`` variable that is set replace the file's value; returns whether any
    auth variable was set."""
    if any(env.get(v) for v, key in AUTH_ENV.items() if key in _PROJECT_KEYS):
        # A project named in the environment replaces the file's project, id or name.
        for key in _PROJECT_KEYS:
            auth.pop(key, None)
    for variable, key in AUTH_ENV.items():
        if env.get(variable):
            auth[key] = env[variable]
    for variable, key in CLOUD_ENV.items():
        if env.get(variable):
            top[key] = env[variable]
    return any(env.get(v) for v in AUTH_ENV)


def _interface(value: Any, source: str) -> str:
    name = str(value).lower().removesuffix("url")
    if name not in _INTERFACES:
        raise CloudConfigError(
            f"{source}: interface '{value}' is not one of public, internal, admin"
        )
    return name


def _verify(top: Mapping[str, Any]) -> bool | str:
    if top.get("verify") is False or str(top.get("verify")).lower() == "false":
        return False
    return str(top["cacert"]) if top.get("cacert") else True


def _build(source: str, auth: Mapping[str, Any], top: Mapping[str, Any]) -> CloudConfig:
    auth_type = str(top.get("auth_type") or "password")
    if auth_type not in _PASSWORD_AUTH:
        raise CloudConfigError(
            f"{source} uses auth_type '{auth_type}'; the cove command supports 'password' only"
        )
    missing = [
        what
        for what, present in (
            ("auth_url", auth.get("auth_url")),
            ("username (or user_id)", auth.get("username") or auth.get("user_id")),
            ("password", auth.get("password")),
        )
        if not present
    ]
    if missing:
        raise CloudConfigError(f"{source} lacks {', '.join(missing)}")
    url = str(auth["auth_url"])
    if not url.startswith(("http://", "https://")):
        raise CloudConfigError(f"{source}: auth_url must start with http:// or https://")

    def text(key: str) -> str | None:
        return str(auth[key]) if auth.get(key) not in (None, "") else None

    user_domain_name = text("user_domain_name")
    if not user_domain_name and not text("user_domain_id"):
        user_domain_name = "Default"
    project_domain_name = text("project_domain_name")
    if not project_domain_name and not text("project_domain_id"):
        project_domain_name = "Default"
    return CloudConfig(
        source=source,
        auth_url=url.rstrip("/"),
        password=str(auth["password"]),
        username=text("username"),
        user_id=text("user_id"),
        project_name=text("project_name"),
        project_id=text("project_id"),
        user_domain_name=user_domain_name,
        user_domain_id=text("user_domain_id"),
        project_domain_name=project_domain_name,
        project_domain_id=text("project_domain_id"),
        region_name=str(top["region_name"]) if top.get("region_name") else None,
        interface=_interface(top.get("interface") or "public", source),
        verify=_verify(top),
    )


def load(env: Mapping[str, str], cloud: str | None, cwd: Path, home: Path) -> CloudConfig:
    """The credentials to use, from the clouds.yaml found and the ``OS_*`` variables.

    ``cloud`` is ``--os-cloud`` (or OS_CLOUD). Raises NoCredentials when neither a file nor the
    environment configures anything, CloudConfigError for anything else that is wrong.
    """
    path = find_file(env, cwd, home)
    if path is not None and not cloud and env.get("OS_AUTH_URL"):
        # A complete environment with no cloud named is used alone, as OpenStack clients do.
        path = None
    auth: dict[str, Any] = {}
    top: dict[str, Any] = {}
    source = "the OS_* environment variables"
    name: str | None = None
    if path is not None:
        clouds = read_clouds(path)
        name = choose_cloud(clouds, cloud, path)
        if name is not None:
            source = f"cloud '{name}' of {path}"
            try:
                auth, top = _settings_of(clouds[name])
            except CloudConfigError as exc:
                raise CloudConfigError(f"{source}: {exc}") from None
        elif clouds:
            raise CloudConfigError(
                f"{path} has several clouds ({', '.join(sorted(clouds))}): "
                "choose one with --os-cloud or OS_CLOUD"
            )
    elif cloud:
        raise CloudConfigError(
            f"cloud '{cloud}' was asked for, but no clouds.yaml was found (looked at "
            f"{', '.join(str(f) for f in candidate_files(env, cwd, home))})"
        )
    from_env = _apply_env(env, auth, top)
    if name is None and not from_env:
        raise NoCredentials(f"no credentials are configured: {HOW_TO_CONFIGURE}")
    if name is not None and from_env:
        source += " and OS_* variables"
    return _build(source, auth, top)


# -- talking to Keystone ------------------------------------------------------------------------


def token_url(auth_url: str) -> str:
    """Where a password authentication is posted: ``<identity v3>/auth/tokens``."""
    return f"{identity_v3(auth_url)}/auth/tokens"


def _ref(name: str | None, ident: str | None) -> dict[str, str]:
    return {"id": ident} if ident else {"name": name or "Default"}


def token_request(cfg: CloudConfig) -> dict[str, Any]:
    """The body of a password authentication, as keystoneauth sends it."""
    user: dict[str, Any] = {"password": cfg.password}
    if cfg.user_id:
        user["id"] = cfg.user_id
    else:
        user["name"] = cfg.username
        user["domain"] = _ref(cfg.user_domain_name, cfg.user_domain_id)
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": user}}}
    if cfg.project_id:
        auth["scope"] = {"project": {"id": cfg.project_id}}
    elif cfg.project_name:
        domain = _ref(cfg.project_domain_name, cfg.project_domain_id)
        auth["scope"] = {"project": {"name": cfg.project_name, "domain": domain}}
    return {"auth": auth}


def find_endpoint(
    catalog: Sequence[Mapping[str, Any]],
    service_type: str,
    interface: str = "public",
    region: str | None = None,
) -> str | None:
    """The URL of ``service_type`` for ``interface`` (and ``region`` when given) in a Keystone
    v3 catalog, or None."""
    for service in catalog:
        if not isinstance(service, Mapping) or service.get("type") != service_type:
            continue
        for endpoint in service.get("endpoints") or []:
            if not isinstance(endpoint, Mapping) or endpoint.get("interface") != interface:
                continue
            if region and region not in (endpoint.get("region"), endpoint.get("region_id")):
                continue
            if endpoint.get("url"):
                return str(endpoint["url"]).rstrip("/")
    return None


def looks_like_id(ref: str) -> bool:
    """Whether a project reference is a Keystone id rather than a name (as OSC decides)."""
    return bool(_KEYSTONE_ID.match(ref.replace("-", "")))


# -- the cloud cove up writes -------------------------------------------------------------------


@dataclass(frozen=True)
class Login:
    """Credentials to store in the ``cove`` cloud."""

    username: str
    project_name: str
    password: str = field(repr=False)


def cove_cloud(auth_url: str, region: str, login: Login) -> dict[str, Any]:
    return {
        "auth_type": "password",
        "auth": {
            "auth_url": auth_url,
            "username": login.username,
            "password": login.password,
            "project_name": login.project_name,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": region,
        "interface": "public",
        "identity_api_version": 3,
    }


def updated_clouds(
    existing: Mapping[str, Any] | None, auth_url: str, region: str, login: Login | None
) -> dict[str, Any] | None:
    """The whole clouds.yaml document with the ``cove`` cloud brought up to date, or None
    when nothing needs writing.

    With ``login`` (new credentials) the cloud is (re)written. Without, an existing ``cove``
    cloud keeps its credentials and only its ``auth_url`` and ``region_name`` follow the
    current values; without both, there is nothing to write. Other clouds and keys are kept.
    """
    doc: dict[str, Any] = dict(existing or {})
    clouds = dict(doc.get("clouds") or {})
    current = clouds.get(COVE_CLOUD)
    if login is not None:
        clouds[COVE_CLOUD] = cove_cloud(auth_url, region, login)
    elif isinstance(current, dict):
        auth = dict(current.get("auth") or {})
        if auth.get("auth_url") == auth_url and current.get("region_name") == region:
            return None
        auth["auth_url"] = auth_url
        clouds[COVE_CLOUD] = {**current, "auth": auth, "region_name": region}
    else:
        return None
    doc["clouds"] = clouds
    return doc


def _as_text(doc: Mapping[str, Any]) -> str:
    """``doc`` as JSON, or as YAML when it holds what JSON cannot say (a date in another
    cloud, say)."""
    try:
        return json.dumps(dict(doc), indent=2, ensure_ascii=False) + "\n"
    except (TypeError, ValueError):
        # Imported here: the parser is a tenth of a short command's start.
        import yaml

        return str(yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False))


def write_private(path: Path, doc: Mapping[str, Any], owner: tuple[int, int] | None) -> None:
    """Replace ``path`` with ``doc`` as JSON (which is YAML too, for every client that reads
    clouds.yaml, and needs no YAML parser in the ``cove`` command), mode 0600, owned by
    ``owner`` (uid, gid) when given; the file is written beside it first, so a crash leaves
    the old one whole.

    Raises OSError.
    """
    fd, tmp = tempfile.mkstemp(prefix=".clouds-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            if owner is not None:
                os.fchown(fh.fileno(), *owner)
            os.fchmod(fh.fileno(), 0o600)
            fh.write(_as_text(doc))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
