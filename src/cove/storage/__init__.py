"""Backup stores (``base.py`` is the contract), chosen by ``StoreSpec.kind``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from cove.domain.backups import StoreSpec, check_container
from cove.storage.base import Store, check_key

if TYPE_CHECKING:
    # Only the control plane passes settings; a guest agent, which opens stores too, does not
    # load pydantic (a fifth of a second) for them.
    from cove.common.settings import Settings

__all__ = [
    "KINDS",
    "Store",
    "check_container",
    "check_key",
    "configured_store",
    "open_store",
    "with_credentials",
]

#: The known store backends by kind; the S3 one imports boto3 only when opened.
KINDS = ("filesystem", "s3")


def open_store(spec: StoreSpec) -> Store:
    """The store ``spec`` describes. Raises ValueError for an unknown kind (naming the known
    ones) or an incomplete spec, StoreUnavailable when its library is missing."""
    if spec.kind == "filesystem":
        from cove.storage.filesystem import FilesystemStore

        return FilesystemStore(spec)
    if spec.kind == "s3":
        from cove.storage.s3 import S3Store

        return S3Store(spec)
    raise ValueError(f"unknown backup store '{spec.kind}' (known: {', '.join(KINDS)})")


def configured_store(settings: Settings, container: str | None = None) -> StoreSpec:
    """The deployment's store (with its credentials), at ``container`` or the configured one:
    a bucket of the S3 store, a directory under the filesystem store's root."""
    name = check_container(container or settings.backup_container)
    if settings.backup_store == "s3":
        return StoreSpec(
            kind="s3",
            location=settings.backup_location,
            bucket=name,
            region=settings.backup_region,
            access_key=settings.backup_access_key,
            secret_key=settings.backup_secret_key.get_secret_value(),
        )
    return StoreSpec(kind="filesystem", location=settings.backup_location, prefix=name)


def with_credentials(spec: StoreSpec, settings: Settings) -> StoreSpec:
    """``spec`` as recorded on a backup (no secrets), with the credentials of the configured
    store when it is that store (a store the settings no longer describe has none)."""
    if spec.kind == "s3" and settings.backup_store == "s3":
        return dataclasses.replace(
            spec,
            access_key=settings.backup_access_key,
            secret_key=settings.backup_secret_key.get_secret_value(),
        )
    return spec
