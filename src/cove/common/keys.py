"""Deployment keys: random secrets kept in files of mode 0600 under the data directory (the
token key, the task key, the backup keys), made once and read by every process of the
deployment.

Backup keys never leave the control plane: a guest is given a key derived from one for a single
backup (:func:`derive_backup_key`), so what one guest learns opens no other backup.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from cove.common.errors import ConfigurationError

#: Bytes of randomness in a key (written as hex).
KEY_BYTES = 32


def load_key(path: Path) -> bytes:
    """The key at ``path``.

    Raises ConfigurationError when it is missing or unreadable.
    """
    try:
        key = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(
            f"the key {path} does not exist; run 'cove-manage bootstrap'"
        ) from exc
    except OSError as exc:
        raise ConfigurationError(f"cannot read the key {path}: {exc.strerror}") from exc
    return key.strip()


def ensure_key(path: Path) -> bytes:
    """The key at ``path``, created (mode 0600) if there is none yet. Several processes
    may start at once: the key is written to a private file and linked into place, so none
    ever reads a half-written key (where the filesystem has no hard links, it is created in
    place with O_EXCL instead).

    Raises ConfigurationError when the key cannot be read or written.
    """
    if path.is_symlink() and not path.exists():
        raise ConfigurationError(
            f"the key {path} is a symbolic link to {os.readlink(path)}, which does not exist"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.lexists(path):
            _create_key(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot create the key {path}: {exc.strerror}") from exc
    key = load_key(path)
    for _attempt in range(50):
        if len(key) >= KEY_BYTES:
            break
        # Only where there are no hard links: another process is still writing it in place.
        time.sleep(0.02)
        key = load_key(path)
    if len(key) < KEY_BYTES:
        # A key that short would make tokens forgeable and sealed secrets readable.
        raise ConfigurationError(f"the key {path} is too short ({len(key)} bytes); remove it")
    return key


def _create_key(path: Path, content: bytes | None = None) -> None:
    key = content if content is not None else secrets.token_hex(KEY_BYTES).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        _write_new(tmp, key)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process made it first: theirs is the key
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            with contextlib.suppress(FileExistsError):
                _write_new(path, key)
    finally:
        tmp.unlink(missing_ok=True)


_KEY_ID = re.compile(r"bk-[0-9a-f]{8}")


def current_backup_key(keys_dir: Path) -> tuple[str, bytes]:
    """The id and value of the key new backups are sealed with, made on first use.

    Raises ConfigurationError when it cannot be read or made.
    """
    pointer = keys_dir / "current"
    try:
        keys_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not os.path.lexists(pointer):
            _create_key(pointer, f"bk-{secrets.token_hex(4)}".encode())
    except OSError as exc:
        raise ConfigurationError(f"cannot create the key {pointer}: {exc.strerror}") from exc
    key_id = ""
    for _attempt in range(50):
        key_id = load_key(pointer).decode(errors="replace")
        if _KEY_ID.fullmatch(key_id):
            break
        time.sleep(0.02)  # only where there are no hard links: still being written
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigurationError(f"{pointer} does not name a backup key; remove it")
    return key_id, ensure_key(keys_dir / f"{key_id}.key")


def backup_key(keys_dir: Path, key_id: str) -> bytes:
    """The backup key ``key_id``. Raises ConfigurationError when it is not here (a backup
    sealed with it cannot be read without it)."""
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigurationError(f"'{key_id[:40]}' is not a backup key id")
    return load_key(keys_dir / f"{key_id}.key")


#: What a per-backup key's HKDF info starts with; the backup id follows.
BACKUP_KEY_INFO = b"cove-backup-key:"


def derive_backup_key(master: bytes, backup_id: str) -> bytes:
    """The 32-byte key the backup ``backup_id`` is sealed with: HKDF-SHA256 of the deployment
    backup key ``master`` (the hex text of its file), no salt, with :data:`BACKUP_KEY_INFO`
    and the backup id as info. Raises ConfigurationError when ``master`` is not a key,
    ValueError when ``backup_id`` is empty."""
    if not backup_id:
        raise ValueError("a backup's key is derived from its id, and the id is empty")
    return _derive(master, BACKUP_KEY_INFO + backup_id.encode())


#: What an instance's log key's HKDF info starts with; the instance id follows.
LOG_KEY_INFO = b"cove-log-key:"


def derive_log_key(master: bytes, instance_id: str) -> bytes:
    """The 32-byte key instance ``instance_id`` seals its published logs with, derived as
    :func:`derive_backup_key` derives a backup's (with :data:`LOG_KEY_INFO`): a guest given it
    can read no backup and no other instance's logs. Raises as that function does."""
    if not instance_id:
        raise ValueError("a log key is derived from an instance id, and the id is empty")
    return _derive(master, LOG_KEY_INFO + instance_id.encode())


def _derive(master: bytes, info: bytes) -> bytes:
    try:
        raw = bytes.fromhex(master.decode("ascii"))
    except ValueError:
        raise ConfigurationError("a backup key is not hex; restore its file") from None
    if len(raw) < KEY_BYTES:
        raise ConfigurationError("a backup key is shorter than 32 bytes; restore its file")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info)
    return hkdf.derive(raw)


def rotate_backup_key(keys_dir: Path) -> str:
    """Make a new backup key the current one and return its id; older keys stay, for the
    backups sealed with them."""
    key_id = f"bk-{secrets.token_hex(4)}"
    ensure_key(keys_dir / f"{key_id}.key")
    tmp = keys_dir / f".current.{os.getpid()}.{secrets.token_hex(4)}"
    _write_new(tmp, key_id.encode())
    os.replace(tmp, keys_dir / "current")
    return key_id


def _write_new(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
