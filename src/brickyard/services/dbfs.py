"""DBFS and Files API rules: size limits, per-user streaming handles, signed URLs."""
from __future__ import annotations

import base64
import binascii
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from brickyard.errors import BrickyardError, invalid
from brickyard.services.users import Principal
from brickyard.storage.dbfs import AtomicFile, DbfsStorage, FileStat, files_api_to_dbfs, normalize
from brickyard.storage.objects import ObjectStore

MAX_BLOCK_BYTES = 1 << 20
MAX_READ_BYTES = 1 << 20
DEFAULT_READ_BYTES = 1 << 19
MAX_URL_SECONDS = 3600
DEFAULT_URL_SECONDS = 900
FILES_PAGE_MAX = 1000
# Each open handle holds a file descriptor and a temp file until close or expiry.
MAX_HANDLES_PER_USER = 64
# Signed Files API URLs are served here (GET/HEAD for downloads, PUT for uploads), no token.
SIGNED_ROUTE = "/signed/files"


class SignedUrlRejected(BrickyardError):
    """A signed URL that expired or was altered; answered like a cloud store would (403)."""

    def __init__(self, message: str, expired: bool):
        super().__init__("PERMISSION_DENIED", message)
        self.expired = expired


@dataclass
class _Handle:
    owner_id: int
    writer: AtomicFile
    last_used: float
    lock: threading.Lock


# Pieces in which a file on an object-store mount is streamed out by the Files API.
STREAM_CHUNK = 1 << 20


@dataclass(frozen=True)
class ObjectFile:
    """A file on an object-store mount, as the Files API serves it: its status and ranged streams of it."""
    stat: FileStat
    store: ObjectStore
    rel: str

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes start..end-1, read from the store as they are sent (one ranged request)."""
        return self.store.stream(self.rel, start, end - start, STREAM_CHUNK)


def files_not_found(path: str, kind: str = "file") -> BrickyardError:
    return BrickyardError("NOT_FOUND", f"The {kind} being accessed is not found: {path}.")


class DbfsService:
    """DBFS API 2.0 and Files API operations over one DbfsStorage."""

    def __init__(self, storage: DbfsStorage, keyring, idle_seconds: int, clock=time.monotonic):  # noqa: ANN001
        self.storage = storage
        self.keyring = keyring
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._handles: dict[int, _Handle] = {}
        self._lock = threading.Lock()

    # -- DBFS API 2.0 -------------------------------------------------------------------
    def get_status(self, path: str) -> FileStat:
        return self.storage.stat(path)

    def list(self, path: str) -> list[FileStat]:
        return self.storage.list(path)

    def mkdirs(self, path: str) -> None:
        self.storage.mkdirs(path)

    def delete(self, path: str, recursive: bool) -> None:
        self.storage.delete(path, recursive)

    def move(self, source: str, destination: str) -> None:
        self.storage.move(source, destination)

    def read(self, path: str, offset: int | None, length: int | None) -> bytes:
        offset = 0 if offset is None else offset
        length = DEFAULT_READ_BYTES if length is None else length
        if offset < 0 or length < 0:
            raise invalid("offset and length must not be negative.")
        if length > MAX_READ_BYTES:
            raise BrickyardError("MAX_READ_SIZE_EXCEEDED",
                                 f"Cannot read more than {MAX_READ_BYTES} bytes at once; got length={length}.")
        return self.storage.read(path, offset, length)

    def local_file(self, path: str) -> Path:
        """The local path of an existing DBFS file (for streaming it out)."""
        info = self.storage.stat(path)
        if info.is_dir:
            raise invalid(f"Cannot read {info.path}: it is a directory.")
        return self.storage.local(info.path)

    def put(self, path: str, data: bytes, overwrite: bool) -> None:
        with self.storage.open_write(path, overwrite) as writer:
            writer.write(data)
            writer.commit()

    def open_writer(self, path: str, overwrite: bool) -> AtomicFile:
        """A writer for a streamed upload; the caller commits it or aborts it."""
        return self.storage.open_write(path, overwrite)

    # -- streaming handles (create / add-block / close) ------------------------------------
    def create(self, me: Principal, path: str, overwrite: bool) -> int:
        self._expire_idle()
        with self._lock:
            if sum(h.owner_id == me.id for h in self._handles.values()) >= MAX_HANDLES_PER_USER:
                raise BrickyardError("INVALID_STATE", f"{me.user_name} has {MAX_HANDLES_PER_USER} open DBFS "
                                     "handles; close some, or wait for idle ones to expire.")
        writer = self.storage.open_write(path, overwrite)
        with self._lock:
            handle = secrets.randbelow(2**53 - 1) + 1
            while handle in self._handles:
                handle = secrets.randbelow(2**53 - 1) + 1
            self._handles[handle] = _Handle(me.id, writer, self.clock(), threading.Lock())
        return handle

    def _own(self, me: Principal, handle: int) -> _Handle:
        self._expire_idle()
        with self._lock:
            h = self._handles.get(handle)
        # Another user's handle looks exactly like a missing one.
        if h is None or h.owner_id != me.id:
            raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"No open file handle {handle}; it may have expired.")
        return h

    def add_block(self, me: Principal, handle: int, data: bytes) -> None:
        if len(data) > MAX_BLOCK_BYTES:
            raise BrickyardError("MAX_BLOCK_SIZE_EXCEEDED",
                                 f"A block may hold at most {MAX_BLOCK_BYTES} bytes; got {len(data)}.")
        h = self._own(me, handle)
        with h.lock:
            if h.writer.done:
                raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"No open file handle {handle}.")
            h.writer.write(data)
            h.last_used = self.clock()

    def close_handle(self, me: Principal, handle: int) -> None:
        h = self._own(me, handle)
        with self._lock:
            self._handles.pop(handle, None)
        with h.lock:
            if h.writer.done:
                raise BrickyardError("RESOURCE_DOES_NOT_EXIST", f"No open file handle {handle}.")
            h.writer.commit()

    def _expire_idle(self) -> None:
        deadline = self.clock() - self.idle_seconds
        with self._lock:
            stale = [k for k, h in self._handles.items() if h.last_used < deadline]
            dropped = [self._handles.pop(k) for k in stale]
        for h in dropped:
            with h.lock:
                h.writer.abort()

    def close(self) -> None:
        with self._lock:
            dropped, self._handles = list(self._handles.values()), {}
        for h in dropped:
            h.writer.abort()

    # -- Files API (paths mapped into DBFS) ------------------------------------------------
    def file_stat(self, files_path: str) -> FileStat:
        try:
            info = self.storage.stat(files_api_to_dbfs(files_path))
        except BrickyardError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise files_not_found(normalize(files_path)) from None
            raise
        if info.is_dir:
            raise files_not_found(normalize(files_path))
        return info

    def local_files_file(self, files_path: str) -> Path:
        """The local path of an existing file named by a Files API path."""
        return self.storage.local(self.file_stat(files_path).path)

    def files_download(self, files_path: str) -> Path | ObjectFile:
        """What a Files API download of an existing file reads: its local path, or the object behind it on an
        object-store mount (served from the store in ranges, never staged whole)."""
        info = self.file_stat(files_path)
        hit = self.storage.mount_of(info.path)
        if hit is not None and hit[0].store is not None:
            return ObjectFile(info, hit[0].store, hit[1])
        return self.storage.local(info.path)

    def directory_stat(self, files_path: str) -> FileStat:
        try:
            info = self.storage.stat(files_api_to_dbfs(files_path))
        except BrickyardError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise files_not_found(normalize(files_path), "directory") from None
            raise
        if not info.is_dir:
            raise files_not_found(normalize(files_path), "directory")
        return info

    def open_files_writer(self, files_path: str, overwrite: bool) -> AtomicFile:
        target = files_api_to_dbfs(files_path)
        if not overwrite and self.storage.exists(target):
            raise BrickyardError("ALREADY_EXISTS", f"The file being created already exists: {normalize(files_path)}.")
        return self.storage.open_write(target, overwrite)

    def list_directory(self, files_path: str, page_size: int | None,
                       page_token: str | None) -> tuple[list[tuple[str, FileStat]], str | None]:
        """One page of (files path, stat) entries ordered by name, and the next page token."""
        canon = normalize(files_path)
        info = self.directory_stat(canon)
        size = FILES_PAGE_MAX if not page_size else page_size
        if size < 1 or size > FILES_PAGE_MAX:
            raise invalid(f"page_size must be between 1 and {FILES_PAGE_MAX}.")
        after = _decode_token(page_token) if page_token else None
        entries = [e for e in self.storage.list(info.path) if after is None or _name(e.path) > after]
        page = entries[:size]
        out = [(f"{canon.rstrip('/')}/{_name(e.path)}", e) for e in page]
        token = _encode_token(_name(page[-1].path)) if len(entries) > size else None
        return out, token

    def create_directory(self, files_path: str) -> None:
        self.storage.mkdirs(files_api_to_dbfs(files_path))

    def delete_file(self, files_path: str) -> None:
        info = self.file_stat(files_path)
        self.storage.delete(info.path, recursive=False)

    def delete_directory(self, files_path: str) -> None:
        info = self.directory_stat(files_path)
        if self.storage.list(info.path):
            raise BrickyardError("DIRECTORY_NOT_EMPTY",
                                 f"The directory {normalize(files_path)} is not empty; delete its contents first.")
        self.storage.delete(info.path, recursive=False)

    # -- signed URLs ------------------------------------------------------------------------
    def _message(self, method: str, canon: str, expires: int) -> str:
        return f"files-url\n{method}\n{canon}\n{expires}"

    def signed_url(self, base_url: str, method: str, files_path: str,
                   expires_at: int | None = None) -> dict:
        """A short-lived URL for `method` (GET or PUT) on a Files API path, served without a token.

        Returns {"url", "headers"} as create-download-url / create-upload-url answer.
        """
        canon = normalize(files_path)
        files_api_to_dbfs(canon)  # refuse paths that could not be served
        now = int(time.time())
        if expires_at is None:
            expires_at = now + DEFAULT_URL_SECONDS
        if expires_at <= now:
            raise invalid("expire_time must be in the future.")
        expires_at = min(expires_at, now + MAX_URL_SECONDS)
        method = method.upper()
        query = urlencode({"expires": expires_at,
                           "signature": self.keyring.sign(self._message(method, canon, expires_at))})
        url = f"{base_url.rstrip('/')}{SIGNED_ROUTE}{quote(canon, safe='/')}?{query}"
        return {"url": url, "headers": []}

    def check_signed(self, method: str, files_path: str, expires: str | None, signature: str | None) -> str:
        """Verify a signed URL; returns the canonical Files API path it grants."""
        canon = normalize(files_path)
        method = "GET" if method.upper() == "HEAD" else method.upper()
        try:
            exp = int(expires or "")
        except ValueError:
            raise SignedUrlRejected("The signed URL is malformed.", expired=False) from None
        message = self._message(method, canon, exp)
        if not signature or not signature.isascii() or not self.keyring.verify(message, signature):
            raise SignedUrlRejected("The request signature does not match.", expired=False)
        if exp < time.time():
            raise SignedUrlRejected("Request has expired", expired=True)
        return canon


def _name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _encode_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        name = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise invalid("Invalid page_token.") from None
    if not name or "/" in name:
        raise invalid("Invalid page_token.")
    return name


def build(ws, services) -> dict:  # noqa: ANN001
    """Build the DBFS service of a workspace."""
    # Temp files idle longer than any live handle may belong to a crashed process.
    stale = max(2 * ws.settings.dbfs_handle_idle_seconds, 3600)
    storage = DbfsStorage(ws.settings.dbfs_root, ws.settings.tmp_dir, stale_after=stale)
    return {"dbfs": DbfsService(storage, ws.keyring, ws.settings.dbfs_handle_idle_seconds)}
