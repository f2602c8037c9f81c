"""A store in an S3-compatible object store (boto3, the ``s3`` extra).

``put`` is a multipart upload of parts of ``PART`` bytes, one part in memory at a time,
completed only after the last chunk: until then the object does not exist, and a failure
aborts the upload. A writer killed half-way leaves an unfinished upload, which
``discard_partial`` aborts (object stores also expire them by lifecycle rules).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from cove.common.errors import ArtifactMissing, StoreUnavailable
from cove.domain.backups import StoreSpec
from cove.storage.base import CHUNK, Store

LOG = logging.getLogger(__name__)

#: Bytes per uploaded part (S3 wants at least 5 MiB for every part but the last).
PART = 16 << 20


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
        parts: list[dict[str, Any]] = []
        size = 0
        try:
            buffer = bytearray()
            for chunk in chunks:
                buffer += chunk
                size += len(chunk)
                while len(buffer) >= PART:
                    self._upload_part(name, upload_id, parts, bytes(buffer[:PART]), key)
                    del buffer[:PART]
            if buffer or not parts:
                self._upload_part(name, upload_id, parts, bytes(buffer), key)
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

    def _upload_part(
        self, name: str, upload_id: str, parts: list[dict[str, Any]], data: bytes, key: str
    ) -> None:
        number = len(parts) + 1
        try:
            answer = self._client.upload_part(
                Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=data
            )
        except self._errors as exc:
            raise self._failed(f"write {key}", exc) from None
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})

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
        return self._chunks(answer["Body"], key)

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
