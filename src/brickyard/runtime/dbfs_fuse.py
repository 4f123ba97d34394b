"""/dbfs/mnt for local file APIs in notebooks: a FUSE file system over the workspace's DBFS API.

On Databricks /dbfs is a FUSE mount of DBFS, so ``pd.read_csv("/dbfs/mnt/<mount>/x.csv")`` reads an
S3 or ADLS mount. Here a kernel runs in its own mount namespace with the DBFS root bind-mounted on
/dbfs (see ``dbfs_paths.namespace_argv``): that serves ``file:`` mounts (links in the root) and
every other DBFS path, but not object-store mounts (s3a://, abfs(s)://, wasb(s)://), whose data is
not on this host. So the kernel starts this module as a child process (``start_from_kernel``,
once the kernel carries its user's token) that mounts a FUSE file system on /dbfs/mnt, inside the
kernel's namespace only, and serves that subtree:

- through the workspace's DBFS REST API with the kernel's own token (the notebook user's: the
  mount's keys stay in the workspace, its rules apply), for object-store mounts and plain folders
  under dbfs:/mnt. Mounts made after the kernel started are there at once (nothing is listed
  ahead); attributes are cached for ATTR_TTL seconds, and open() always asks afresh (a file
  changed by someone else is read whole: close-to-open consistency, as NFS gives);
- straight to the local folder for ``file:`` mounts (a symbolic link in the DBFS root's mnt
  folder, looked up through a descriptor opened before mounting): every file operation works there
  as before, random writes and mmap included.

Reads go in BLOCK-sized (8 MiB) ranges through the Files API (``GET /api/2.0/fs/files/<path>``
with ``Range: bytes=a-b``: raw bytes the workspace streams from the store), the last CACHE_BLOCKS
blocks kept per open file, the next READAHEAD blocks asked for in parallel while a file is read in
order. A workspace that does not serve ranges of object-store files that way (404, 501, or 400
"no local path") is read through ``dbfs/read`` instead (1 MiB of base64 per request), from then on. A file opened
for writing is written to a local temporary file and uploaded whole (one streamed Files API PUT)
when it is closed (flush) or fsync'ed; until then other readers see the old object. So, like
DBFS FUSE on Databricks, an existing object cannot be changed in place:
opening a non-empty file for writing without truncating it (append, "r+") fails with EOPNOTSUPP
(errno 95, "Operation not supported"), as does truncating one to a size other than 0 or its own
size. Writes into a file being written may come in any order (the temporary file takes them), so
zip archives and the like can be written. Renaming a directory in or out of an object store fails
with EXDEV (shutil.move then copies). API errors map to errno: RESOURCE_DOES_NOT_EXIST -> ENOENT,
PERMISSION_DENIED -> EACCES, RESOURCE_ALREADY_EXISTS -> EEXIST, IO_ERROR -> EIO, ...

Needs root, /dev/fuse and libfuse 3 (Debian's libfuse3-3; mfusepy binds it through ctypes). When
any of that is missing the kernel logs one line and goes on: /dbfs then serves file: mounts and
the rest of DBFS as before, only object-store mounts stay empty folders. The daemon leaves with the
kernel (it watches its parent), lives in its own session (a cancelled command's SIGINT is not
for it) and never logs the token.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import errno
import itertools
import json
import logging
import os
import select
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

log = logging.getLogger("brickyard.dbfs_fuse")

MOUNTPOINT = "/dbfs/mnt"
DBFS_BASE = "/mnt"  # the DBFS path MOUNTPOINT serves
BLOCK = 8 << 20  # the unit of reads (and of the cache); at most CACHE_BLOCKS of them per open file
DBFS_READ_MAX = 1 << 20  # dbfs/read's largest range
CACHE_BLOCKS = 5
READAHEAD = 3  # blocks asked for ahead of a sequential reader (in parallel)
ATTR_TTL = 1.0
READY_TIMEOUT = 10.0  # how long the kernel waits for the mount before going on without it
RESTART_LIMIT = 3  # a daemon that stops more often than this within RESTART_WINDOW seconds is not restarted
RESTART_WINDOW = 60.0
PARENT_POLL = 1.0
DISABLE_ENV = "BRICKYARD_DBFS_FUSE"  # "0" turns it off
RANGES_ENV = "BRICKYARD_DBFS_FUSE_RANGES"  # "0": read through dbfs/read only (as before ranged Files API reads)
LOG_PREFIX = "brickyard dbfs-fuse: "

ERRNO_OF_CODE = {
    "RESOURCE_DOES_NOT_EXIST": errno.ENOENT, "NOT_FOUND": errno.ENOENT,
    "PERMISSION_DENIED": errno.EACCES, "UNAUTHENTICATED": errno.EACCES,
    "RESOURCE_ALREADY_EXISTS": errno.EEXIST, "ALREADY_EXISTS": errno.EEXIST,
    "DIRECTORY_NOT_EMPTY": errno.ENOTEMPTY,
    "INVALID_PARAMETER_VALUE": errno.EINVAL, "MALFORMED_REQUEST": errno.EINVAL,
    "MAX_READ_SIZE_EXCEEDED": errno.EINVAL, "MAX_BLOCK_SIZE_EXCEEDED": errno.EINVAL,
    "REQUEST_ENTITY_TOO_LARGE": errno.EFBIG,
    "TEMPORARILY_UNAVAILABLE": errno.EAGAIN, "REQUEST_LIMIT_EXCEEDED": errno.EAGAIN,
    "IO_ERROR": errno.EIO, "INVALID_STATE": errno.EIO, "INTERNAL_ERROR": errno.EIO,
}
ERRNO_OF_STATUS = {400: errno.EINVAL, 401: errno.EACCES, 403: errno.EACCES, 404: errno.ENOENT,
                   409: errno.EEXIST, 413: errno.EFBIG, 429: errno.EAGAIN}


def fs_error(code: int, detail: str = "") -> OSError:
    return OSError(code, os.strerror(code) + (f": {detail}" if detail else ""))


class ApiError(OSError):
    """A DBFS API error as an OSError whose errno tells what it was."""

    def __init__(self, code: int, error_code: str, message: str):
        super().__init__(code, f"{error_code}: {message}")
        self.error_code = error_code
        self.message = message


# ---- the workspace's DBFS API ------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    is_dir: bool
    size: int
    mtime_ms: int


def _stat_of(info: dict) -> Stat:
    return Stat(bool(info.get("is_dir")), int(info.get("file_size") or 0), int(info.get("modification_time") or 0))


class DbfsClient:
    """The few DBFS API calls the file system makes, with one bearer token (never logged)."""

    def __init__(self, host: str, token: str, timeout: float = 120.0):
        import urllib3

        self.host = host.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "brickyard-dbfs-fuse"}
        self._http = urllib3.PoolManager(
            num_pools=2, maxsize=16, block=False,
            retries=urllib3.Retry(total=2, connect=2, read=0, status=0, redirect=0, backoff_factor=0.2),
            timeout=urllib3.Timeout(connect=10.0, read=timeout))
        # Ranged reads through the Files API until the workspace shows it has none for object stores.
        self.ranged = os.environ.get(RANGES_ENV, "").strip() != "0"
        self._pieces = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="dbfs-read-piece")

    def _request(self, method: str, endpoint: str, params: dict | None = None, body: dict | None = None,
                 raw=None, headers: dict | None = None):  # noqa: ANN001, ANN202
        url = self.host + endpoint
        if params:
            url += "?" + urlencode(params)
        hdrs = dict(self._headers, **(headers or {}))
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        try:
            return self._http.request(method, url, body=data, headers=hdrs, preload_content=True)
        except Exception as exc:  # noqa: BLE001 - urllib3 raises many kinds; never quote the request
            raise ApiError(errno.EIO, "IO_ERROR", f"the workspace did not answer: {type(exc).__name__}") from None

    @staticmethod
    def _error(resp) -> ApiError:  # noqa: ANN001
        text = resp.data
        try:
            err = json.loads(text)
            code, message = str(err.get("error_code") or ""), str(err.get("message") or "")
        except (ValueError, AttributeError):
            code, message = "", text[:200].decode("utf-8", "replace")
        number = ERRNO_OF_CODE.get(code) or ERRNO_OF_STATUS.get(resp.status, errno.EIO)
        if number == errno.EINVAL and "mount point" in message:
            number = errno.EBUSY  # deleting or moving a mount point
        return ApiError(number, code or f"HTTP {resp.status}", message)

    def _call(self, method: str, endpoint: str, params: dict | None = None, body: dict | None = None,
              raw=None, headers: dict | None = None) -> dict:  # noqa: ANN001
        resp = self._request(method, endpoint, params, body, raw, headers)
        if resp.status >= 400:
            raise self._error(resp)
        text = resp.data
        if not text:
            return {}
        try:
            return json.loads(text)
        except ValueError:
            return {}

    def status(self, path: str) -> Stat | None:
        try:
            return _stat_of(self._call("GET", "/api/2.0/dbfs/get-status", {"path": path}))
        except ApiError as exc:
            if exc.errno == errno.ENOENT:
                return None
            raise

    def list(self, path: str) -> list[tuple[str, Stat]]:
        files = self._call("GET", "/api/2.0/dbfs/list", {"path": path}).get("files") or []
        return [(f["path"].rstrip("/").rsplit("/", 1)[-1], _stat_of(f)) for f in files]

    def read(self, path: str, offset: int, length: int) -> bytes:
        """Up to length bytes from offset: one ranged Files API request, else dbfs/read in 1 MiB pieces."""
        if length <= 0:
            return b""
        if self.ranged:
            resp = self._request("GET", "/api/2.0/fs/files" + quote(path, safe="/"),
                                 headers={"Range": f"bytes={offset}-{offset + length - 1}"})
            if resp.status == 206:
                return resp.data
            if resp.status == 200:  # the whole file (a server may ignore Range)
                return resp.data[offset:offset + length]
            if resp.status == 416:
                return b""  # at or past the end (the object shrank since it was opened)
            if resp.status not in (400, 404, 501):
                raise self._error(resp)
            # Perhaps a workspace that serves only local files through the Files API: dbfs/read decides.
            data = self._read_dbfs(path, offset, length)
            self.ranged = False
            log.info("ranged Files API reads are not served here (HTTP %s); reading through dbfs/read", resp.status)
            return data
        return self._read_dbfs(path, offset, length)

    def _read_dbfs_piece(self, path: str, offset: int, length: int) -> bytes:
        import base64

        got = self._call("GET", "/api/2.0/dbfs/read", {"path": path, "offset": offset, "length": length})
        return base64.b64decode(got.get("data") or "")

    def _read_dbfs(self, path: str, offset: int, length: int) -> bytes:
        """dbfs/read's 1 MiB pieces of the range, asked for in parallel; short at the end of the file."""
        starts = range(offset, offset + length, DBFS_READ_MAX)
        if len(starts) == 1:
            return self._read_dbfs_piece(path, offset, length)
        pieces = list(self._pieces.map(
            lambda at: self._read_dbfs_piece(path, at, min(DBFS_READ_MAX, offset + length - at)), starts))
        out = []
        for piece in pieces:
            out.append(piece)
            if len(piece) < DBFS_READ_MAX:
                break  # the end of the file
        return b"".join(out)

    def upload(self, path: str, fileobj, size: int) -> None:  # noqa: ANN001
        """Replace the file at path with size bytes from fileobj, streamed in one request."""
        fileobj.seek(0)
        self._call("PUT", "/api/2.0/fs/files" + quote(path, safe="/"), {"overwrite": "true"}, raw=fileobj,
                   headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})

    def mkdirs(self, path: str) -> None:
        self._call("POST", "/api/2.0/dbfs/mkdirs", body={"path": path})

    def delete(self, path: str, recursive: bool = False) -> None:
        self._call("POST", "/api/2.0/dbfs/delete", body={"path": path, "recursive": recursive})

    def move(self, source: str, destination: str) -> None:
        self._call("POST", "/api/2.0/dbfs/move", body={"source_path": source, "destination_path": destination})


# ---- open files ------------------------------------------------------------------------------
@dataclass(eq=False)
class LocalFile:
    """A file of a file: mount, opened on the host."""
    fd: int


@dataclass(eq=False)
class RemoteReader:
    """A DBFS file opened for reading: ranged reads (futures of blocks), the last CACHE_BLOCKS blocks kept."""
    path: str  # DBFS path
    stat: Stat
    blocks: collections.OrderedDict = field(default_factory=collections.OrderedDict)
    last: int = -1  # the block read last: the next one means a sequential read, worth reading ahead
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(eq=False)
class RemoteWriter:
    """A DBFS file being (re)written: a local temporary file, uploaded on flush, fsync and release."""
    path: str  # DBFS path
    tmp: object  # a binary temporary file
    dirty: bool = True
    wrote: bool = False  # written to (not only created or truncated)
    unlinked: bool = False
    gen: int = 0  # its place among the writers of its path
    lock: threading.Lock = field(default_factory=threading.Lock)

    def size(self) -> int:
        return os.fstat(self.tmp.fileno()).st_size


@dataclass(eq=False)
class PendingReader:
    """A read-only open of a file this kernel is writing: reads its temporary file."""
    path: str
    writer: RemoteWriter


def _attrs(st: Stat) -> dict:
    ns = st.mtime_ms * 1_000_000
    mode = (stat.S_IFDIR | 0o755) if st.is_dir else (stat.S_IFREG | 0o644)
    size = 0 if st.is_dir else st.size
    return {"st_mode": mode, "st_nlink": 2 if st.is_dir else 1, "st_size": size, "st_uid": os.getuid(),
            "st_gid": os.getgid(), "st_mtime": ns, "st_ctime": ns, "st_atime": ns,
            "st_blksize": BLOCK, "st_blocks": (size + 511) // 512}


def _local_attrs(st: os.stat_result) -> dict:
    keys = ("st_mode", "st_nlink", "st_size", "st_uid", "st_gid", "st_blksize", "st_blocks", "st_ino")
    out = {k: getattr(st, k) for k in keys}
    out.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
    return out


class DbfsFuse:
    """The operations mfusepy calls (paths are relative to /dbfs/mnt, "/" being dbfs:/mnt itself).

    Not a subclass of mfusepy.Operations, so that the kernel can import this module without libfuse;
    mfusepy only looks the operations up by name.
    """

    use_ns = True  # times in nanoseconds

    def __init__(self, client: DbfsClient, under_fd: int):
        self.client = client
        self.under = under_fd  # the DBFS root's mnt folder, beneath the mount
        self._lock = threading.Lock()
        self._attrs: dict[str, tuple[float, Stat]] = {}
        self._handles: dict[int, LocalFile | RemoteReader | RemoteWriter] = {}
        self._pending: dict[str, RemoteWriter] = {}  # DBFS path -> its newest open writer
        self._writers: dict[str, list[int]] = {}  # DBFS path -> [newest writer's gen, open writers]
        self._gens = itertools.count(1)
        self._ids = itertools.count(1)
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, READAHEAD), thread_name_prefix="dbfs-read")

    # -- paths ---------------------------------------------------------------------------------
    @staticmethod
    def dbfs(path: str) -> str:
        return DBFS_BASE + ("" if path == "/" else path)

    def local(self, path: str) -> str | None:
        """The host path when `path` is inside a file: mount (a symbolic link in the root's mnt folder)."""
        parts = [p for p in path.split("/") if p]
        rel = ""
        for i, part in enumerate(parts):
            rel = f"{rel}/{part}" if rel else part
            try:
                st = os.lstat(rel, dir_fd=self.under)
            except OSError:
                return None
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(rel, dir_fd=self.under)
                return os.path.join(target, *parts[i + 1:]) if os.path.isabs(target) else None
            if not stat.S_ISDIR(st.st_mode):
                return None
        return None

    # -- the attribute cache ---------------------------------------------------------------------
    def _remember(self, dbfs_path: str, st: Stat) -> None:
        with self._lock:
            self._attrs[dbfs_path] = (time.monotonic() + ATTR_TTL, st)

    def _forget(self, dbfs_path: str, tree: bool = False) -> None:
        parent = dbfs_path.rsplit("/", 1)[0]
        with self._lock:
            self._attrs.pop(dbfs_path, None)
            self._attrs.pop(parent, None)
            if tree:
                for key in [k for k in self._attrs if k.startswith(dbfs_path + "/")]:
                    del self._attrs[key]

    def _stat(self, dbfs_path: str, fresh: bool = False) -> Stat | None:
        if not fresh:
            with self._lock:
                hit = self._attrs.get(dbfs_path)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        st = self.client.status(dbfs_path)
        if st is None:
            with self._lock:
                self._attrs.pop(dbfs_path, None)
        else:
            self._remember(dbfs_path, st)
        return st

    def _require(self, dbfs_path: str, fresh: bool = False) -> Stat:
        st = self._stat(dbfs_path, fresh)
        if st is None:
            raise fs_error(errno.ENOENT)
        return st

    def _pending_writer(self, dbfs_path: str) -> RemoteWriter | None:
        with self._lock:
            return self._pending.get(dbfs_path)

    def _handle(self, fh: int | None):  # noqa: ANN202
        with self._lock:
            h = self._handles.get(fh) if fh else None
        if fh and h is None:
            raise fs_error(errno.EBADF)
        return h

    def _new_handle(self, h) -> int:  # noqa: ANN001
        with self._lock:
            fh = next(self._ids)
            self._handles[fh] = h
            if isinstance(h, RemoteWriter):
                self._pending[h.path] = h
                h.gen = next(self._gens)
                self._writers.setdefault(h.path, [0, 0])
                self._writers[h.path][0] = h.gen
                self._writers[h.path][1] += 1
        return fh

    # -- metadata ---------------------------------------------------------------------------------
    def getattr(self, path: str, fh: int | None = None) -> dict:
        h = self._handle(fh) if fh else None
        if isinstance(h, LocalFile):
            return _local_attrs(os.fstat(h.fd))
        if isinstance(h, RemoteWriter):
            return _attrs(Stat(False, h.size(), int(time.time() * 1000)))
        if isinstance(h, RemoteReader):
            return _attrs(h.stat)
        if path == "/":
            return _local_attrs(os.fstat(self.under))
        local = self.local(path)
        if local is not None:
            return _local_attrs(os.stat(local))
        target = self.dbfs(path)
        writer = self._pending_writer(target)
        if writer is not None:
            return _attrs(Stat(False, writer.size(), int(time.time() * 1000)))
        return _attrs(self._require(target))

    def readdir(self, path: str, fh: int) -> list:
        local = self.local(path) if path != "/" else None
        if local is not None:
            return [".", "..", *os.listdir(local)]
        target = self.dbfs(path)
        try:
            entries = self.client.list(target)
        except ApiError as exc:
            if exc.errno == errno.ENOENT and path == "/":
                entries = []  # no dbfs:/mnt yet
            else:
                raise
        if len(entries) == 1 and not entries[0][1].is_dir:  # the list of a file is the file itself
            st = self._stat(target)
            if st is not None and not st.is_dir:
                raise fs_error(errno.ENOTDIR)
        names = []
        for name, st in entries:
            self._remember(f"{target}/{name}", st)
            names.append(name)
        with self._lock:
            pending = [p.rsplit("/", 1)[1] for p in self._pending if p.rsplit("/", 1)[0] == target]
        names += [n for n in pending if n not in names]
        return [".", "..", *names]

    def statfs(self, path: str) -> dict:
        big = 1 << 40
        return {"f_bsize": BLOCK, "f_frsize": 4096, "f_blocks": big, "f_bfree": big, "f_bavail": big,
                "f_files": big, "f_ffree": big, "f_favail": big, "f_namemax": 255}

    def chmod(self, path: str, mode: int) -> int:
        local = self.local(path)
        if local is not None:
            os.chmod(local, mode)
        return 0  # objects have no modes: accepted, as shutil.copy2 expects

    def chown(self, path: str, uid: int, gid: int) -> int:
        local = self.local(path)
        if local is not None:
            os.chown(local, uid, gid)
        return 0

    def utimens(self, path: str, times=None) -> int:  # noqa: ANN001
        local = self.local(path)
        if local is not None:
            os.utime(local, ns=times) if times else os.utime(local)
        return 0

    # -- directories ------------------------------------------------------------------------------
    def mkdir(self, path: str, mode: int) -> int:
        local = self.local(path)
        if local is not None:
            os.mkdir(local, mode)
            return 0
        target = self.dbfs(path)
        if self._stat(target, fresh=True) is not None:
            raise fs_error(errno.EEXIST)
        self._check_parent(target)
        self.client.mkdirs(target)
        self._forget(target)
        return 0

    def _check_parent(self, target: str) -> None:
        """The folder that is to hold target exists (DBFS itself would make it, as object stores do)."""
        parent = target.rsplit("/", 1)[0]
        if parent == DBFS_BASE:
            return
        st = self._stat(parent)
        if st is None:
            raise fs_error(errno.ENOTDIR if self._pending_writer(parent) else errno.ENOENT)
        if not st.is_dir:
            raise fs_error(errno.ENOTDIR)

    def rmdir(self, path: str) -> int:
        local = self.local(path)
        if local is not None:
            os.rmdir(local)
            return 0
        target = self.dbfs(path)
        st = self._require(target, fresh=True)
        if not st.is_dir:
            raise fs_error(errno.ENOTDIR)
        if self.client.list(target):
            raise fs_error(errno.ENOTEMPTY)
        self.client.delete(target, recursive=False)
        self._forget(target, tree=True)
        return 0

    # -- files ---------------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        local = self.local(path)
        if local is not None:
            return self._new_handle(LocalFile(os.open(local, flags & ~os.O_CREAT)))
        target = self.dbfs(path)
        mode = flags & os.O_ACCMODE
        writer = self._pending_writer(target)
        if mode == os.O_RDONLY:
            if writer is not None:  # being written by this kernel: what is written so far
                return self._new_handle(PendingReader(target, writer))
            st = self._require(target, fresh=True)
            if st.is_dir:
                raise fs_error(errno.EISDIR)
            return self._new_handle(RemoteReader(target, st))
        st = self._stat(target, fresh=True)
        if st is not None and st.is_dir:
            raise fs_error(errno.EISDIR)
        truncate = bool(flags & os.O_TRUNC)
        if st is not None and st.size > 0 and not truncate:
            raise fs_error(errno.EOPNOTSUPP, "files on object-store mounts are replaced whole: open them with "
                                             "truncation ('w'), not for appending or updating in place")
        return self._new_handle(RemoteWriter(target, self._tempfile(), dirty=truncate or st is None))

    def create(self, path: str, mode: int, flags: int = 0) -> int:
        local = self.local(path)
        if local is not None:
            return self._new_handle(LocalFile(os.open(local, flags | os.O_CREAT, mode & 0o7777)))
        target = self.dbfs(path)
        self._check_parent(target)
        fh = self._new_handle(RemoteWriter(target, self._tempfile(), dirty=True))
        self._forget(target)
        return fh

    @staticmethod
    def _tempfile():  # noqa: ANN205
        return tempfile.TemporaryFile(prefix="brickyard-dbfs-fuse-")

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        h = self._handle(fh)
        if isinstance(h, LocalFile):
            return os.pread(h.fd, size, offset)
        if isinstance(h, (RemoteWriter, PendingReader)):
            writer = h if isinstance(h, RemoteWriter) else h.writer
            with writer.lock:
                return os.pread(writer.tmp.fileno(), size, offset)
        if not isinstance(h, RemoteReader):
            raise fs_error(errno.EBADF)
        end = min(offset + size, h.stat.size)
        out = []
        pos = offset
        while pos < end:
            index = pos // BLOCK
            block = self._block(h, index)
            start = pos - index * BLOCK
            piece = block[start:start + (end - pos)]
            if not piece:
                break  # the object is shorter than it was when opened
            out.append(piece)
            pos += len(piece)
        return b"".join(out)

    def _block(self, h: RemoteReader, index: int) -> bytes:
        """Block `index` of the file; a sequential reader gets the next READAHEAD blocks asked for meanwhile."""
        with h.lock:
            wanted = [index]
            if index in (h.last, h.last + 1):
                wanted += [i for i in range(index + 1, index + 1 + READAHEAD) if i * BLOCK < h.stat.size]
            h.last = index
            for i in wanted:
                if i not in h.blocks:
                    h.blocks[i] = self._pool.submit(self.client.read, h.path, i * BLOCK, BLOCK)
            future = h.blocks[index]
            h.blocks.move_to_end(index)
            while len(h.blocks) > CACHE_BLOCKS:
                h.blocks.popitem(last=False)[1].cancel()
        try:
            return future.result()
        except BaseException:
            with h.lock:
                if h.blocks.get(index) is future:
                    del h.blocks[index]  # asked again next time
            raise

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        h = self._handle(fh)
        if isinstance(h, LocalFile):
            return os.pwrite(h.fd, data, offset)
        if not isinstance(h, RemoteWriter):
            raise fs_error(errno.EBADF)
        with h.lock:
            written = os.pwrite(h.tmp.fileno(), data, offset)
            h.dirty = h.wrote = True
        return written

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        h = self._handle(fh) if fh else None
        if isinstance(h, LocalFile):
            os.ftruncate(h.fd, length)
            return 0
        if h is None:
            local = self.local(path)
            if local is not None:
                os.truncate(local, length)
                return 0
            h = self._pending_writer(self.dbfs(path))
        if isinstance(h, RemoteWriter):
            with h.lock:
                os.ftruncate(h.tmp.fileno(), length)
                h.dirty = True
                h.wrote = h.wrote or length > 0
            return 0
        if h is not None:
            raise fs_error(errno.EBADF)
        target = self.dbfs(path)
        st = self._require(target, fresh=True)
        if st.is_dir:
            raise fs_error(errno.EISDIR)
        if length == st.size:
            return 0
        if length != 0:
            raise fs_error(errno.EOPNOTSUPP, "files on object-store mounts can only be truncated to 0 bytes")
        with self._tempfile() as empty:
            self.client.upload(target, empty, 0)
        self._forget(target)
        return 0

    def _upload(self, h: RemoteWriter) -> None:
        with self._lock:
            superseded = h.gen < self._writers.get(h.path, [0])[0]
        with h.lock:
            if not h.dirty or h.unlinked:
                return
            if superseded and not h.wrote:
                # Opened (created, truncated) and left empty while a newer open of the path wrote it: keep
                # that. (pandas creates a file, then pyarrow opens it again and writes the Parquet data.)
                h.dirty = False
                return
            h.tmp.flush()
            self.client.upload(h.path, h.tmp, h.size())
            h.dirty = False
        self._forget(h.path)

    def flush(self, path: str, fh: int) -> int:
        h = self._handle(fh)
        if isinstance(h, RemoteWriter):
            self._upload(h)
        return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        h = self._handle(fh)
        if isinstance(h, LocalFile):
            os.fsync(h.fd)
        elif isinstance(h, RemoteWriter):
            self._upload(h)
        return 0

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            h = self._handles.pop(fh, None)
            if isinstance(h, RemoteWriter) and self._pending.get(h.path) is h:
                del self._pending[h.path]
        if isinstance(h, LocalFile):
            os.close(h.fd)
        elif isinstance(h, RemoteReader):
            with h.lock:
                for future in h.blocks.values():
                    future.cancel()
                h.blocks.clear()
        elif isinstance(h, RemoteWriter):
            try:
                self._upload(h)  # normally done by flush already
            except OSError as exc:
                log.warning("could not upload %s when it was closed: %s", h.path, exc)
            finally:
                h.tmp.close()
                with self._lock:
                    writers = self._writers.get(h.path)
                    if writers is not None:
                        writers[1] -= 1
                        if writers[1] <= 0:
                            del self._writers[h.path]
        return 0

    def unlink(self, path: str) -> int:
        local = self.local(path)
        if local is not None:
            os.unlink(local)
            return 0
        target = self.dbfs(path)
        writer = self._pending_writer(target)
        st = self._stat(target, fresh=True)
        if st is None and writer is None:
            raise fs_error(errno.ENOENT)
        if st is not None and st.is_dir:
            raise fs_error(errno.EISDIR)
        if writer is not None:
            with writer.lock:
                writer.unlinked = True  # what is still written to it goes nowhere, as on a POSIX file system
            with self._lock:
                if self._pending.get(target) is writer:
                    del self._pending[target]
        if st is not None:
            self.client.delete(target, recursive=False)
        self._forget(target)
        return 0

    def rename(self, old: str, new: str) -> int:
        lo, ln = self.local(old), self.local(new)
        if lo is not None and ln is not None:
            os.rename(lo, ln)
            return 0
        if (lo is None) != (ln is None):
            raise fs_error(errno.EXDEV)  # between a file: mount and DBFS: mv and shutil.move copy instead
        src, dst = self.dbfs(old), self.dbfs(new)
        writer = self._pending_writer(src)
        if writer is not None:
            self._upload(writer)
        st = self._require(src, fresh=True)
        dst_st = self._stat(dst, fresh=True)
        if dst_st is not None:
            if dst_st.is_dir and not st.is_dir:
                raise fs_error(errno.EISDIR)
            if st.is_dir and not dst_st.is_dir:
                raise fs_error(errno.ENOTDIR)
            if dst_st.is_dir and self.client.list(dst):
                raise fs_error(errno.ENOTEMPTY)
            self.client.delete(dst, recursive=False)  # rename replaces its target
        try:
            self.client.move(src, dst)
        except ApiError as exc:
            if st.is_dir and exc.errno == errno.EINVAL:
                raise fs_error(errno.EXDEV) from None  # a directory of an object store: copy it instead
            raise
        self._forget(src, tree=True)
        self._forget(dst, tree=True)
        return 0



# ---- the daemon ----------------------------------------------------------------------------------
def _unmount_lazily(mountpoint: str) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(mountpoint.encode(), 2)  # MNT_DETACH


def _watch_parent(parent: int, mountpoint: str) -> None:
    """Leave when the kernel does (its child, this process is re-parented then)."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL)
    log.info("the kernel (pid %s) is gone; unmounting %s", parent, mountpoint)
    try:
        _unmount_lazily(mountpoint)
    finally:
        os._exit(0)


def serve(mountpoint: str, host: str, token: str, parent: int | None, ready_fd: int | None) -> int:
    """Mount and serve until unmounted or the parent exits; reports 'ok' or 'error: ...' on ready_fd."""

    def report(line: str) -> None:
        nonlocal ready_fd
        if ready_fd is not None:
            try:
                os.write(ready_fd, (line + "\n").encode())
                os.close(ready_fd)
            except OSError:
                pass
            ready_fd = None

    try:
        if os.path.ismount(mountpoint):
            report(f"error: {mountpoint} is mounted already")
            return 1
        under = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
        import mfusepy
    except Exception as exc:  # noqa: BLE001 - OSError('Unable to find libfuse'), a missing folder, ...
        report(f"error: {type(exc).__name__}: {exc}")
        return 1
    ops = DbfsFuse(DbfsClient(host, token), under)
    ops.init = lambda _path: report("ok")  # called once the kernel has the mount
    if parent is not None:
        threading.Thread(target=_watch_parent, args=(parent, mountpoint), name="watch-parent", daemon=True).start()
    options = {"attr_timeout": 0, "entry_timeout": 1, "negative_timeout": 0}
    if mfusepy.fuse_version_major == 3:
        # libfuse 3.14 otherwise says "Ignoring invalid max threads value 4294967295" (its default, unset).
        options["max_idle_threads"] = 10
    try:
        mfusepy.FUSE(ops, mountpoint, foreground=True, fsname="dbfs", subtype="brickyard", **options)
    except Exception as exc:  # noqa: BLE001 - libfuse printed why (no /dev/fuse, not permitted, ...)
        report(f"error: mounting failed ({exc}); see the lines above")
        return 1
    report("error: the file system stopped before it was ready")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m brickyard.runtime.dbfs_fuse", description=__doc__.split("\n")[0])
    parser.add_argument("--mountpoint", default=MOUNTPOINT)
    parser.add_argument("--parent", type=int, help="exit when this process (the kernel) exits")
    parser.add_argument("--ready-fd", type=int, help="write 'ok' or 'error: ...' here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format=LOG_PREFIX + "%(message)s")
    log.setLevel(logging.INFO)
    host = os.environ.get("BRICKYARD_HOST") or os.environ.get("DATABRICKS_HOST") or ""
    token = os.environ.pop("BRICKYARD_TOKEN", "") or os.environ.get("DATABRICKS_TOKEN", "")
    os.environ.pop("DATABRICKS_TOKEN", None)
    if not host or not token:
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"error: no workspace URL or token in the environment\n")
        return 1
    return serve(args.mountpoint, host, token, args.parent, args.ready_fd)


# ---- started by the kernel ----------------------------------------------------------------------
_daemon: subprocess.Popen | None = None


def _kernel_log_fd() -> int:
    """The kernel's own log (ipykernel sends fd 2 to the notebook; it keeps a copy of the original)."""
    copy = getattr(sys.stderr, "_original_stdstream_copy", None)
    return copy if isinstance(copy, int) else 2


def _kernel_log(message: str) -> None:
    try:
        os.write(_kernel_log_fd(), (LOG_PREFIX + message + "\n").encode())
    except OSError:
        pass


def unusable_reason(dbfs_root: str) -> str | None:
    """Why /dbfs/mnt cannot be served here, or None."""
    from brickyard.runtime import dbfs_paths

    if os.environ.get(DISABLE_ENV, "").strip() == "0":
        return f"turned off ({DISABLE_ENV}=0)"
    if dbfs_paths.patched() or not dbfs_paths.mounted(dbfs_root):
        return "/dbfs is not this kernel's own mount of the DBFS root (the workspace does not run as root)"
    if os.geteuid() != 0:
        return "the kernel does not run as root"
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not (os.environ.get("BRICKYARD_HOST") and os.environ.get("BRICKYARD_TOKEN")):
        return "the kernel has no workspace URL or token"
    if os.path.ismount(MOUNTPOINT):
        return f"{MOUNTPOINT} is mounted already"
    return None


def start_from_kernel(dbfs_root: str, timeout: float = READY_TIMEOUT) -> bool:
    """Mount /dbfs/mnt for this kernel (a child process); never raises. True once it is mounted.

    A daemon that stops while the kernel lives (killed, crashed) is started again by a thread of the
    kernel (``_supervise``), up to RESTART_LIMIT times within RESTART_WINDOW seconds: the notebook sees
    /dbfs/mnt come back instead of "Transport endpoint is not connected" for the rest of its life."""
    try:
        reason = unusable_reason(dbfs_root)
        if reason is not None:
            _kernel_log(f"object-store mounts are not served under {MOUNTPOINT} (file: mounts are): {reason}")
            return False
        os.makedirs(MOUNTPOINT, exist_ok=True)
        answer = _launch(timeout)
        if answer in ("ok", None):  # mounted, or still mounting: either way, watched from now on
            threading.Thread(target=_supervise, args=(timeout,), name="dbfs-fuse-supervisor", daemon=True).start()
        return answer == "ok"
    except Exception as exc:  # noqa: BLE001 - never break the kernel's start
        _kernel_log(f"object-store mounts are not served under {MOUNTPOINT}: {type(exc).__name__}: {exc}")
        return False


def _launch(timeout: float) -> str | None:
    """Start the daemon (as _daemon); its answer: "ok", None (not within timeout: read later), or an error
    (logged)."""
    global _daemon
    read_end, write_end = os.pipe()
    log_fd = _kernel_log_fd()
    try:
        _daemon = subprocess.Popen(
            [sys.executable, "-m", "brickyard.runtime.dbfs_fuse", "--mountpoint", MOUNTPOINT,
             "--parent", str(os.getpid()), "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL, stdout=log_fd, stderr=log_fd, pass_fds=(write_end,),
            start_new_session=True, cwd="/", close_fds=True)
    except BaseException:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    answer = _read_line(read_end, timeout)
    if answer == "ok":
        os.close(read_end)
        return answer
    if answer is None:
        _kernel_log(f"{MOUNTPOINT} was not mounted within {timeout:.0f} s; going on without waiting")
        threading.Thread(target=_late_answer, args=(read_end,), name="dbfs-fuse-ready", daemon=True).start()
        return None
    os.close(read_end)
    _kernel_log(f"object-store mounts are not served under {MOUNTPOINT} (file: mounts are): {answer}")
    return answer


def _supervise(timeout: float) -> None:
    """Start the daemon again whenever it stops while the kernel lives (it leaves only with the kernel)."""
    stops: collections.deque[float] = collections.deque()
    while True:
        proc = _daemon
        code = proc.wait()
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        now = time.monotonic()
        stops.append(now)
        while now - stops[0] > RESTART_WINDOW:
            stops.popleft()
        try:
            _unmount_lazily(MOUNTPOINT)  # a dead FUSE server leaves "Transport endpoint is not connected"
        except Exception:  # noqa: BLE001
            pass
        if len(stops) > RESTART_LIMIT:
            _kernel_log(f"the daemon (pid {proc.pid}) {how}, its {len(stops)}th stop within "
                        f"{RESTART_WINDOW:.0f} s: not restarting it; object-store mounts are no longer served "
                        f"under {MOUNTPOINT} in this kernel (file: mounts are)")
            return
        _kernel_log(f"the daemon (pid {proc.pid}) {how}; mounting {MOUNTPOINT} again")
        try:
            answer = _launch(timeout)
        except Exception as exc:  # noqa: BLE001
            _kernel_log(f"object-store mounts are not served under {MOUNTPOINT}: {type(exc).__name__}: {exc}")
            return
        if answer not in ("ok", None):
            return


def _read_line(fd: int, timeout: float | None) -> str | None:
    """The daemon's answer, "" when it exited without one, None when it took longer than timeout."""
    deadline = None if timeout is None else time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip() or "error: the daemon exited without an answer"


def _late_answer(fd: int) -> None:
    try:
        answer = _read_line(fd, None)
    finally:
        os.close(fd)
    _kernel_log(f"{MOUNTPOINT} mounted late" if answer == "ok" else
                f"object-store mounts are not served under {MOUNTPOINT}: {answer}")


if __name__ == "__main__":
    sys.exit(main())
