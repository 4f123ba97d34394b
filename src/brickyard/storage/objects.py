"""Object stores behind DBFS mounts (s3a://), as the DBFS API sees them: keys under a prefix as a tree.

A small ABC so that other stores (Azure Blob) can be added with the same few methods; S3 is
served through boto3 with the mount's own endpoint and keys (the same `fs.s3a.*` settings
Spark uses), so the workspace lists and reads what the cluster writes.
"""
from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from brickyard.errors import BrickyardError


@dataclass(frozen=True)
class ObjectStat:
    name: str  # last path segment
    is_dir: bool
    size: int
    mtime_ms: int


class ObjectStore(abc.ABC):
    """One mounted bucket prefix; paths are relative ("" is the mount's root, "a/b.csv" a file)."""

    @abc.abstractmethod
    def stat(self, rel: str) -> ObjectStat | None:
        """The file or (implicit) directory at rel, or None."""

    @abc.abstractmethod
    def list(self, rel: str) -> list[ObjectStat]:
        """Direct children of the directory rel."""

    @abc.abstractmethod
    def read(self, rel: str, offset: int, length: int) -> bytes:
        """Up to length bytes from offset."""

    @abc.abstractmethod
    def upload(self, rel: str, local: Path) -> None:
        """Store a local file under rel (replacing it)."""

    @abc.abstractmethod
    def mkdirs(self, rel: str) -> None:
        """Make rel appear as an (empty) directory."""

    @abc.abstractmethod
    def delete(self, rel: str, recursive: bool) -> bool:
        """Delete a file, or a directory tree when recursive; False when nothing was there."""

    def download(self, rel: str, local: Path) -> None:
        """Copy rel into a local file (built on read)."""
        offset = 0
        with open(local, "wb") as fh:
            while block := self.read(rel, offset, 8 << 20):
                fh.write(block)
                offset += len(block)


def _io_error(exc: Exception, what: str) -> BrickyardError:
    # Never quote the request (it may carry signed headers), only the store's own error.
    code = getattr(exc, "response", {}).get("Error", {}).get("Code") if hasattr(exc, "response") else None
    return BrickyardError("IO_ERROR", f"{what}: {code or type(exc).__name__}: {str(exc)[:300]}")


class S3Store(ObjectStore):
    """s3a://bucket/prefix through boto3, configured from the mount's fs.s3a.* settings."""

    def __init__(self, bucket: str, prefix: str, conf: Mapping[str, str]):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.conf = dict(conf)
        self._client = None

    @staticmethod
    def setting(conf: Mapping[str, str], bucket: str, name: str) -> str | None:
        """A fs.s3a setting as S3A resolves it: the per-bucket key first, then the global one."""
        return conf.get(f"fs.s3a.bucket.{bucket}.{name}") or conf.get(f"fs.s3a.{name}")

    def client(self):  # noqa: ANN201
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:  # pragma: no cover - boto3 is a dependency
                raise BrickyardError("INVALID_STATE", "boto3 is not installed: the workspace cannot reach "
                                     "s3a:// mounts itself (Spark still can).") from None
            get = lambda n: self.setting(self.conf, self.bucket, n)  # noqa: E731
            endpoint = get("endpoint")
            if endpoint and "://" not in endpoint:
                endpoint = ("https://" if (get("connection.ssl.enabled") or "true") == "true" else "http://") + endpoint
            path_style = (get("path.style.access") or "false").lower() == "true"
            self._client = boto3.client(
                "s3", endpoint_url=endpoint or None,
                aws_access_key_id=get("access.key"), aws_secret_access_key=get("secret.key"),
                aws_session_token=get("session.token"),
                region_name=get("endpoint.region") or "us-east-1",
                config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2},
                              s3={"addressing_style": "path" if path_style else "auto"}),
            )
        return self._client

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel.strip("/")) if p)

    def check(self) -> None:
        """Fail unless the bucket answers with these credentials."""
        try:
            self.client().head_bucket(Bucket=self.bucket)
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds
            raise _io_error(exc, f"Cannot access s3a://{self.bucket}") from None

    def stat(self, rel: str) -> ObjectStat | None:
        key = self._key(rel)
        name = rel.strip("/").rsplit("/", 1)[-1]
        c = self.client()
        try:
            if key:
                try:
                    head = c.head_object(Bucket=self.bucket, Key=key)
                    return ObjectStat(name, False, head["ContentLength"],
                                      int(head["LastModified"].timestamp() * 1000))
                except Exception as exc:  # noqa: BLE001
                    if getattr(exc, "response", {}).get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                        raise
            out = c.list_objects_v2(Bucket=self.bucket, Prefix=key + "/" if key else "", MaxKeys=1)
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _io_error(exc, f"Cannot read s3a://{self.bucket}/{key}") from None
        if out.get("KeyCount", 0) or not key:
            return ObjectStat(name, True, 0, 0)
        return None

    def list(self, rel: str) -> list[ObjectStat]:
        key = self._key(rel)
        prefix = key + "/" if key else ""
        out: dict[str, ObjectStat] = {}
        try:
            pages = self.client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes") or []:
                    name = cp["Prefix"][len(prefix):].rstrip("/")
                    if name:
                        out[name] = ObjectStat(name, True, 0, 0)
                for obj in page.get("Contents") or []:
                    name = obj["Key"][len(prefix):]
                    if name and "/" not in name:  # "dir/" markers are the directory itself
                        out.setdefault(name, ObjectStat(name, False, obj["Size"],
                                                        int(obj["LastModified"].timestamp() * 1000)))
        except Exception as exc:  # noqa: BLE001
            raise _io_error(exc, f"Cannot list s3a://{self.bucket}/{key}") from None
        return [out[n] for n in sorted(out)]

    def read(self, rel: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            resp = self.client().get_object(Bucket=self.bucket, Key=self._key(rel),
                                            Range=f"bytes={offset}-{offset + length - 1}")
            return resp["Body"].read()
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return b""  # reading at or past the end
            raise _io_error(exc, f"Cannot read s3a://{self.bucket}/{self._key(rel)}") from None

    def upload(self, rel: str, local: Path) -> None:
        try:
            self.client().upload_file(str(local), self.bucket, self._key(rel))
        except Exception as exc:  # noqa: BLE001
            raise _io_error(exc, f"Cannot write s3a://{self.bucket}/{self._key(rel)}") from None

    def mkdirs(self, rel: str) -> None:
        key = self._key(rel)
        if key:
            try:  # an empty "dir/" object, the marker S3A itself writes
                self.client().put_object(Bucket=self.bucket, Key=key + "/", Body=b"")
            except Exception as exc:  # noqa: BLE001
                raise _io_error(exc, f"Cannot write s3a://{self.bucket}/{key}/") from None

    def delete(self, rel: str, recursive: bool) -> bool:
        st = self.stat(rel)
        if st is None:
            return False
        key = self._key(rel)
        c = self.client()
        try:
            if not st.is_dir:
                c.delete_object(Bucket=self.bucket, Key=key)
                return True
            prefix = key + "/" if key else ""
            keys = [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
                    for o in page.get("Contents") or []]
            if any(k != prefix for k in keys) and not recursive:
                raise BrickyardError("IO_ERROR", f"Cannot delete {rel or '/'}: it is a non-empty directory; "
                                     "use recursive=true.")
            for i in range(0, len(keys), 1000):
                c.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _io_error(exc, f"Cannot delete s3a://{self.bucket}/{key}") from None
        return True


def store_for(source: str, conf: Mapping[str, str]) -> ObjectStore | None:
    """The object store of a mount source the workspace can reach itself, else None."""
    if source.startswith(("s3a://", "s3://")):
        rest = source.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        return S3Store(bucket, prefix, conf)
    return None
