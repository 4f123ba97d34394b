"""DBFS on local disk: path rules, atomic writes, and the Files API path mapping.

Every DBFS path is an absolute POSIX path ("/FileStore/x.bin") under one root folder.
Nothing here knows HTTP; errors are BrickyardError with Databricks' DBFS codes.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from brickyard.errors import BrickyardError, already_exists, invalid, not_found

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

    def local(self, path: str) -> Path:
        """The real local path of a DBFS path; symlinks may not lead out of the root."""
        canon = normalize(path)
        target = self.root.joinpath(*canon.split("/")[1:])
        real = Path(os.path.realpath(target))
        if real != self.root and self.root not in real.parents:
            raise invalid(f"Invalid path {path!r}: it resolves outside the DBFS root.")
        if self.tmp != self.root and (real == self.tmp or self.tmp in real.parents):
            raise invalid(f"Invalid path {path!r}: reserved name.")
        return real

    def stat(self, path: str) -> FileStat:
        canon = normalize(path)
        local = self.local(canon)
        try:
            st = local.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise missing(canon) from None
        is_dir = local.is_dir()
        return FileStat(canon, is_dir, 0 if is_dir else st.st_size, _mtime_ms(st))

    def exists(self, path: str) -> bool:
        return self.local(path).exists()

    def list(self, path: str) -> list[FileStat]:
        """The entries of a directory (by name), or the file itself."""
        info = self.stat(path)
        if not info.is_dir:
            return [info]
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
                shutil.rmtree(local)
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
        with self._lock:
            src_local = self.local(src)
            if not src_local.exists():
                raise missing(src)
            dst_local = self.local(dst)
            if dst_local.exists():
                raise already_exists(f"A file or directory already exists at the destination path {dst}.")
            self._make_dirs(dst.rsplit("/", 1)[0] or "/")
            os.rename(src_local, dst_local)

    def read(self, path: str, offset: int, length: int) -> bytes:
        info = self.stat(path)
        if info.is_dir:
            raise invalid(f"Cannot read {info.path}: it is a directory.")
        with open(self.local(info.path), "rb") as fh:
            fh.seek(offset)
            return fh.read(length)

    def open_write(self, path: str, overwrite: bool) -> AtomicFile:
        """A temp file that replaces `path` only when committed."""
        canon = normalize(path)
        self._check_target(canon, overwrite)
        return AtomicFile(self, canon, overwrite)

    def _check_target(self, canon: str, overwrite: bool) -> Path:
        if canon == "/":
            raise invalid("Cannot write a file at the DBFS root.")
        local = self.local(canon)
        if local.is_dir():
            raise already_exists(f"A directory already exists at the input path {canon}.")
        if local.exists() and not overwrite:
            raise already_exists(
                f"A file or directory already exists at the input path {canon}.")
        return local

    def _install(self, tmp: Path, canon: str, overwrite: bool) -> None:
        with self._lock:
            local = self._check_target(canon, overwrite)
            self._make_dirs(canon.rsplit("/", 1)[0] or "/")
            os.replace(tmp, local)
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
