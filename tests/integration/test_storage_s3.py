"""The S3 store against the store contract (cove.storage.base), on a real S3 server."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator

import pytest

from cove.common.errors import ArtifactMissing, StoreUnavailable
from cove.domain.backups import StoreSpec
from cove.storage import open_store
from cove.storage.base import CHUNK
from cove.storage.s3 import AHEAD, PART, UPLOADS, S3Store

pytestmark = pytest.mark.integration


@pytest.fixture
def store(s3_server) -> S3Store:  # type: ignore[no-untyped-def]
    spec = StoreSpec(
        kind="s3",
        location=s3_server.endpoint,
        bucket=f"cove-{secrets.token_hex(4)}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    s3 = open_store(spec)
    assert isinstance(s3, S3Store)
    s3.ensure_bucket()
    s3.ensure_bucket()  # idempotent
    return s3


def uploads(store: S3Store) -> list[object]:
    return list(store._client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


def test_put_get_size_delete_over_several_parts(store: S3Store) -> None:
    data = os.urandom(PART + 3 * CHUNK + 5)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    assert store.put("inst/b1.cbk", chunks) == len(data)
    assert store.size("inst/b1.cbk") == len(data)
    got = list(store.get("inst/b1.cbk"))
    assert b"".join(got) == data and max(map(len, got)) <= CHUNK
    store.delete("inst/b1.cbk")
    store.delete("inst/b1.cbk")
    assert store.size("inst/b1.cbk") is None
    with pytest.raises(ArtifactMissing):
        store.get("inst/b1.cbk")


def test_an_empty_artifact_is_stored(store: S3Store) -> None:
    assert store.put("empty", []) == 0
    assert b"".join(store.get("empty")) == b""


def test_a_failed_put_leaves_no_object_and_no_upload(store: S3Store) -> None:
    store.put("k", [b"old"])

    def broken() -> Iterator[bytes]:
        yield os.urandom(PART + 10)
        raise RuntimeError("the engine died")

    with pytest.raises(RuntimeError):
        store.put("k", broken())
    assert b"".join(store.get("k")) == b"old"
    assert uploads(store) == []


def test_an_upload_left_by_a_killed_writer_is_discarded(store: S3Store) -> None:
    started = store._client.create_multipart_upload(Bucket=store.bucket, Key="half")
    store._client.upload_part(
        Bucket=store.bucket, Key="half", UploadId=started["UploadId"], PartNumber=1, Body=b"x"
    )
    assert len(uploads(store)) == 1
    store.discard_partial("half")
    assert uploads(store) == []
    assert store.size("half") is None


def test_wrong_credentials_and_a_dead_endpoint_are_store_errors(s3_server, store: S3Store) -> None:  # type: ignore[no-untyped-def]
    wrong = open_store(
        StoreSpec(
            kind="s3",
            location=s3_server.endpoint,
            bucket=store.bucket,
            access_key=s3_server.access_key,
            secret_key="not-the-secret",
        )
    )
    with pytest.raises(StoreUnavailable) as info:
        wrong.size("x")
    assert "not-the-secret" not in info.value.message
    dead = open_store(StoreSpec(kind="s3", location="http://127.0.0.1:9", bucket="b"))
    with pytest.raises(StoreUnavailable):
        dead.put("x", [b"data"])


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("s3-part", "s3-get"))]


def test_parts_are_sent_at_once_and_stored_in_order(store: S3Store) -> None:
    data = os.urandom((UPLOADS + 2) * PART + 12345)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    assert store.put("many", chunks) == len(data)
    assert b"".join(store.get("many")) == data
    assert store_threads() == []


def test_a_put_failing_with_parts_in_flight_leaves_nothing_and_no_thread(
    store: S3Store,
) -> None:
    def broken() -> Iterator[bytes]:
        for _ in range(UPLOADS * PART // CHUNK + 1):
            yield os.urandom(CHUNK)
        raise RuntimeError("the engine died")

    with pytest.raises(RuntimeError):
        store.put("k", broken())
    assert store.size("k") is None
    assert uploads(store) == []
    assert store_threads() == []


def test_a_get_closed_early_stops_reading_ahead(store: S3Store) -> None:
    store.put("big", [os.urandom(CHUNK)] * (3 * AHEAD))
    chunks = store.get("big")
    assert len(next(chunks)) == CHUNK
    chunks.close()  # type: ignore[attr-defined]
    assert store_threads() == []
