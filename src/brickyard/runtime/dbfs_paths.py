"""/dbfs/<path> for local file APIs in notebook processes.

Databricks mounts DBFS at /dbfs with FUSE. Here the kernel is started, when the workspace
runs as root, in its own mount namespace with the DBFS root bind-mounted on /dbfs (see
``namespace_argv``), so every file API sees it: open, pandas, pyarrow, %sh. Otherwise the
kernel falls back to ``install()``: Python-level patches of open/io.open and the os
functions that take paths, which covers open(), pathlib, shutil and pandas (it opens
files through Python) but not native code that opens paths itself (pyarrow's own file
system, subprocesses).
"""
from __future__ import annotations

import builtins
import io
import os
import shutil

PREFIX = "/dbfs"
_root: str | None = None


def namespace_argv(dbfs_root: str) -> list[str] | None:
    """A command prefix that runs a program with DBFS bind-mounted on /dbfs, or None when unavailable."""
    unshare, mount = shutil.which("unshare"), shutil.which("mount")
    if os.name != "posix" or os.geteuid() != 0 or not unshare or not mount:
        return None
    try:
        os.makedirs(PREFIX, exist_ok=True)
    except OSError:
        return None
    # Private propagation: the bind mount stays inside the kernel's namespace, so
    # several workspaces on one host each see their own DBFS at /dbfs.
    # A failed mount still starts the kernel; it then falls back to install().
    script = f'{mount} --bind "$0" {PREFIX} 2>/dev/null; exec "$@"'
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script, dbfs_root]


def local_path(path: str) -> str:
    """The real local path of a /dbfs/... path (other paths unchanged)."""
    if _root is None or not isinstance(path, str):
        return path
    if path == PREFIX or path.startswith(PREFIX + "/"):
        rest = os.path.normpath(path[len(PREFIX):] or "/").lstrip("/")
        return os.path.join(_root, rest) if rest not in ("", ".") else _root
    return path


def _map(arg):  # noqa: ANN001, ANN202
    if isinstance(arg, (str, os.PathLike)) and not isinstance(arg, bytes):
        text = os.fspath(arg)
        if isinstance(text, str) and (text == PREFIX or text.startswith(PREFIX + "/")):
            return local_path(text)
    return arg


def _wrap1(fn):  # noqa: ANN001, ANN202
    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if args:
            args = (_map(args[0]), *args[1:])
        return fn(*args, **kwargs)

    wrapper.__wrapped__ = fn
    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    return wrapper


def _wrap2(fn):  # noqa: ANN001, ANN202
    def wrapper(src, dst, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        return fn(_map(src), _map(dst), *args, **kwargs)

    wrapper.__wrapped__ = fn
    wrapper.__name__ = getattr(fn, "__name__", "wrapper")
    return wrapper


_ONE_PATH = ("stat", "lstat", "listdir", "scandir", "mkdir", "makedirs", "remove", "unlink", "rmdir",
             "access", "chmod", "utime", "open", "truncate", "removedirs")
_TWO_PATHS = ("rename", "replace")
_OS_PATH = ("exists", "isfile", "isdir", "getsize", "getmtime", "lexists", "realpath", "islink")


def mounted(dbfs_root: str) -> bool:
    """Whether /dbfs already is the DBFS root (the mount-namespace case)."""
    try:
        return os.path.samefile(PREFIX, dbfs_root)
    except OSError:
        return False


def patched() -> bool:
    """Whether install() patched this process: /dbfs is then no real path (no mount namespace)."""
    return _root is not None


def install(dbfs_root: str) -> None:
    """Make /dbfs/... mean the DBFS root for Python file APIs in this process."""
    global _root
    if _root is not None or mounted(dbfs_root):
        return
    _root = os.path.abspath(dbfs_root)
    patched_open = _wrap1(io.open)
    builtins.open = patched_open
    io.open = patched_open
    for name in _ONE_PATH:
        if hasattr(os, name):
            setattr(os, name, _wrap1(getattr(os, name)))
    for name in _TWO_PATHS:
        setattr(os, name, _wrap2(getattr(os, name)))
    for name in _OS_PATH:
        setattr(os.path, name, _wrap1(getattr(os.path, name)))
