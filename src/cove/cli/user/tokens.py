"""The ``cove`` command's token cache: a scoped token is kept between runs, one file per cloud
(its identity service, user, project, interface and region), so a command does not pay the
identity service's password hash each time.

Each file lives in ``$XDG_CACHE_HOME/cove/tokens`` (``~/.cache/cove/tokens``), a directory
only its owner may enter, and is itself readable by its owner alone (0600); a file that is not
the user's own or that others may read is ignored. A file holds the token, when it expires,
its project, the catalog's database endpoint and a salted hash of the password it was got
with: a token is used while it has more than ``RENEW_BEFORE`` seconds left and the cloud's
password is still that one (a wrong password is refused at once, as without the cache), and one
the API refuses (revoked, or its user's password changed) is forgotten by the caller, which
logs in again. The hash is fast, so it gives nothing that reading the user's files does not
already give: the password itself is in the same user's ``clouds.yaml`` or environment. A file
whose token has expired is removed when it is read. Deleting the directory forgets every
token.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.cli import clouds

#: The environment variable that turns the cache off (``COVE_TOKEN_CACHE=off``).
SWITCH = "COVE_TOKEN_CACHE"


@dataclass(frozen=True)
class CachedToken:
    """What a cache file holds of a scoped token."""

    token: str = field(repr=False)
    expires_at: float
    project_id: str
    project_name: str
    identity: str
    catalog_endpoint: str | None


def cache_dir(env: dict[str, str], home: Path) -> Path:
    """Where the files are: ``$XDG_CACHE_HOME/cove/tokens``, or under ``~/.cache``."""
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else home / ".cache"
    return base / "cove" / "tokens"


def enabled(env: dict[str, str]) -> bool:
    """Whether the cache is on (it is unless ``COVE_TOKEN_CACHE`` says ``off``)."""
    return env.get(SWITCH, "").lower() not in ("off", "0", "no", "false")


def _key(cfg: clouds.CloudConfig) -> str:
    """The file name of ``cfg``'s cloud: a digest of where its credentials come from and of
    what decides which token it gets."""
    who = [
        cfg.source,
        cfg.auth_url,
        cfg.user_id,
        cfg.username,
        cfg.user_domain_id,
        cfg.user_domain_name,
        cfg.project_id,
        cfg.project_name,
        cfg.project_domain_id,
        cfg.project_domain_name,
        cfg.interface,
        cfg.region_name,
    ]
    return hashlib.sha256(json.dumps(who).encode()).hexdigest()[:32] + ".json"


def _password_hash(password: str, salt: bytes) -> str:
    return hashlib.blake2b(password.encode(), salt=salt, digest_size=32).hexdigest()


def load(directory: Path, cfg: clouds.CloudConfig, renew_before: float) -> CachedToken | None:
    """The cached token of ``cfg``'s cloud, if there is one it may still use; None otherwise
    (never an error: the cache only saves time)."""
    path = directory / _key(cfg)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            return None
        with os.fdopen(fd, encoding="utf-8", closefd=False) as f:
            data: Any = json.load(f)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    try:
        salt = bytes.fromhex(data["salt"])
        found = CachedToken(
            token=str(data["token"]),
            expires_at=float(data["expires_at"]),
            project_id=str(data["project_id"]),
            project_name=str(data["project_name"]),
            identity=str(data["identity"]),
            catalog_endpoint=data["catalog_endpoint"] and str(data["catalog_endpoint"]),
        )
        same_password = secrets.compare_digest(
            _password_hash(cfg.password, salt), str(data["password_hash"])
        )
    except (KeyError, TypeError, ValueError):
        return None
    if found.expires_at <= time.time():
        path.unlink(missing_ok=True)
    if not same_password or found.expires_at - time.time() < renew_before:
        return None
    return found


def save(directory: Path, cfg: clouds.CloudConfig, token: CachedToken) -> None:
    """Keep ``token`` for ``cfg``'s cloud, replacing the file at once (a concurrent run reads
    the old file or the new one). A cache that cannot be written is left alone."""
    salt = secrets.token_bytes(16)
    data = {
        "token": token.token,
        "expires_at": token.expires_at,
        "project_id": token.project_id,
        "project_name": token.project_name,
        "identity": token.identity,
        "catalog_endpoint": token.catalog_endpoint,
        "salt": salt.hex(),
        "password_hash": _password_hash(cfg.password, salt),
    }
    path = directory / _key(cfg)
    temporary = directory / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)  # made earlier, by an older version or by hand
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)


def forget(directory: Path, cfg: clouds.CloudConfig) -> None:
    """Drop the cached token of ``cfg``'s cloud (one the API refused)."""
    (directory / _key(cfg)).unlink(missing_ok=True)
