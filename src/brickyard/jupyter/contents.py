"""A Jupyter Server ContentsManager over the Workspace API: JupyterLab opens and saves workspace notebooks.

Jupyter paths map to workspace paths: ``Users/me/etl.ipynb`` is the notebook ``/Users/me/etl`` (any
language; read and written as JUPYTER), folders are folders and workspace files are files. A
notebook saved here is the same workspace object that jobs run. Renames are export, import,
delete (the Workspace API has no move), so a renamed object gets a new object id.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import posixpath
from datetime import datetime, timezone

import nbformat
from jupyter_server.services.contents.checkpoints import Checkpoints, GenericCheckpointsMixin
from jupyter_server.services.contents.manager import ContentsManager
from jupyter_server.services.sessions.sessionmanager import SessionManager
from tornado.web import HTTPError
from traitlets import Unicode, default

from brickyard.jupyter.client import Api, ApiError, resolve

NB_EXT = ".ipynb"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
WS = "/api/2.0/workspace"


def _time(ms: object) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc) if isinstance(ms, int) and ms > 0 else EPOCH


def _http(exc: ApiError, path: str) -> HTTPError:
    if exc.status == 404:
        return HTTPError(404, f"No such file or directory: {path}")
    return HTTPError(exc.status if exc.status < 500 else 502, f"{exc.error_code}: {exc.message}")


class WorkspaceContentsManager(ContentsManager):
    """Notebooks, folders and files of a Brickyard workspace, read and written over its REST API."""

    credentials_file = Unicode("", config=True, help="JSON file with the workspace host and token "
                                                    "(else DATABRICKS_HOST / DATABRICKS_TOKEN or ~/.databrickscfg).")
    host = Unicode("", config=True, help="Workspace URL (overrides the credentials file).")

    @default("checkpoints_class")
    def _default_checkpoints_class(self):  # noqa: ANN202
        return MemoryCheckpoints

    @property
    def api(self) -> Api:
        if getattr(self, "_api", None) is None:
            self._api = Api(resolve(host=self.host or None, credentials_file=self.credentials_file or None))
        return self._api

    def info_string(self) -> str:
        return f"Serving notebooks from the Brickyard workspace at {self.api.creds.host}"

    # ---- workspace calls -------------------------------------------------------------------
    def _status(self, wpath: str) -> dict | None:
        try:
            return self.api.call("GET", f"{WS}/get-status", path=wpath)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise _http(exc, wpath) from None

    def _call(self, method: str, endpoint: str, path: str, /, **fields: object) -> dict:
        try:
            return self.api.call(method, f"{WS}/{endpoint}", **fields)
        except ApiError as exc:
            raise _http(exc, path) from None

    def _lookup(self, path: str) -> tuple[str, dict] | None:
        """(kind, object info) for a Jupyter path: a notebook behind name.ipynb, else the object itself."""
        path = path.strip("/")
        if not path:
            return "directory", {"object_type": "DIRECTORY", "path": "/"}
        if path.endswith(NB_EXT):
            info = self._status("/" + path[: -len(NB_EXT)])
            if info is not None and info.get("object_type") == "NOTEBOOK":
                return "notebook", info
        info = self._status("/" + path)
        if info is None:
            return None
        kind = {"DIRECTORY": "directory", "FILE": "file", "REPO": "directory"}.get(info.get("object_type"))
        return (kind, info) if kind else None

    # ---- ContentsManager API ---------------------------------------------------------------
    def dir_exists(self, path: str) -> bool:
        found = self._lookup(path)
        return found is not None and found[0] == "directory"

    def file_exists(self, path: str = "") -> bool:
        found = self._lookup(path)
        return found is not None and found[0] != "directory"

    def is_hidden(self, path: str) -> bool:
        return any(part.startswith(".") for part in path.strip("/").split("/") if part)

    def get(self, path: str, content: bool = True, type: str | None = None, format: str | None = None,  # noqa: A002
            require_hash: bool = False) -> dict:
        path = path.strip("/")
        found = self._lookup(path)
        if found is None:
            raise HTTPError(404, f"No such file or directory: {path}")
        kind, info = found
        if type and type != kind:
            raise HTTPError(400, f"{path} is a {kind}, not a {type}.", reason="bad type")
        model = self._model(kind, path, info)
        if kind == "directory" and content:
            listing = self._call("GET", "list", path, path="/" + path)
            model["content"] = [self._child(o) for o in listing.get("objects", [])]
            model["content"] = [m for m in model["content"] if m is not None and self.should_list(m["name"])]
            model["format"] = "json"
        elif kind == "notebook" and (content or require_hash):
            raw = self._export(info["path"], "JUPYTER", path)
            if content:
                nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
                self.mark_trusted_cells(nb, path)
                model["content"], model["format"] = nb, "json"
                self.validate_notebook_model(model)
            self._hash(model, raw, require_hash)
        elif kind == "file" and (content or require_hash):
            raw = self._export(info["path"], "RAW", path)
            if content:
                model["content"], model["format"] = self._file_content(raw, format, path)
            self._hash(model, raw, require_hash)
        return model

    def save(self, model: dict, path: str = "") -> dict:
        path = path.strip("/")
        if not path:
            raise HTTPError(400, "The workspace root cannot be saved.")
        kind = model.get("type")
        if kind is None:
            raise HTTPError(400, "No file type provided")
        if kind != "directory" and "content" not in model:
            raise HTTPError(400, "No file content provided")
        self.run_pre_save_hooks(model=model, path=path)
        if kind == "notebook":
            if not path.endswith(NB_EXT):
                raise HTTPError(400, f"A workspace notebook is saved as <name>{NB_EXT}, not {path}.")
            nb = nbformat.from_dict(model["content"])
            self.check_and_sign(nb, path)
            self._import("/" + path[: -len(NB_EXT)], nbformat.writes(nb).encode(), "JUPYTER", path)
        elif kind == "file":
            self._import("/" + path, self._file_bytes(model), "RAW", path)
        elif kind == "directory":
            self._call("POST", "mkdirs", path, path="/" + path)
        else:
            raise HTTPError(400, f"Unhandled contents type: {kind}")
        saved = self.get(path, content=False)
        if kind == "notebook":
            self.validate_notebook_model({**saved, "content": model["content"]})
        return saved

    def delete_file(self, path: str) -> None:
        path = path.strip("/")
        found = self._lookup(path)
        if found is None:
            raise HTTPError(404, f"No such file or directory: {path}")
        if not path:
            raise HTTPError(400, "The workspace root cannot be deleted.")
        self._call("POST", "delete", path, path=found[1]["path"], recursive=False)

    def rename_file(self, old_path: str, new_path: str) -> None:
        old_path, new_path = old_path.strip("/"), new_path.strip("/")
        if old_path == new_path:
            return
        found = self._lookup(old_path)
        if found is None:
            raise HTTPError(404, f"No such file or directory: {old_path}")
        if self._lookup(new_path) is not None:
            raise HTTPError(409, f"File already exists: {new_path}")
        kind, info = found
        if kind == "directory":
            # A folder moves child by child: a DBC archive would leave its files behind.
            self._call("POST", "mkdirs", new_path, path="/" + new_path)
            for child in self._call("GET", "list", old_path, path=info["path"]).get("objects", []):
                model = self._child(child)
                if model is not None:
                    self.rename_file(model["path"], f"{new_path}/{model['name']}")
            self._call("POST", "delete", old_path, path=info["path"], recursive=False)
            return
        if kind == "notebook":
            if not new_path.endswith(NB_EXT):
                raise HTTPError(400, f"A workspace notebook keeps the {NB_EXT} extension in Jupyter.")
            target, fmt = "/" + new_path[: -len(NB_EXT)], "JUPYTER"
        else:
            target, fmt = "/" + new_path, "RAW"
        self._import(target, self._export(info["path"], fmt, old_path), fmt, new_path, overwrite=False)
        self._call("POST", "delete", old_path, path=info["path"], recursive=False)

    # ---- helpers -------------------------------------------------------------------------
    def _export(self, wpath: str, fmt: str, path: str) -> bytes:
        out = self._call("GET", "export", path, path=wpath, format=fmt)
        return base64.b64decode(out.get("content") or "")

    def _import(self, wpath: str, data: bytes, fmt: str, path: str, overwrite: bool = True) -> None:
        self._call("POST", "import", path, path=wpath, format=fmt, overwrite=overwrite,
                   content=base64.b64encode(data).decode("ascii"))

    def _model(self, kind: str, path: str, info: dict) -> dict:
        name = posixpath.basename(path)
        return {
            "name": name, "path": path, "type": kind, "writable": True,
            "created": _time(info.get("created_at")), "last_modified": _time(info.get("modified_at")),
            "content": None, "format": None, "size": info.get("size"),
            "mimetype": None if kind != "file" else _mimetype(name),
        }

    def _child(self, info: dict) -> dict | None:
        wpath, kind = info.get("path", ""), info.get("object_type")
        if kind == "NOTEBOOK":
            return self._model("notebook", wpath.lstrip("/") + NB_EXT, info)
        kind = {"DIRECTORY": "directory", "FILE": "file", "REPO": "directory"}.get(kind)
        return self._model(kind, wpath.lstrip("/"), info) if kind else None

    @staticmethod
    def _hash(model: dict, raw: bytes, wanted: bool) -> None:
        if wanted:
            model["hash"], model["hash_algorithm"] = hashlib.sha256(raw).hexdigest(), "sha256"

    @staticmethod
    def _file_content(raw: bytes, fmt: str | None, path: str) -> tuple[str, str]:
        if fmt != "base64":
            try:
                return raw.decode("utf-8"), "text"
            except UnicodeDecodeError:
                if fmt == "text":
                    raise HTTPError(400, f"{path} is not UTF-8 encoded", reason="bad format") from None
        return base64.b64encode(raw).decode("ascii"), "base64"

    @staticmethod
    def _file_bytes(model: dict) -> bytes:
        content, fmt = model.get("content") or "", model.get("format") or "text"
        if fmt == "base64":
            try:
                return base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise HTTPError(400, "The content is not valid base64.") from None
        return content.encode("utf-8")


def _mimetype(name: str) -> str | None:
    import mimetypes

    return mimetypes.guess_type(name)[0]


class MemoryCheckpoints(GenericCheckpointsMixin, Checkpoints):
    """One checkpoint per path, kept in the Jupyter server's memory (the workspace keeps no revisions)."""

    def __init__(self, **kwargs: object):
        super().__init__(**kwargs)
        self._saved: dict[str, dict] = {}

    def _store(self, path: str, model: dict) -> dict:
        now = datetime.now(timezone.utc)
        self._saved[path.strip("/")] = {**model, "last_modified": now}
        return {"id": "checkpoint", "last_modified": now}

    def create_file_checkpoint(self, content, format, path):  # noqa: ANN001, ANN201, A002
        return self._store(path, {"type": "file", "content": content, "format": format})

    def create_notebook_checkpoint(self, nb, path):  # noqa: ANN001, ANN201
        return self._store(path, {"type": "notebook", "content": nb})

    def _get(self, path: str) -> dict:
        saved = self._saved.get(path.strip("/"))
        if saved is None:
            raise HTTPError(404, f"No checkpoint for {path}")
        return {k: v for k, v in saved.items() if k != "last_modified"}

    def get_file_checkpoint(self, checkpoint_id, path):  # noqa: ANN001, ANN201, ARG002
        return self._get(path)

    def get_notebook_checkpoint(self, checkpoint_id, path):  # noqa: ANN001, ANN201, ARG002
        return self._get(path)

    def delete_checkpoint(self, checkpoint_id, path):  # noqa: ANN001, ANN201, ARG002
        self._saved.pop(path.strip("/"), None)

    def list_checkpoints(self, path):  # noqa: ANN001, ANN201
        saved = self._saved.get(path.strip("/"))
        return [{"id": "checkpoint", "last_modified": saved["last_modified"]}] if saved else []

    def rename_checkpoint(self, checkpoint_id, old_path, new_path):  # noqa: ANN001, ANN201, ARG002
        saved = self._saved.pop(old_path.strip("/"), None)
        if saved is not None:
            self._saved[new_path.strip("/")] = saved


class WorkspaceSessionManager(SessionManager):
    """Tell kernels the notebook's Jupyter path (the workspace path + .ipynb), not a local file name."""

    def get_kernel_env(self, path, name=None):  # noqa: ANN001, ANN201, ARG002
        return {**super().get_kernel_env(path, None), "JPY_SESSION_NAME": path}
