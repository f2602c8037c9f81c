"""A store in an S3-compatible object store (boto3, the ``s3`` extra).

``put`` is a multipart upload of parts of ``PART`` bytes, up to ``UPLOADS`` of them sent at
once by threads of its own while the next one fills (so at most ``UPLOADS + 1`` parts in
memory), completed only after the last chunk: until then the object does not exist, and a
failure waits for the parts being sent, then aborts the upload. A writer killed half-way
leaves an unfinished upload, which ``discard_partial`` aborts (object stores also expire them
by lifecycle rules). ``get`` streams the object, read ``AHEAD`` chunks ahead of its consumer
by a thread of its own.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from cove.common.errors import ArtifactMissing, StoreUnavailable
from cove.domain.backups import StoreSpec
from cove.storage.base import CHUNK, Store
from cove.storage.handover import read_ahead

LOG = logging.getLogger(__name__)

#: Bytes per uploaded part (S3 wants at least 5 MiB for every part but the last).
PART = 8 << 20
#: Parts uploaded at once, each in a thread of its own, while the next one fills: an object
#: store answers one part slower than the seal makes it.
UPLOADS = 3
#: Chunks that ``get`` reads ahead of its consumer, in a thread of its own.
AHEAD = 8


class S3Store(Store):
    kind = "s3"

    def __init__(self, spec: StoreSpec) -> None:
        super().__init__(spec)
        if not spec.bucket:
            raise ValueError("an S3 store needs a bucket")
        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:  # the optional extra is missing
            raise StoreUnavailable(
                "the S3 store needs boto3: install Cove with the 's3' extra"
            ) from exc
        import botocore.exceptions

        self._errors: tuple[type[BaseException], ...] = (
            botocore.exceptions.BotoCoreError,
            botocore.exceptions.ClientError,
        )
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=spec.location or None,
            region_name=spec.region or "us-east-1",
            aws_access_key_id=spec.access_key or None,
            aws_secret_access_key=spec.secret_key or None,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
                s3={"addressing_style": "path"},
            ),
        )
        self.bucket = spec.bucket
        self.prefix = spec.prefix.strip("/")

    def describe(self) -> str:
        where = f"{self.spec.location or 'AWS'} bucket {self.bucket}"
        return f"S3 store at {where}" + (f" under {self.prefix}/" if self.prefix else "")

    def _object(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _failed(self, what: str, exc: BaseException) -> StoreUnavailable:
        code = _code(exc)
        reason = code or type(exc).__name__
        return StoreUnavailable(f"cannot {what} in the {self.describe()}: {reason}")

    def _put(self, key: str, chunks: Iterable[bytes]) -> int:
        name = self._object(key)
        # A container named in a request may not exist yet, as Trove's Swift containers.
        self.ensure_bucket()
        try:
            upload = self._client.create_multipart_upload(Bucket=self.bucket, Key=name)
        except self._errors as exc:
            raise self._failed(f"write {key}", exc) from None
        upload_id = upload["UploadId"]
        try:
            size, parts = self._upload_parts(name, upload_id, chunks, key)
            try:
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except self._errors as exc:
                raise self._failed(f"write {key}", exc) from None
        except BaseException:
            self._abort(name, upload_id)
            raise
        return size

    def _upload_parts(
        self, name: str, upload_id: str, chunks: Iterable[bytes], key: str
    ) -> tuple[int, list[dict[str, Any]]]:
        """Upload ``chunks`` as parts of ``PART`` bytes or a little more, up to ``UPLOADS`` at
        once in threads of their own while the next part fills; the bytes read and the parts,
        in order. Every thread has ended when it returns or raises."""
        parts: list[dict[str, Any]] = []
        sending: deque[Future[dict[str, Any]]] = deque()
        pending: list[bytes] = []
        filled = size = 0
        with ThreadPoolExecutor(UPLOADS, thread_name_prefix="s3-part") as pool:

            def send() -> None:
                while len(sending) >= UPLOADS:
                    parts.append(sending.popleft().result())
                number = len(parts) + len(sending) + 1
                data = b"".join(pending)
                pending.clear()
                sending.append(pool.submit(self._upload_part, name, upload_id, number, data, key))

            try:
                for chunk in chunks:
                    pending.append(chunk)
                    filled += len(chunk)
                    size += len(chunk)
                    if filled >= PART:
                        send()
                        filled = 0
                if pending or not (parts or sending):
                    send()
                while sending:
                    parts.append(sending.popleft().result())
            except BaseException:
                for future in sending:
                    future.cancel()
                raise
        return size, parts

    def _upload_part(
        self, name: str, upload_id: str, number: int, data: bytes, key: str
    ) -> dict[str, Any]:
        try:
            answer = self._client.upload_part(
                Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
            )
        except self._errors as exc:
            raise self._failed(f"write {key}", exc) from None
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def _abort(self, name: str, upload_id: str) -> None:
        try:
            self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
        except self._errors as exc:
            LOG.warning("could not abort an upload to %s: %s", self.describe(), _code(exc))

    def _get(self, key: str) -> Iterator[bytes]:
        try:
            answer = self._client.get_object(Bucket=self.bucket, Key=self._object(key))
        except self._errors as exc:
            if _code(exc) in ("NoSuchKey", "404"):
                raise ArtifactMissing(
                    f"the artifact {key} is not in the {self.describe()}"
                ) from None
            raise self._failed(f"read {key}", exc) from None
        # The next chunks arrive while the caller works on this one.
        return read_ahead(self._chunks(answer["Body"], key), AHEAD, "s3-get")

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            while True:
                try:
                    chunk = body.read(CHUNK)
                except self._errors as exc:
                    raise self._failed(f"read {key}", exc) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    def _delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._object(key))
        except self._errors as exc:
            raise self._failed(f"delete {key}", exc) from None

    def _size(self, key: str) -> int | None:
        try:
            answer = self._client.head_object(Bucket=self.bucket, Key=self._object(key))
        except self._errors as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._failed(f"look at {key}", exc) from None
        return int(answer["ContentLength"])

    def _keys(self, prefix: str) -> list[str]:
        top = self._object(prefix.rstrip("/")) + "/"
        found = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=top
            )
            for page in pages:
                found += [prefix + o["Key"][len(top) :] for o in page.get("Contents", [])]
        except self._errors as exc:
            if _code(exc) == "NoSuchBucket":
                return []
            raise self._failed(f"list {prefix}", exc) from None
        return found

    def _discard_partial(self, key: str) -> None:
        name = self._object(key)
        try:
            listing = self._client.list_multipart_uploads(Bucket=self.bucket, Prefix=name)
        except self._errors as exc:
            if _code(exc) == "NoSuchBucket":
                return  # nothing was ever written there
            raise self._failed(f"look for unfinished uploads of {key}", exc) from None
        for upload in listing.get("Uploads", []):
            if upload.get("Key") == name:
                self._abort(name, upload["UploadId"])

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet. Raises StoreUnavailable."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except self._errors as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise self._failed("reach the bucket", exc) from None
        try:
            self._client.create_bucket(Bucket=self.bucket)
        except self._errors as exc:
            if _code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise self._failed("create the bucket", exc) from None


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""
