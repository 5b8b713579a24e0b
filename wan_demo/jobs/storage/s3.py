"""Job files in any S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through boto3.

`s3://bucket/prefix` names the place; endpoint, credentials and region come from boto3's usual
sources: AWS_ENDPOINT_URL_S3 (or AWS_ENDPOINT_URL) for a non-AWS endpoint, AWS_ACCESS_KEY_ID /
AWS_SECRET_ACCESS_KEY (or a profile, or an instance role), AWS_DEFAULT_REGION. Objects are written
with one PUT each (an acknowledged PUT is durable); outcome links can be presigned GETs that expire.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, BinaryIO

from wan_demo.jobs.storage.common import check_key, content_type

SCHEME = "s3://"
PROBE_TIMEOUT_S = 3  # /readyz: one HeadBucket, no retries, so a probe answers within seconds


class S3Storage:
    remote = True

    def __init__(self, url: str):
        bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
        if not bucket:
            raise ValueError(f"storage_url {url!r} names no bucket; use s3://bucket/prefix")
        self.bucket, self.prefix = bucket, prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._client: Any = None
        self._probe: Any = None  # a client with short timeouts and no retries, for ping()

    def open(self) -> None:
        import boto3

        client = boto3.client("s3")  # endpoint, credentials and region from the AWS env vars / config
        try:
            client.head_bucket(Bucket=self.bucket)
        except Exception as e:  # noqa: BLE001  # botocore raises several kinds; all mean "not usable"
            raise RuntimeError(f"S3 bucket {self.bucket!r} is not reachable: {e}") from None
        self._client = client

    def ping(self) -> None:
        if self._probe is None:
            import boto3
            from botocore.config import Config

            quick = Config(
                connect_timeout=PROBE_TIMEOUT_S,
                read_timeout=PROBE_TIMEOUT_S,
                retries={"total_max_attempts": 1},
            )
            self._probe = boto3.client("s3", config=quick)
        try:
            self._probe.head_bucket(Bucket=self.bucket)
        except Exception as e:  # noqa: BLE001  # botocore raises several kinds; all mean "not usable"
            raise OSError(f"S3 bucket {self.bucket!r} is not reachable ({type(e).__name__})") from None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("the S3 storage is not open; call open() first")
        return self._client

    def _object(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _key_of(self, location: str) -> str:
        head = f"{SCHEME}{self.bucket}/"
        if not location.startswith(head):
            raise FileNotFoundError(f"{location[:80]!r} is not in bucket {self.bucket!r}")
        return location[len(head) :]

    def _location(self, object_key: str) -> str:
        return f"{SCHEME}{self.bucket}/{object_key}"

    def put_bytes(self, key: str, data: bytes) -> str:
        name = self._object(key)
        self.client.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type(key))
        return self._location(name)

    def put_file(self, key: str, path: Path) -> str:
        name = self._object(key)
        extra = {"ContentType": content_type(key)}
        self.client.upload_file(str(path), self.bucket, name, ExtraArgs=extra)
        Path(path).unlink(missing_ok=True)  # the bucket holds it now
        return self._location(name)

    def read_bytes(self, location: str) -> bytes:
        stream, _ = self.reader(location)
        with stream:
            return stream.read()

    def reader(self, location: str) -> tuple[BinaryIO, int]:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key_of(location))
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(location) from None
        return answer["Body"], int(answer["ContentLength"])

    def url(self, location: str, expires_s: int) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key_of(location)}
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(expires_s))

    def delete(self, location: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key_of(location))

    def older_than(self, area: str, cutoff: float, limit: int | None = None) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{area}/"
        )
        found = (
            self._location(item["Key"])
            for page in pages  # fetched one page (up to 1000 keys) at a time, as the batch needs
            for item in page.get("Contents", [])
            if item["LastModified"].timestamp() < cutoff
        )
        return list(itertools.islice(found, limit))

    def local_path(self, location: str) -> Path | None:
        return None
