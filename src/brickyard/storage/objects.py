"""Object stores behind DBFS mounts (s3a://, abfs(s)://, wasb(s)://), as the DBFS API sees them:
keys under a prefix as a tree.

S3 is served through boto3 with the mount's own endpoint and keys (the same `fs.s3a.*` settings
Spark uses); Azure through azure-storage-blob's Blob API with the mount's `fs.azure.*` settings
(account key, SAS, or OAuth client credentials), so the workspace lists and reads what the
cluster writes.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
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

    def stream(self, rel: str, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        """Up to length bytes from offset, in pieces of at most about `chunk` bytes (never all in memory).

        Built on read here; the stores override it with one ranged request whose body is read as it comes.
        """
        end = offset + length
        while offset < end:
            block = self.read(rel, offset, min(chunk, end - offset))
            if not block:
                return
            yield block
            offset += len(block)

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

    def stream(self, rel: str, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        if length <= 0:
            return
        key = self._key(rel)
        try:
            body = self.client().get_object(Bucket=self.bucket, Key=key,
                                            Range=f"bytes={offset}-{offset + length - 1}")["Body"]
        except Exception as exc:  # noqa: BLE001
            if getattr(exc, "response", {}).get("Error", {}).get("Code") == "InvalidRange":
                return  # at or past the end
            raise _io_error(exc, f"Cannot read s3a://{self.bucket}/{key}") from None
        try:
            yield from body.iter_chunks(chunk)
        except Exception as exc:  # noqa: BLE001
            raise _io_error(exc, f"Cannot read s3a://{self.bucket}/{key}") from None
        finally:
            body.close()

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


def _az_error(exc: Exception, what: str) -> BrickyardError:
    # azure-core's messages carry the service's error (code, request id), never the signed headers.
    code = getattr(exc, "error_code", None) or getattr(exc, "status_code", None)
    code = getattr(code, "value", code)  # StorageErrorCode.X -> its service name
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return BrickyardError("IO_ERROR", f"{what}: {code or type(exc).__name__}: {first[:300]}")


def _az_status(exc: Exception) -> int | None:
    return getattr(exc, "status_code", None)


# ABFS (and WASB before it) marks a directory on a flat-namespace account with a zero-byte blob at the
# directory's own name (no trailing slash) carrying this metadata.
AZ_FOLDER_META = "hdi_isfolder"


class AzureBlobStore(ObjectStore):
    """abfs(s)://container@account.dfs.../prefix (or wasb(s)://...blob...) through the Blob API.

    Settings are read as ABFS reads them for the mount's account: `<key>.<account host>` first, then
    `<key>` (the mount table has already scoped them to the host ABFS is given). Credentials:
    fs.azure.account.auth.type OAuth (ClientSecretCredential from fs.azure.account.oauth2.client.id /
    .secret / .endpoint), SAS (fs.azure.sas.fixed.token, or WASB's fs.azure.sas.<container>.<host>),
    else the account key (fs.azure.account.key). A custom fs.azure.abfs.endpoint (an emulator) is
    addressed path-style, http(s)://<endpoint>/<account>; otherwise https://<account>.blob.<suffix>.
    """

    def __init__(self, source: str, conf: Mapping[str, str]):
        scheme, rest = source.split("://", 1)
        authority, _, prefix = rest.partition("/")
        container, _, host = authority.rpartition("@")
        self.scheme = scheme.lower()
        self.container = container
        self.host = host.lower()
        self.account, _, suffix = self.host.partition(".")
        service, _, self.suffix = suffix.partition(".")  # dfs|blob . core.windows.net
        if service not in ("dfs", "blob") or not self.suffix:
            self.suffix = "core.windows.net"
        # The hosts the mount's settings may be scoped to (a wasb mount's Blob-host keys moved to the DFS host).
        self.hosts = (f"{self.account}.dfs.{self.suffix}", f"{self.account}.blob.{self.suffix}", self.host)
        self.prefix = prefix.strip("/")
        self.conf = dict(conf)
        self._client = None
        self.uri = f"{self.scheme}://{authority}"

    def setting(self, name: str) -> str | None:
        for host in self.hosts:
            if (value := self.conf.get(f"{name}.{host}")) is not None:
                return value
        return self.conf.get(name)

    def account_url(self) -> str:
        custom = self.setting("fs.azure.abfs.endpoint")
        tls = self.scheme in ("abfss", "wasbs") or (self.conf.get("fs.azure.always.use.https") or "true") != "false"
        if custom:
            base = custom if "://" in custom else ("https://" if tls else "http://") + custom
            return f"{base.rstrip('/')}/{self.account}"  # path-style, as ABFS and Azurite address it
        return f"https://{self.account}.blob.{self.suffix}"

    def credential(self):  # noqa: ANN201
        auth = (self.setting("fs.azure.account.auth.type") or "SharedKey").lower()
        if auth == "oauth":
            from urllib.parse import urlparse

            from azure.identity import ClientSecretCredential

            client_id = self.setting("fs.azure.account.oauth2.client.id")
            secret = self.setting("fs.azure.account.oauth2.client.secret")
            endpoint = self.setting("fs.azure.account.oauth2.client.endpoint") or ""
            url = urlparse(endpoint)
            tenant = url.path.strip("/").split("/", 1)[0]
            if not (client_id and secret and tenant):
                raise BrickyardError("INVALID_STATE", f"The mount of {self.uri} uses OAuth but lacks "
                                     "fs.azure.account.oauth2.client.id, .client.secret or .client.endpoint "
                                     "(https://login.microsoftonline.com/<tenant>/oauth2/token).")
            return ClientSecretCredential(tenant, client_id, secret, authority=url.netloc or None)
        sas = self.setting("fs.azure.sas.fixed.token") or self.setting(f"fs.azure.sas.{self.container}")
        if auth == "sas" or (sas and not self.setting("fs.azure.account.key")):
            if not sas:
                raise BrickyardError("INVALID_STATE", f"The mount of {self.uri} uses SAS but has no "
                                     "fs.azure.sas.fixed.token; a SAS token provider class cannot be used "
                                     "outside Spark.")
            return sas.lstrip("?")
        key = self.setting("fs.azure.account.key")
        if key:
            from azure.core.credentials import AzureNamedKeyCredential

            return AzureNamedKeyCredential(self.account, key)
        return None  # anonymous (a public container)

    def client(self):  # noqa: ANN201
        if self._client is None:
            from azure.storage.blob import ContainerClient

            self._client = ContainerClient(
                self.account_url(), self.container, credential=self.credential(),
                connection_timeout=5, read_timeout=60, retry_total=2,
                max_single_put_size=2 << 20, max_block_size=4 << 20)
        return self._client

    def _key(self, rel: str) -> str:
        return "/".join(p for p in (self.prefix, rel.strip("/")) if p)

    def _where(self, key: str) -> str:
        return f"{self.uri}/{key}"

    def check(self) -> None:
        """Fail unless the container answers with these credentials."""
        try:
            self.client().get_container_properties()
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001 - azure-core raises several kinds
            raise _az_error(exc, f"Cannot access {self.uri}") from None

    @staticmethod
    def _is_folder(props) -> bool:  # noqa: ANN001
        return (props.metadata or {}).get(AZ_FOLDER_META, "").lower() == "true"

    def stat(self, rel: str) -> ObjectStat | None:
        key = self._key(rel)
        name = rel.strip("/").rsplit("/", 1)[-1]
        if not key:
            return ObjectStat(name, True, 0, 0)
        c = self.client()
        try:
            try:
                props = c.get_blob_client(key).get_blob_properties()
                if self._is_folder(props):
                    return ObjectStat(name, True, 0, int(props.last_modified.timestamp() * 1000))
                return ObjectStat(name, False, props.size, int(props.last_modified.timestamp() * 1000))
            except Exception as exc:  # noqa: BLE001
                if _az_status(exc) != 404:
                    raise
            for _ in c.list_blobs(name_starts_with=key + "/", results_per_page=1):
                return ObjectStat(name, True, 0, 0)
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _az_error(exc, f"Cannot read {self._where(key)}") from None
        return None

    def list(self, rel: str) -> list[ObjectStat]:
        key = self._key(rel)
        prefix = key + "/" if key else ""
        out: dict[str, ObjectStat] = {}
        try:
            for item in self.client().walk_blobs(name_starts_with=prefix or None, include=["metadata"], delimiter="/"):
                name = item.name[len(prefix):].rstrip("/")
                if not name or "/" in name:
                    continue
                if item.name.endswith("/") and not hasattr(item, "size"):  # a BlobPrefix
                    out[name] = ObjectStat(name, True, 0, 0)
                elif self._is_folder(item):
                    out[name] = ObjectStat(name, True, 0, int(item.last_modified.timestamp() * 1000))
                elif not item.name.endswith("/"):  # "dir/" markers (S3-style) are the directory itself
                    out.setdefault(name, ObjectStat(name, False, item.size, int(item.last_modified.timestamp() * 1000)))
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _az_error(exc, f"Cannot list {self._where(key)}") from None
        return [out[n] for n in sorted(out)]

    def read(self, rel: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        key = self._key(rel)
        try:
            return self.client().download_blob(key, offset=offset, length=length).readall()
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _az_status(exc) == 416:
                return b""  # reading at or past the end
            raise _az_error(exc, f"Cannot read {self._where(key)}") from None

    def stream(self, rel: str, offset: int, length: int, chunk: int = 1 << 20) -> Iterator[bytes]:
        if length <= 0:
            return
        key = self._key(rel)
        try:
            downloader = self.client().download_blob(key, offset=offset, length=length, max_concurrency=1)
            for piece in downloader.chunks():
                for i in range(0, len(piece), chunk):
                    yield piece[i:i + chunk]
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _az_status(exc) == 416:
                return  # at or past the end
            raise _az_error(exc, f"Cannot read {self._where(key)}") from None

    def upload(self, rel: str, local: Path) -> None:
        key = self._key(rel)
        try:
            with open(local, "rb") as fh:
                self.client().upload_blob(key, fh, overwrite=True, length=local.stat().st_size)
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _az_error(exc, f"Cannot write {self._where(key)}") from None

    def mkdirs(self, rel: str) -> None:
        key = self._key(rel)
        if not key or (self.stat(rel) or ObjectStat("", False, 0, 0)).is_dir:
            return
        try:  # the folder marker ABFS itself writes on a flat-namespace account
            self.client().upload_blob(key, b"", overwrite=True, metadata={AZ_FOLDER_META: "true"})
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _az_error(exc, f"Cannot write {self._where(key)}") from None

    def delete(self, rel: str, recursive: bool) -> bool:
        st = self.stat(rel)
        if st is None:
            return False
        key = self._key(rel)
        c = self.client()
        try:
            if not st.is_dir:
                c.delete_blob(key)
                return True
            prefix = key + "/" if key else ""
            names = [b.name for b in c.list_blobs(name_starts_with=prefix or None)]
            if any(n != prefix for n in names) and not recursive:
                raise BrickyardError("IO_ERROR", f"Cannot delete {rel or '/'}: it is a non-empty directory; "
                                     "use recursive=true.")
            for n in sorted(names, key=len, reverse=True):  # children before their folder markers
                c.delete_blob(n)
            if key:
                try:
                    c.delete_blob(key)  # the directory's own marker, if it has one
                except Exception as exc:  # noqa: BLE001
                    if _az_status(exc) != 404:
                        raise
        except BrickyardError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _az_error(exc, f"Cannot delete {self._where(key)}") from None
        return True


AZURE_SOURCES = ("abfss://", "abfs://", "wasbs://", "wasb://")


def store_for(source: str, conf: Mapping[str, str]) -> ObjectStore | None:
    """The object store of a mount source the workspace can reach itself, else None."""
    if source.startswith(("s3a://", "s3://")):
        rest = source.split("://", 1)[1]
        bucket, _, prefix = rest.partition("/")
        return S3Store(bucket, prefix, conf)
    if source.lower().startswith(AZURE_SOURCES) and "@" in source.split("://", 1)[1].split("/", 1)[0]:
        return AzureBlobStore(source, conf)
    return None
