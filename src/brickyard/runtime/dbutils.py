"""dbutils inside notebooks: fs, secrets, widgets, notebook, over the workspace REST API.

The kernel gets the workspace URL and the running user's own short-lived token in its
environment (BRICKYARD_HOST / BRICKYARD_TOKEN); every call goes through the REST API with
it, so the server enforces the same permissions and secret ACLs as for any client.
Errors read like Databricks' (``java.io.FileNotFoundException: File dbfs:/x does not
exist.``) because notebooks match on those strings.
"""
from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import shutil
from collections import namedtuple

import requests

from brickyard.runtime import redact

READ_CHUNK = 1 << 20
FS_CLASS = "com.databricks.backend.daemon.dbutils.FSUtils"


class ExecutionError(Exception):
    """What a failed dbutils call raises (py4j's wording on Databricks)."""


class NotebookExit(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by dbutils.notebook.exit(value); ends the notebook with success."""

    def __init__(self, value: str):
        super().__init__(value)
        self.value = value


class WorkflowException(Exception):
    """A child notebook started with dbutils.notebook.run failed or timed out."""


class InputWidgetNotDefined(Exception):
    """dbutils.widgets.get of a widget that does not exist."""


class RestError(Exception):
    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{error_code}: {message}")
        self.status, self.error_code, self.message = status, error_code, message


class Rest:
    """The workspace REST API with the running user's token."""

    def __init__(self, host: str, token: str):
        self.host = host.rstrip("/")
        self.token = token
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, params: dict | None = None, body: dict | None = None) -> dict:
        try:
            r = self.http.request(method, self.host + path, params=params, json=body, timeout=300)
        except requests.ConnectionError as exc:
            if "Connection aborted" not in str(exc):
                raise
            # A kept-alive connection that the server closed while it was idle (a reset before any answer):
            # the request did not reach it, so it goes once more, on a new connection.
            r = self.http.request(method, self.host + path, params=params, json=body, timeout=300)
        try:
            data = r.json() if r.content else {}
        except ValueError:
            data = {"message": r.text[:500]}
        if r.status_code >= 400:
            raise RestError(r.status_code, data.get("error_code", "INTERNAL_ERROR"), data.get("message", r.reason))
        return data


class FileInfo(namedtuple("FileInfo", ["path", "name", "size", "modificationTime"])):
    def isDir(self) -> bool:  # noqa: N802 - Databricks' name
        return self.name.endswith("/")

    def isFile(self) -> bool:  # noqa: N802
        return not self.isDir()


MountInfo = namedtuple("MountInfo", ["mountPoint", "source", "encryptionType"])
SecretScope = namedtuple("SecretScope", ["name"])
SecretMetadata = namedtuple("SecretMetadata", ["key"])


def _call_error(method: str, exc_text: str) -> ExecutionError:
    return ExecutionError(f"An error occurred while calling z:{FS_CLASS}.{method}.\n: {exc_text}")


def _split(path: str) -> tuple[str, str]:
    """('dbfs', '/a/b') or ('file', '/tmp/x') for a dbutils path."""
    if not isinstance(path, str) or not path:
        raise ExecutionError("java.lang.IllegalArgumentException: Path must not be empty.")
    if path.startswith("file:"):
        rest = path[5:]
        return "file", "/" + rest.lstrip("/")
    if path.startswith("dbfs:"):
        path = path[5:]
    if not path.startswith("/"):
        path = "/" + path
    return "dbfs", posixpath.normpath(path) if path != "/" else "/"


def _uri(kind: str, path: str, is_dir: bool = False) -> str:
    uri = f"{kind}:{path}"
    return uri + "/" if is_dir and not uri.endswith("/") else uri


class FsUtils:
    """dbutils.fs"""

    def __init__(self, rest: Rest, cluster_id: str | None = None):
        self._rest = rest
        self._cluster_id = cluster_id

    # -- helpers ------------------------------------------------------------------------
    def _fail(self, method: str, exc: RestError, path: str) -> ExecutionError:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return _call_error(method, f"java.io.FileNotFoundException: File {path} does not exist.")
        if exc.error_code == "RESOURCE_ALREADY_EXISTS":
            return _call_error(method, f"org.apache.hadoop.fs.FileAlreadyExistsException: {exc.message}")
        if exc.error_code == "PERMISSION_DENIED":
            return _call_error(method, f"java.nio.file.AccessDeniedException: {exc.message}")
        return _call_error(method, f"java.io.IOException: {exc.message}")

    def _stat(self, kind: str, path: str) -> dict | None:
        if kind == "file":
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return None
            return {"path": path, "is_dir": os.path.isdir(path), "file_size": st.st_size,
                    "modification_time": int(st.st_mtime * 1000)}
        try:
            return self._rest.call("GET", "/api/2.0/dbfs/get-status", {"path": path})
        except RestError as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise

    def _read(self, kind: str, path: str, limit: int | None = None):  # noqa: ANN202
        """Yield the file's bytes in chunks (up to limit bytes)."""
        if kind == "file":
            with open(path, "rb") as fh:
                left = limit
                while left is None or left > 0:
                    block = fh.read(READ_CHUNK if left is None else min(READ_CHUNK, left))
                    if not block:
                        return
                    left = None if left is None else left - len(block)
                    yield block
            return
        offset = 0
        while limit is None or offset < limit:
            length = READ_CHUNK if limit is None else min(READ_CHUNK, limit - offset)
            out = self._rest.call("GET", "/api/2.0/dbfs/read", {"path": path, "offset": offset, "length": length})
            block = base64.b64decode(out.get("data") or "")
            if not block:
                return
            offset += len(block)
            yield block

    def _write(self, kind: str, path: str, chunks, overwrite: bool) -> int:  # noqa: ANN001
        total = 0
        if kind == "file":
            if os.path.exists(path) and not overwrite:
                raise RestError(409, "RESOURCE_ALREADY_EXISTS", f"File already exists: file:{path}")
            os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
            with open(path, "wb") as fh:
                for block in chunks:
                    fh.write(block)
                    total += len(block)
            return total
        handle = self._rest.call("POST", "/api/2.0/dbfs/create", body={"path": path, "overwrite": overwrite})["handle"]
        for block in chunks:
            for i in range(0, len(block), READ_CHUNK):
                part = block[i:i + READ_CHUNK]
                self._rest.call("POST", "/api/2.0/dbfs/add-block",
                                body={"handle": handle, "data": base64.b64encode(part).decode()})
                total += len(part)
        self._rest.call("POST", "/api/2.0/dbfs/close", body={"handle": handle})
        return total

    def _children(self, kind: str, path: str) -> list[dict]:
        if kind == "file":
            return [self._stat("file", os.path.join(path, n)) for n in sorted(os.listdir(path))]
        return self._rest.call("GET", "/api/2.0/dbfs/list", {"path": path}).get("files") or []

    def _mkdirs(self, kind: str, path: str) -> None:
        if kind == "file":
            os.makedirs(path, exist_ok=True)
        else:
            self._rest.call("POST", "/api/2.0/dbfs/mkdirs", body={"path": path})

    def _delete(self, kind: str, path: str, recurse: bool) -> None:
        if kind == "file":
            if os.path.isdir(path) and not os.path.islink(path):
                if recurse:
                    shutil.rmtree(path)
                else:
                    os.rmdir(path)
            else:
                os.remove(path)
        else:
            self._rest.call("POST", "/api/2.0/dbfs/delete", body={"path": path, "recursive": recurse})

    def _copy(self, src: tuple[str, str], dst: tuple[str, str], recurse: bool) -> None:
        st = self._stat(*src)
        if st is None:
            raise RestError(404, "RESOURCE_DOES_NOT_EXIST", src[1])
        if st["is_dir"]:
            if not recurse:
                raise RestError(400, "IO_ERROR", f"Cannot copy the directory {_uri(*src)} without recurse=True.")
            self._mkdirs(*dst)
            for child in self._children(*src):
                name = posixpath.basename(child["path"].rstrip("/"))
                self._copy((src[0], posixpath.join(src[1], name)), (dst[0], posixpath.join(dst[1], name)), True)
            return
        target = self._stat(*dst)
        if target is not None and target["is_dir"]:
            dst = (dst[0], posixpath.join(dst[1], posixpath.basename(src[1])))
        self._write(dst[0], dst[1], self._read(*src), overwrite=True)

    # -- API ----------------------------------------------------------------------------
    def ls(self, dir: str) -> list[FileInfo]:  # noqa: A002 - Databricks' parameter name
        kind, path = _split(dir)
        try:
            st = self._stat(kind, path)
            if st is None:
                raise RestError(404, "RESOURCE_DOES_NOT_EXIST", path)
            entries = self._children(kind, path) if st["is_dir"] else [st]
        except RestError as exc:
            raise self._fail("ls", exc, _uri(kind, path)) from None
        out = []
        for e in entries:
            p = e["path"]
            is_dir = bool(e.get("is_dir"))
            name = posixpath.basename(p.rstrip("/")) + ("/" if is_dir else "")
            out.append(FileInfo(_uri(kind, p, is_dir), name, 0 if is_dir else int(e.get("file_size") or 0),
                                int(e.get("modification_time") or 0)))
        return sorted(out, key=lambda f: f.name)

    def mkdirs(self, dir: str) -> bool:  # noqa: A002
        kind, path = _split(dir)
        try:
            self._mkdirs(kind, path)
        except RestError as exc:
            raise self._fail("mkdirs", exc, _uri(kind, path)) from None
        return True

    def put(self, file: str, contents: str, overwrite: bool = False) -> bool:
        kind, path = _split(file)
        data = contents.encode() if isinstance(contents, str) else bytes(contents)
        try:
            self._write(kind, path, [data], overwrite)
        except RestError as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                raise _call_error("put", "org.apache.hadoop.fs.FileAlreadyExistsException: "
                                  f"File already exists: {_uri(kind, path)}") from None
            raise self._fail("put", exc, _uri(kind, path)) from None
        print(f"Wrote {len(data)} bytes.")
        return True

    def head(self, file: str, maxBytes: int = 65536) -> str:  # noqa: N803
        kind, path = _split(file)
        try:
            st = self._stat(kind, path)
            if st is None:
                raise RestError(404, "RESOURCE_DOES_NOT_EXIST", path)
            if st["is_dir"]:
                raise _call_error("head", f"java.lang.IllegalArgumentException: Cannot head a directory: "
                                  f"{_uri(kind, path)}")
            data = b"".join(self._read(kind, path, maxBytes))
        except RestError as exc:
            raise self._fail("head", exc, _uri(kind, path)) from None
        if st["file_size"] > maxBytes:
            print(f"[Truncated to first {maxBytes} bytes]")
        return data.decode("utf-8", errors="replace")

    def cp(self, from_: str, to: str, recurse: bool = False) -> bool:
        src, dst = _split(from_), _split(to)
        try:
            self._copy(src, dst, recurse)
        except RestError as exc:
            raise self._fail("cp", exc, _uri(*src)) from None
        return True

    def mv(self, from_: str, to: str, recurse: bool = False) -> bool:
        src, dst = _split(from_), _split(to)
        try:
            st = self._stat(*src)
            if st is None:
                raise RestError(404, "RESOURCE_DOES_NOT_EXIST", src[1])
            target = self._stat(*dst)
            if target is not None and target["is_dir"]:
                dst = (dst[0], posixpath.join(dst[1], posixpath.basename(src[1])))
            if src[0] == dst[0] == "dbfs":
                self._rest.call("POST", "/api/2.0/dbfs/move", body={"source_path": src[1],
                                                                     "destination_path": dst[1]})
            elif src[0] == dst[0] == "file":
                shutil.move(src[1], dst[1])
            else:
                self._copy(src, dst, recurse or st["is_dir"])
                self._delete(src[0], src[1], True)
        except RestError as exc:
            raise self._fail("mv", exc, _uri(*src)) from None
        return True

    def rm(self, dir: str, recurse: bool = False) -> bool:  # noqa: A002
        kind, path = _split(dir)
        try:
            if self._stat(kind, path) is None:
                return False
            self._delete(kind, path, recurse)
        except RestError as exc:
            raise self._fail("rm", exc, _uri(kind, path)) from None
        except OSError as exc:
            raise _call_error("rm", f"java.io.IOException: {exc}") from None
        return True

    # -- mounts (the workspace's internal mounts API; see api/mounts.py) ---------------------
    def _mounts_call(self, method: str, verb: str, action: str, body: dict | None = None) -> dict:
        try:
            return self._rest.call(verb, f"/api/2.0/brickyard/mounts/{action}", body=body)
        except RestError as exc:
            if exc.error_code == "PERMISSION_DENIED":
                detail = f"java.lang.SecurityException: {exc.message}"
            elif exc.status < 500 and exc.error_code != "IO_ERROR":
                req = f"java.lang.IllegalArgumentException: requirement failed: {exc.message}"
                detail = f"java.rmi.RemoteException: {req}; nested exception is: \n\t{req}"
            else:
                detail = f"java.io.IOException: {exc.message}"
            raise _call_error(method, detail) from None

    def mount(self, source: str, mount_point: str | None = None, encryption_type: str = "",
              owner: str | None = None, extra_configs: dict | None = None, **kwargs) -> bool:  # noqa: ARG002
        """Mount source (file:/..., s3a://..., abfss://..., wasbs://...) at /mnt/<name> for the whole workspace."""
        body = _mount_body("mount", source, mount_point, encryption_type, extra_configs, kwargs)
        self._mounts_call("mount", "POST", "create", body)
        self._restart_note("mount", after_change=True)
        return True

    def updateMount(self, source: str, mount_point: str | None = None, encryption_type: str = "",  # noqa: N802
                    owner: str | None = None, extra_configs: dict | None = None, **kwargs) -> bool:  # noqa: ARG002
        body = _mount_body("updateMount", source, mount_point, encryption_type, extra_configs, kwargs)
        self._mounts_call("updateMount", "POST", "update", body)
        self._restart_note("updateMount", after_change=True)
        return True

    def unmount(self, mount_point: str) -> bool:
        self._mounts_call("unmount", "POST", "delete", {"mount_point": mount_point})
        print(f"{mount_point} has been unmounted.")
        return True

    def mounts(self) -> list[MountInfo]:
        data = self._mounts_call("mounts", "GET", "list")
        return [MountInfo("/", "DatabricksRoot", "")] + [
            MountInfo(m["mount_point"], m["source"], m.get("encryption_type") or "") for m in data.get("mounts") or []]

    def refreshMounts(self) -> bool:  # noqa: N802
        """Make this cluster's Spark read the workspace's current mount table."""
        self._restart_note("refreshMounts")
        return True

    def _restart_note(self, method: str, after_change: bool = False) -> None:
        """Refresh this cluster's mount table; say so when its JVM lacks a connector a mount needs.

        After a mount or update (which the workspace already pushed to every cluster) only this cluster
        is asked, and a failure to ask does not undo the mount.
        """
        if after_change:
            if not self._cluster_id:
                return
            try:
                out = self._mounts_call(method, "POST", "refresh", {"cluster_id": self._cluster_id})
            except Exception:  # noqa: BLE001 - the mount is made; the note is a courtesy
                return
        else:
            out = self._mounts_call(method, "POST", "refresh",
                                    {"cluster_id": self._cluster_id} if self._cluster_id else {})
        if not self._cluster_id or self._cluster_id not in (out.get("needs_restart") or []):
            return
        lacking = (out.get("connectors_missing") or {}).get(self._cluster_id) or ["s3a"]
        names = " and ".join(_CONNECTORS.get(k, k) for k in lacking)
        print(f"Note: this cluster was started without the {names}; restart it to use those mounts from Spark "
              f"(dbutils.fs reaches them already).")

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print(_FS_HELP)


_CONNECTORS = {"s3a": "S3A connector (s3a:// mounts)", "azure": "Azure connector (abfss:// and wasbs:// mounts)"}
_FS_HELP = """dbutils.fs provides utilities for working with FileSystems (dbfs:/ paths and file:/ local paths).
cp(from: String, to: String, recurse: boolean = false): boolean -> Copies a file or directory, possibly across FileSystems
head(file: String, maxBytes: int = 65536): String -> Returns up to the first 'maxBytes' bytes of the given file as a String encoded in UTF-8
ls(dir: String): Seq -> Lists the contents of a directory
mkdirs(dir: String): boolean -> Creates the given directory if it does not exist
mv(from: String, to: String, recurse: boolean = false): boolean -> Moves a file or directory, possibly across FileSystems
put(file: String, contents: String, overwrite: boolean = false): boolean -> Writes the given String out to a file, encoded in UTF-8
rm(dir: String, recurse: boolean = false): boolean -> Removes a file or directory
mount(source: String, mountPoint: String, encryptionType: String = "", owner: String = null, extraConfigs: Map = Map.empty[String, String]): boolean -> Mounts the given source directory into DBFS at the given mount point
mounts(): Seq -> Displays information about what is mounted within DBFS
refreshMounts(): boolean -> Forces all machines in this cluster to refresh their mount cache
unmount(mountPoint: String): boolean -> Deletes a DBFS mount point
updateMount(source: String, mountPoint: String, encryptionType: String = "", owner: String = null, extraConfigs: Map = Map.empty[String, String]): boolean -> Similar to mount(), but updates an existing mount point instead of creating a new one"""


class SecretsUtils:
    """dbutils.secrets: values are fetched with the user's token and redacted from all output."""

    def __init__(self, rest: Rest):
        self._rest = rest

    def _call(self, method: str, path: str, params: dict | None = None) -> dict:
        try:
            return self._rest.call("GET", path, params)
        except RestError as exc:
            raise ExecutionError(f"An error occurred while calling o{method}.\n: "
                                 f"com.databricks.common.client.DatabricksServiceHttpClientException: "
                                 f"{exc.error_code}: {exc.message}") from None

    def getBytes(self, scope: str, key: str) -> bytes:  # noqa: N802
        value = base64.b64decode(self._call("getBytes", "/api/2.0/secrets/get", {"scope": scope, "key": key})
                                 .get("value") or "")
        redact.add(value)
        return value

    def get(self, scope: str, key: str) -> str:
        value = base64.b64decode(self._call("get", "/api/2.0/secrets/get", {"scope": scope, "key": key})
                                 .get("value") or "")
        text = value.decode("utf-8", errors="replace")
        redact.add(text)
        return text

    def list(self, scope: str) -> list[SecretMetadata]:
        data = self._call("list", "/api/2.0/secrets/list", {"scope": scope})
        return [SecretMetadata(s["key"]) for s in data.get("secrets") or []]

    def listScopes(self) -> list[SecretScope]:  # noqa: N802
        data = self._call("listScopes", "/api/2.0/secrets/scopes/list")
        return [SecretScope(s["name"]) for s in data.get("scopes") or []]

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.secrets provides utilities for leveraging secrets within notebooks.\n"
              "get(scope: String, key: String): String -> Gets the string representation of a secret value\n"
              "getBytes(scope: String, key: String): byte[] -> Gets the bytes representation of a secret value\n"
              "list(scope: String): Seq -> Lists secret metadata for secrets within a scope\n"
              "listScopes: Seq -> Lists secret scopes")


class WidgetsUtils:
    """dbutils.widgets: parameters (job base_parameters, notebook.run arguments) win over defaults."""

    def __init__(self, params: dict[str, str] | None = None):
        self._params = {str(k): str(v) for k, v in (params or {}).items()}
        self._widgets: dict[str, dict] = {}

    def _define(self, kind: str, name: str, default: str, choices: list | None, label: str | None) -> None:
        default = str(default) if default is not None else ""
        if choices is not None:
            choices = [str(c) for c in choices]
            picked = default.split(",") if kind == "multiselect" else [default]
            if any(p not in choices for p in picked):
                raise ExecutionError(f"com.databricks.dbutils_v1.InputWidgetNotDefined: Default value {default} "
                                     f"is not in the list of choices for widget {name}")
        self._widgets[name] = {"type": kind, "default": default, "choices": choices, "label": label or name}

    def text(self, name: str, defaultValue: str = "", label: str | None = None) -> None:  # noqa: N803
        self._define("text", name, defaultValue, None, label)

    def dropdown(self, name: str, defaultValue: str, choices: list, label: str | None = None) -> None:  # noqa: N803
        self._define("dropdown", name, defaultValue, choices, label)

    def combobox(self, name: str, defaultValue: str, choices: list, label: str | None = None) -> None:  # noqa: N803
        self._widgets[name] = {"type": "combobox", "default": str(defaultValue), "choices": [str(c) for c in choices],
                               "label": label or name}

    def multiselect(self, name: str, defaultValue: str, choices: list, label: str | None = None) -> None:  # noqa: N803
        self._define("multiselect", name, defaultValue, choices, label)

    def get(self, name: str) -> str:
        if name in self._params:
            return self._params[name]
        if name in self._widgets:
            return self._widgets[name]["default"]
        raise InputWidgetNotDefined(f"com.databricks.dbutils_v1.InputWidgetNotDefined: No input widget named "
                                    f"{name} is defined")

    def getArgument(self, name: str, optional: str | None = None) -> str | None:  # noqa: N802
        try:
            return self.get(name)
        except InputWidgetNotDefined:
            return optional

    def getAll(self) -> dict[str, str]:  # noqa: N802
        out = {n: w["default"] for n, w in self._widgets.items()}
        out.update(self._params)
        return out

    def remove(self, name: str) -> None:
        if name not in self._widgets:
            raise InputWidgetNotDefined(f"com.databricks.dbutils_v1.InputWidgetNotDefined: No input widget named "
                                        f"{name} is defined")
        del self._widgets[name]

    def removeAll(self) -> None:  # noqa: N802
        self._widgets.clear()

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.widgets: text, dropdown, combobox, multiselect, get, getArgument, getAll, remove, removeAll")


class _Option:
    def __init__(self, value):  # noqa: ANN001
        self._value = value

    def get(self):  # noqa: ANN201
        if self._value is None:
            raise ExecutionError("java.util.NoSuchElementException: None.get")
        return self._value

    def isDefined(self) -> bool:  # noqa: N802
        return self._value is not None

    def getOrElse(self, default):  # noqa: ANN001, ANN201, N802
        return default if self._value is None else self._value

    def __repr__(self) -> str:
        return "None" if self._value is None else f"Some({self._value})"


class _Tags:
    def __init__(self, tags: dict):
        self._tags = tags

    def apply(self, key: str) -> str:
        if key not in self._tags:
            raise ExecutionError(f"java.util.NoSuchElementException: key not found: {key}")
        return self._tags[key]

    def get(self, key: str) -> _Option:
        return _Option(self._tags.get(key))

    def contains(self, key: str) -> bool:
        return key in self._tags


class NotebookContext:
    """The object behind ...notebook().getContext(): tags, notebook path, API URL and token."""

    def __init__(self, info: dict, rest: Rest):
        self._info = info
        self._rest = rest

    def tags(self) -> _Tags:
        return _Tags({k: str(v) for k, v in self._info.get("tags", {}).items() if v is not None})

    def notebookPath(self) -> _Option:  # noqa: N802
        return _Option(self._info.get("notebook_path"))

    def apiUrl(self) -> _Option:  # noqa: N802
        return _Option(self._rest.host)

    def apiToken(self) -> _Option:  # noqa: N802
        return _Option(self._rest.token)

    def userName(self) -> _Option:  # noqa: N802
        return _Option(self._info.get("tags", {}).get("user"))

    def clusterId(self) -> _Option:  # noqa: N802
        return _Option(self._info.get("tags", {}).get("clusterId"))

    def currentRunId(self) -> _Option:  # noqa: N802
        return _Option(self._info.get("tags", {}).get("runId"))

    def toJson(self) -> str:  # noqa: N802
        return json.dumps({"tags": self.tags()._tags, "extraContext": {  # noqa: SLF001
            "notebook_path": self._info.get("notebook_path"), "api_url": self._rest.host}})


class NotebookUtils:
    """dbutils.notebook: exit, run (see magics.run_child) and the context chain."""

    def __init__(self, info: dict, rest: Rest, runner=None):  # noqa: ANN001
        self._context = NotebookContext(info, rest)
        self._runner = runner  # callable(path, timeout_seconds, arguments) -> str | None

    def exit(self, value: object = "") -> None:
        raise NotebookExit("" if value is None else str(value))

    def run(self, path: str, timeout_seconds: int = 0, arguments: dict | None = None) -> str | None:
        if self._runner is None:
            raise ExecutionError("dbutils.notebook.run is not available here.")
        return self._runner(path, timeout_seconds, arguments or {})

    def getContext(self) -> NotebookContext:  # noqa: N802
        return self._context

    # dbutils.notebook.entry_point.getDbutils().notebook().getContext()
    @property
    def entry_point(self):  # noqa: ANN201
        notebook = self

        class _Dbutils:
            def notebook(self):  # noqa: ANN202
                return notebook

        class _EntryPoint:
            def getDbutils(self):  # noqa: ANN202, N802
                return _Dbutils()

        return _EntryPoint()

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.notebook: exit(value: String): void -> exits the notebook with a value\n"
              "run(path: String, timeoutSeconds: int, arguments: Map): String -> runs a notebook and returns "
              "its exit value (in this kernel, in a fresh namespace)")


class TaskValuesUtils:
    """dbutils.jobs.taskValues: values a task of a job run passes to the tasks after it.

    In a job's task the values are kept by the workspace for the run; anywhere else set does
    nothing and get returns debugValue (a TypeError without one), as on Databricks.
    """

    _OUTSIDE = "Must pass debugValue when calling get outside of a job context. debugValue cannot be None."

    def __init__(self, rest: Rest, task_run_id: int | None):
        self._rest = rest
        self._task_run_id = task_run_id

    def set(self, key: str, value: object) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a string, not {type(key).__name__}")
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"The task value {key!r} must be representable as JSON: {exc}") from None
        if len(text.encode()) > 48 * 1024:
            raise ValueError(f"The task value {key!r} is {len(text.encode())} bytes as JSON; the limit is 48 KiB.")
        if self._task_run_id is None:
            return
        try:
            self._rest.call("POST", "/api/2.0/brickyard/jobs/task-values/set",
                            body={"task_run_id": self._task_run_id, "key": key, "value": text})
        except RestError as exc:
            raise ValueError(exc.message) from None

    def get(self, taskKey: str, key: str, default: object = None, debugValue: object = None) -> object:  # noqa: N803
        if self._task_run_id is None:
            if debugValue is None:
                raise TypeError(self._OUTSIDE)
            return debugValue
        try:
            out = self._rest.call("GET", "/api/2.0/brickyard/jobs/task-values/get",
                                  {"task_run_id": self._task_run_id, "task_key": taskKey, "key": key})
        except RestError as exc:
            raise ValueError(exc.message) from None
        if "value" in out:
            return json.loads(out["value"])
        if default is not None:
            return default
        raise ValueError(f"Task {taskKey!r} did not set the task value {key!r} in this run (pass default= to get "
                         "a value instead).")

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.jobs.taskValues provides utilities for leveraging job task values.\n"
              "get(taskKey: String, key: String, default: Any = None, debugValue: Any = None): Any -> Returns the "
              "latest task value that belongs to the current job run\n"
              "set(key: String, value: Any): void -> Sets a task value on the current task run")


class JobsUtils:
    """dbutils.jobs"""

    def __init__(self, rest: Rest, task_run_id: int | None):
        self.taskValues = TaskValuesUtils(rest, task_run_id)  # noqa: N815 - Databricks' name

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.jobs: taskValues -> Provides utilities for leveraging job task values")


def task_run_id(run_id: str | None) -> int | None:
    """The job task run a kernel runs for, from its runId tag (job-run-<id>); None outside a job."""
    m = re.fullmatch(r"job-run-(\d+)", run_id or "")
    return int(m.group(1)) if m else None


class RestartPython(BaseException):  # noqa: N818 - a control-flow signal, not an error
    """Raised by dbutils.library.restartPython(): the rest of the cell is skipped, then Python restarts."""


RESTART_NOTE = "Restarting Python: variables and imports are cleared; spark, dbutils and widgets are set up again."


class LibraryUtils:
    """dbutils.library"""

    def restartPython(self) -> None:  # noqa: N802 - Databricks' name
        """Restart this notebook's Python process (after a %pip install that upgraded an imported package).

        How the request travels: this raises RestartPython, which ends the cell (the code after the
        call does not run); the kernel's handler for it (kernel_init._on_exit) publishes one
        display_data output carrying RESTART_PYTHON_MIME plus a text note for the notebook, and the
        cell's reply is "ok" (it is no error). The workspace end that runs the cell (ContextService
        for the Command Execution API, NotebookRunner for jobs, the kernel relay for JupyterLab)
        reads that output in the cell's own IOPub stream and, once the cell is over, replaces the
        process: same context or run,
        user, token, widgets, cluster. A message in the output stream rather than a REST call
        because it arrives in order with the cell's other outputs, on the thread that already
        runs that kernel's cells: the restart happens exactly between this cell and the next, with
        no second channel to authenticate, to map to a context or to race with queued commands.

        The request is published by the cell, not here, so that it also comes out of a notebook run
        with dbutils.notebook.run (whose own output is not shown): such a child runs in this kernel,
        so the whole process restarts and the calling cell ends. Catching RestartPython cancels the
        restart. Outside a notebook kernel there is no process to restart: import caches are refreshed.
        """
        import importlib

        importlib.invalidate_caches()
        if _ipython_kernel_shell() is None:
            print("Note: not in a notebook kernel, Python is not restarted; packages installed with %pip are "
                  "importable now.")
            return
        raise RestartPython()

    def help(self, method: str | None = None) -> None:  # noqa: ARG002
        print("dbutils.library: restartPython(): void -> Restarts the Python process of the notebook (Python "
              "state is lost; spark, dbutils and widgets are defined again)")


def _ipython_kernel_shell():  # noqa: ANN202
    """The IPython shell of the Jupyter kernel this code runs in, or None (a plain Python process)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return shell if getattr(shell, "kernel", None) is not None else None


class DBUtils:
    """The ``dbutils`` object of one notebook namespace."""

    def __init__(self, rest: Rest, info: dict, params: dict[str, str] | None = None, runner=None):  # noqa: ANN001
        self.fs = FsUtils(rest, (info.get("tags") or {}).get("clusterId"))
        self.secrets = SecretsUtils(rest)
        self.widgets = WidgetsUtils(params)
        self.notebook = NotebookUtils(info, rest, runner)
        self.jobs = JobsUtils(rest, task_run_id((info.get("tags") or {}).get("runId")))
        self.library = LibraryUtils()

    def help(self) -> None:
        print("This module provides various utilities for users to interact with the rest of Brickyard.\n"
              "fs: DbfsUtils -> Manipulates DBFS (dbfs:/) and local (file:/) files\n"
              "jobs: JobsUtils -> Utilities for leveraging jobs features (taskValues)\n"
              "library: LibraryUtils -> restartPython\n"
              "notebook: NotebookUtils -> Utilities for the control flow of a notebook\n"
              "secrets: SecretUtils -> Provides utilities for leveraging secrets within notebooks\n"
              "widgets: WidgetsUtils -> Methods to create and get bound value of input widgets inside notebooks")


def from_env(params: dict | None = None, runner=None, notebook_path: str | None = None) -> DBUtils:  # noqa: ANN001
    """A DBUtils built from the kernel's environment (set by the workspace when it starts the kernel)."""
    host = os.environ.get("BRICKYARD_HOST", "")
    token = os.environ.get("BRICKYARD_TOKEN", "")
    redact.add(token)
    info = {
        "notebook_path": notebook_path if notebook_path is not None else os.environ.get("BRICKYARD_NOTEBOOK_PATH"),
        "tags": {
            "user": os.environ.get("BRICKYARD_USER"),
            "clusterId": os.environ.get("BRICKYARD_CLUSTER_ID"),
            "orgId": os.environ.get("BRICKYARD_WORKSPACE_ID"),
            "runId": os.environ.get("BRICKYARD_RUN_ID"),
            "browserHostName": host.split("//", 1)[-1].split(":")[0] if host else None,
        },
    }
    if params is None:
        params = json.loads(os.environ.get("BRICKYARD_WIDGETS") or "{}")
    return DBUtils(Rest(host, token), info, params, runner)


def _mount_body(method: str, source: str, mount_point: str | None, encryption_type: str,
                extra_configs: dict | None, kwargs: dict) -> dict:
    """The mounts API body; Databricks' camelCase keywords (mountPoint, extraConfigs) work too."""
    mount_point = mount_point or kwargs.pop("mountPoint", None)
    extra_configs = extra_configs if extra_configs is not None else kwargs.pop("extraConfigs", None)
    encryption_type = encryption_type or kwargs.pop("encryptionType", "")
    if kwargs:
        raise TypeError(f"{method}() got unexpected keyword arguments: {', '.join(kwargs)}")
    return {"source": source, "mount_point": mount_point, "encryption_type": encryption_type,
            "extra_configs": dict(extra_configs or {})}
