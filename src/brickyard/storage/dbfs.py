"""DBFS on local disk: path rules, atomic writes, mounts, and the Files API path mapping.

Every DBFS path is an absolute POSIX path ("/FileStore/x.bin") under one root folder, or
under a mount point ("/mnt/x/...") whose target is a local folder (file:) or an object
store (s3a://). A local target is also linked into the root (<root>/mnt/x -> folder), so
/dbfs/mnt/x in notebooks and Spark's fallback to the root see it with no extra wiring.
Nothing here knows HTTP; errors are BrickyardError with Databricks' DBFS codes.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from brickyard.errors import BrickyardError, already_exists, invalid, not_found
from brickyard.storage.objects import ObjectStore

log = logging.getLogger(__name__)

TMP_PREFIX = "dbfs-"
# Used only when the tmp folder is on another file system than the root (see DbfsStorage).
HIDDEN_TMP_DIR = ".brickyard-tmp"
MAX_PATH_CHARS = 4096
MAX_NAME_BYTES = 255
# How many times a path is percent-decoded when looking for hidden traversal (%252e%252e ...).
DECODE_ROUNDS = 4

MLFLOW_FILES_PREFIX = ("WorkspaceInternal", "Mlflow", "Artifacts")
MLFLOW_DBFS_ROOT = "/databricks/mlflow-tracking"


@dataclass(frozen=True)
class FileStat:
    path: str  # canonical DBFS path, no scheme
    is_dir: bool
    size: int
    mtime_ms: int


@dataclass(frozen=True)
class MountTarget:
    """Where a mount point leads: a local folder, or an object store the workspace reaches itself."""

    mount_point: str  # canonical, "/mnt/x"
    local: Path | None = None
    store: ObjectStore | None = None


def _reject_unsafe(original: str, text: str) -> None:
    """Refuse NUL bytes, backslashes and `..` segments, also when percent-encoded (once or more)."""
    seen = text
    for _ in range(DECODE_ROUNDS + 1):
        if "\x00" in seen or "\\" in seen:
            raise invalid(f"Invalid path {original!r}: NUL bytes and backslashes are not allowed.")
        if any(part == ".." for part in seen.split("/")):
            raise invalid(f"Invalid path {original!r}: '..' segments are not allowed.")
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded


def normalize(path: object) -> str:
    """Return the canonical absolute DBFS path ("/a/b"); accept the `dbfs:` prefix."""
    if not isinstance(path, str) or not path.strip():
        raise invalid("Missing required field: path")
    if len(path) > MAX_PATH_CHARS:
        raise invalid(f"Path is longer than {MAX_PATH_CHARS} characters.")
    raw = path[5:] if path[:5].lower() == "dbfs:" else path
    _reject_unsafe(path, raw)
    if not raw.startswith("/"):
        raise invalid(f"Path must be absolute: {path!r}")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
        raise invalid(f"Invalid path {path!r}: a name is longer than {MAX_NAME_BYTES} bytes.")
    return "/" + "/".join(parts)


def files_api_to_dbfs(path: str) -> str:
    """Map a Files API path to the DBFS path that stores it.

    MLflow's hidden run and logged-model artifact paths land where MLflow's DBFS artifact
    URIs point; every other absolute path (/Volumes/..., /FileStore/...) is the same DBFS path.
    """
    canon = normalize(path)
    parts = canon.split("/")[1:]
    if len(parts) >= 5 and tuple(parts[:3]) == MLFLOW_FILES_PREFIX:
        exp, kind, ident, rest = parts[3], parts[4], parts[5:6], parts[6:]
        if kind == "Runs" and ident:
            return "/".join([MLFLOW_DBFS_ROOT, exp, ident[0], *rest])
        if kind == "LoggedModels" and ident:
            return "/".join([MLFLOW_DBFS_ROOT, exp, "logged_models", ident[0], *rest])
    return canon


def _mtime_ms(st: os.stat_result) -> int:
    return st.st_mtime_ns // 1_000_000


def missing(path: str) -> BrickyardError:
    return not_found(f"No file or directory exists on path {path}.")


class DbfsStorage:
    """The DBFS root folder and the file operations of the DBFS API."""

    def __init__(self, root: Path, tmp_dir: Path, stale_after: float = 24 * 3600):
        root.mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)
        self.root = Path(os.path.realpath(root))
        # os.replace is atomic only within one file system; otherwise keep temp files in a
        # hidden folder of the root, which listings skip.
        if os.stat(tmp_dir).st_dev == os.stat(self.root).st_dev:
            self.tmp = Path(os.path.realpath(tmp_dir))
        else:
            self.tmp = self.root / HIDDEN_TMP_DIR
            self.tmp.mkdir(exist_ok=True)
        # Serialises check-then-replace so that overwrite=false holds between concurrent writers.
        self._lock = threading.Lock()
        self._mounts: dict[str, MountTarget] = {}
        self._placeholders: set[str] = set()
        self.sweep_temp_files(stale_after)

    def sweep_temp_files(self, stale_after: float) -> None:
        """Remove temp files a crashed process left behind.

        Only old ones: an admin command may open the workspace while the server is uploading.
        """
        cutoff = time.time() - stale_after
        for entry in self.tmp.glob(TMP_PREFIX + "*"):
            try:
                if entry.lstat().st_mtime > cutoff:
                    continue
                shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            except OSError:
                pass

    # -- mounts ------------------------------------------------------------------------------
    def set_mounts(self, targets: list[MountTarget]) -> None:
        """Replace the mount table and make <root>/mnt/... match it (links for local folders)."""
        new = {t.mount_point: t for t in targets}
        with self._lock:
            self._mounts = new
            for t in new.values():
                self._link(t)
            self._drop_stale_links(new)

    def mounts(self) -> dict[str, MountTarget]:
        return dict(self._mounts)

    def _link(self, t: MountTarget) -> None:
        link = self.root.joinpath(*t.mount_point.split("/")[1:])
        link.parent.mkdir(parents=True, exist_ok=True)
        if t.local is None:  # an object store: an empty folder, so listings of /mnt show it
            if link.is_symlink():
                link.unlink()
            link.mkdir(exist_ok=True)
            return
        target = str(t.local)
        if link.is_symlink():
            if os.readlink(link) == target:
                return
            link.unlink()
        elif link.is_dir() and not any(os.scandir(link)):
            link.rmdir()
        elif link.exists():
            log.warning("mount point %s exists in the DBFS root; not linking it", t.mount_point)
            return
        os.symlink(target, link)

    def _drop_stale_links(self, table: dict[str, MountTarget]) -> None:
        base = self.root / "mnt"
        if not base.is_dir():
            return
        for dirpath, dirnames, _files in os.walk(base, topdown=False):
            for name in dirnames:
                path = Path(dirpath) / name
                point = "/" + path.relative_to(self.root).as_posix()
                if point in table:
                    continue
                if path.is_symlink():
                    path.unlink()  # a link whose mount is gone
                elif point in self._placeholders and not any(os.scandir(path)):
                    path.rmdir()  # only an emptied object-store placeholder, never user data
        self._placeholders = {p for p, t in table.items() if t.local is None}

    def mount_of(self, canon: str) -> tuple[MountTarget, str] | None:
        """The mount holding a canonical path and the path inside it, or None (the root)."""
        best = None
        for point, t in self._mounts.items():
            if canon == point or canon.startswith(point + "/"):
                if best is None or len(point) > len(best[0].mount_point):
                    best = (t, canon[len(point):].strip("/"))
        return best

    def _store(self, canon: str) -> tuple[ObjectStore, str] | None:
        hit = self.mount_of(canon)
        if hit is not None and hit[0].store is not None:
            return hit[0].store, hit[1]
        return None

    def _guard_mount_points(self, canon: str, action: str) -> None:
        for point in self._mounts:
            if point == canon or point.startswith(canon.rstrip("/") + "/"):
                raise invalid(f"Cannot {action} {canon}: it is or holds the mount point {point}; "
                              "use dbutils.fs.unmount first.")

    def local(self, path: str) -> Path:
        """The real local path of a DBFS path; symlinks may not lead out of the root (or the mount)."""
        canon = normalize(path)
        hit = self.mount_of(canon)
        if hit is not None:
            mount, rest = hit
            if mount.local is None:
                raise invalid(f"{canon} is on the object-store mount {mount.mount_point}, which has no local path.")
            base = Path(os.path.realpath(mount.local))
            real = Path(os.path.realpath(base.joinpath(*rest.split("/")) if rest else base))
            if real != base and base not in real.parents:
                raise invalid(f"Invalid path {path!r}: it resolves outside the mount {mount.mount_point}.")
            return real
        target = self.root.joinpath(*canon.split("/")[1:])
        real = Path(os.path.realpath(target))
        if real != self.root and self.root not in real.parents:
            raise invalid(f"Invalid path {path!r}: it resolves outside the DBFS root.")
        if self.tmp != self.root and (real == self.tmp or self.tmp in real.parents):
            raise invalid(f"Invalid path {path!r}: reserved name.")
        return real

    def stat(self, path: str) -> FileStat:
        canon = normalize(path)
        obj = self._store(canon)
        if obj is not None:
            st = obj[0].stat(obj[1])
            if st is None:
                raise missing(canon)
            return FileStat(canon, st.is_dir, st.size, st.mtime_ms)
        local = self.local(canon)
        try:
            st = local.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise missing(canon) from None
        is_dir = local.is_dir()
        return FileStat(canon, is_dir, 0 if is_dir else st.st_size, _mtime_ms(st))

    def exists(self, path: str) -> bool:
        canon = normalize(path)
        obj = self._store(canon)
        if obj is not None:
            return obj[0].stat(obj[1]) is not None
        return self.local(canon).exists()

    def list(self, path: str) -> list[FileStat]:
        """The entries of a directory (by name), or the file itself."""
        info = self.stat(path)
        if not info.is_dir:
            return [info]
        obj = self._store(info.path)
        if obj is not None:
            return [FileStat(f"{info.path.rstrip('/')}/{e.name}", e.is_dir, e.size, e.mtime_ms)
                    for e in obj[0].list(obj[1])]
        base = self.local(info.path)
        out = []
        for entry in sorted(os.scandir(base), key=lambda e: e.name):
            if base == self.root and entry.name == HIDDEN_TMP_DIR:
                continue
            child = f"{info.path.rstrip('/')}/{entry.name}"
            try:
                st = entry.stat()
            except OSError:
                continue  # a dangling symlink or a file deleted meanwhile
            is_dir = entry.is_dir()
            out.append(FileStat(child, is_dir, 0 if is_dir else st.st_size, _mtime_ms(st)))
        return out

    def mkdirs(self, path: str) -> None:
        canon = normalize(path)
        self._make_dirs(canon)

    def _make_dirs(self, canon: str) -> None:
        obj = self._store(canon)
        if obj is not None:
            st = obj[0].stat(obj[1])
            if st is not None and not st.is_dir:
                raise already_exists(f"Cannot create directory {canon}: a file already exists there.")
            if st is None:
                obj[0].mkdirs(obj[1])
            return
        current = "/"
        for part in [p for p in canon.split("/") if p]:
            current = current.rstrip("/") + "/" + part
            local = self.local(current)
            if local.is_dir():
                continue
            if local.exists():
                raise already_exists(
                    f"Cannot create directory {canon}: a file already exists at {current}.")
            try:
                local.mkdir()
            except FileExistsError:
                if not local.is_dir():
                    raise already_exists(f"Cannot create directory {canon}: {current} is a file.") from None

    def delete(self, path: str, recursive: bool) -> bool:
        """Delete a file or directory; a missing path is not an error (as on Databricks)."""
        canon = normalize(path)
        if canon == "/":
            raise invalid("Cannot delete the DBFS root.")
        self._guard_mount_points(canon, "delete")
        obj = self._store(canon)
        if obj is not None:
            return obj[0].delete(obj[1], recursive)
        local = self.local(canon)
        if not local.exists():
            return False
        if not local.is_dir():
            local.unlink(missing_ok=True)
            return True
        if any(os.scandir(local)):
            if not recursive:
                raise BrickyardError(
                    "IO_ERROR", f"Cannot delete {canon}: it is a non-empty directory; use recursive=true.")
            # Move the tree out of sight first, so that readers never see it half deleted.
            holder = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.tmp))
            try:
                os.rename(local, holder / "tree")
            except OSError:
                shutil.rmtree(local)  # on a mount on another file system
            shutil.rmtree(holder, ignore_errors=True)
            return True
        local.rmdir()
        return True

    def move(self, source: str, destination: str) -> None:
        src, dst = normalize(source), normalize(destination)
        if src == "/" or dst == "/":
            raise invalid("Cannot move the DBFS root.")
        if dst == src or dst.startswith(src.rstrip("/") + "/"):
            raise invalid(f"Cannot move {src} into itself ({dst}).")
        self._guard_mount_points(src, "move")
        if self._store(src) is not None or self._store(dst) is not None:
            self._move_via_copy(src, dst)
            return
        with self._lock:
            src_local = self.local(src)
            if not src_local.exists():
                raise missing(src)
            dst_local = self.local(dst)
            if dst_local.exists():
                raise already_exists(f"A file or directory already exists at the destination path {dst}.")
            self._make_dirs(dst.rsplit("/", 1)[0] or "/")
            try:
                os.rename(src_local, dst_local)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(src_local, dst_local)  # between the root and a mount on another file system

    def _move_via_copy(self, src: str, dst: str) -> None:
        """Move a file to or from an object-store mount: copy, then delete the source."""
        info = self.stat(src)
        if info.is_dir:
            raise invalid(f"Cannot move the directory {src} to or from an object-store mount; copy its files.")
        if self.exists(dst):
            raise already_exists(f"A file or directory already exists at the destination path {dst}.")
        with self.open_write(dst, overwrite=False) as writer:
            offset = 0
            while block := self.read(src, offset, 8 << 20):
                writer.write(block)
                offset += len(block)
            writer.commit()
        self.delete(src, recursive=False)

    def read(self, path: str, offset: int, length: int) -> bytes:
        info = self.stat(path)
        if info.is_dir:
            raise invalid(f"Cannot read {info.path}: it is a directory.")
        obj = self._store(info.path)
        if obj is not None:
            return obj[0].read(obj[1], offset, length)
        with open(self.local(info.path), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def open_write(self, path: str, overwrite: bool) -> AtomicFile:
        """A temp file that replaces `path` only when committed."""
        canon = normalize(path)
        self._check_target(canon, overwrite)
        return AtomicFile(self, canon, overwrite)

    def _check_target(self, canon: str, overwrite: bool) -> Path | None:
        if canon == "/":
            raise invalid("Cannot write a file at the DBFS root.")
        if canon in self._mounts:
            raise already_exists(f"A directory already exists at the input path {canon}.")
        obj = self._store(canon)
        if obj is not None:
            st = obj[0].stat(obj[1])
            if st is not None and st.is_dir:
                raise already_exists(f"A directory already exists at the input path {canon}.")
            if st is not None and not overwrite:
                raise already_exists(f"A file or directory already exists at the input path {canon}.")
            return None
        local = self.local(canon)
        if local.is_dir():
            raise already_exists(f"A directory already exists at the input path {canon}.")
        if local.exists() and not overwrite:
            raise already_exists(
                f"A file or directory already exists at the input path {canon}.")
        return local

    def _install(self, tmp: Path, canon: str, overwrite: bool) -> None:
        obj = self._store(canon)
        if obj is not None:
            with self._lock:
                self._check_target(canon, overwrite)
                obj[0].upload(obj[1], tmp)
            tmp.unlink(missing_ok=True)
            return
        with self._lock:
            local = self._check_target(canon, overwrite)
            self._make_dirs(canon.rsplit("/", 1)[0] or "/")
            try:
                os.replace(tmp, local)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # A mount on another file system: copy next to the target, then rename there.
                near = local.with_name(f".{local.name}.{TMP_PREFIX}{os.getpid()}.tmp")
                shutil.copyfile(tmp, near)
                os.replace(near, local)
                tmp.unlink(missing_ok=True)
        _fsync_dir(local.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicFile:
    """Bytes written to a temp file, moved under the real name only by commit()."""

    def __init__(self, storage: DbfsStorage, canon: str, overwrite: bool):
        self.storage = storage
        self.path = canon
        self.overwrite = overwrite
        self.size = 0
        fd, name = tempfile.mkstemp(prefix=TMP_PREFIX, dir=storage.tmp)
        self._tmp = Path(name)
        self._fh = os.fdopen(fd, "wb")
        self.done = False

    def write(self, data: bytes) -> None:
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            raise BrickyardError("IO_ERROR", f"Could not write {self.path}: {exc.strerror}.") from None
        self.size += len(data)

    def commit(self) -> None:
        try:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self.storage._install(self._tmp, self.path, self.overwrite)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the temp file (a no-op after a commit)."""
        if self.done:
            return
        self.done = True
        try:
            self._fh.close()
        except OSError:
            pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None:
            self.abort()
