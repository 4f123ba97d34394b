"""The workspace tree: folders, notebooks and files under /Users and /Shared.

Notebooks are stored as the canonical JSON of ``brickyard.runtime.formats``; files as
their bytes. Imports parse everything before writing and write in the caller's single
transaction, so a bad notebook or archive leaves nothing behind.
"""
from __future__ import annotations

import mimetypes
import posixpath
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, already_exists, denied, invalid, not_found
from brickyard.runtime import formats
from brickyard.runtime.formats.model import LANGUAGES
from brickyard.services.common import new_numeric_id, now_ms
from brickyard.services.users import Principal
from brickyard.store.models import User, WorkspaceObject

DIRECTORY = "DIRECTORY"
NOTEBOOK = "NOTEBOOK"
FILE = "FILE"
ROOT_FOLDERS = ("/Users", "/Shared")
# Databricks' workspace file system shows the tree under /Workspace (the folder notebooks see, and the
# form jobs, bundles and %run accept): "/Workspace/Users/x" names "/Users/x", so no real top-level folder
# can be called Workspace.
WORKSPACE_PREFIX = "Workspace"
MAX_PATH = 4096
# Databricks' documented limit for import content and exports.
MAX_NOTEBOOK_BYTES = 10 * 1024 * 1024
MAX_ARCHIVE_BYTES = 100 * 1024 * 1024
FORMATS = ("SOURCE", "HTML", "JUPYTER", "DBC", "AUTO", "RAW", "R_MARKDOWN")
MEDIA_TYPES = {
    "SOURCE": "text/plain; charset=utf-8",
    "JUPYTER": "application/x-ipynb+json",
    "HTML": "text/html; charset=utf-8",
    "DBC": "application/octet-stream",
    "ZIP": "application/zip",
}


def too_large(message: str) -> BrickyardError:
    return BrickyardError("MAX_NOTEBOOK_SIZE_EXCEEDED", message)


def check_format(value: object, default: str = "SOURCE") -> str:
    """A Workspace API format enum value (case sensitive, as on Databricks)."""
    if value is None or value == "":
        return default
    if value not in FORMATS:
        raise invalid(f"Invalid format {str(value)[:50]!r}; use one of {', '.join(FORMATS)}.")
    if value == "R_MARKDOWN":
        raise invalid("The R_MARKDOWN format is not supported by Brickyard; use SOURCE, JUPYTER, HTML or DBC.")
    return value


def check_language(value: object) -> str | None:
    if value is None or value == "":
        return None
    if value not in LANGUAGES:
        raise invalid(f"Invalid language {str(value)[:50]!r}; use one of {', '.join(LANGUAGES)}.")
    return value


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def may_write(me: Principal, path: str) -> bool:
    """Admins write anywhere; users below their own home and below /Shared."""
    if me.is_admin:
        return True
    home = f"/Users/{me.user_name}"
    return path.startswith(home + "/") or path.startswith("/Shared/")


def may_read(me: Principal, path: str) -> bool:
    """Admins read everything; users their home, /Shared and the roots above them."""
    if me.is_admin or path in ("/", "/Users"):
        return True
    return _within(path, f"/Users/{me.user_name}") or _within(path, "/Shared")


def require_read(me: Principal, path: str) -> None:
    if not may_read(me, path):
        raise denied(f"User {me.user_name} does not have permission to read {path}.")


def require_write(me: Principal, path: str) -> None:
    if not may_write(me, path):
        raise denied(f"User {me.user_name} does not have permission to modify {path}.")


@dataclass
class Exported:
    """An export: its bytes, the API's file_type, a download name and a media type."""

    content: bytes
    file_type: str
    filename: str
    media_type: str


def normalize_path(path: object) -> str:
    """An absolute, normalised workspace path; traversal and junk are refused."""
    if not isinstance(path, str) or not path:
        raise invalid("path is required and must be a string.")
    if "\x00" in path or len(path) > MAX_PATH:
        raise invalid(f"Path ({path[:200]!r}) is not a valid workspace path.")
    if not path.startswith("/"):
        raise invalid(f"Path ({path}) doesn't start with '/'")
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise invalid(f"Path ({path}) may not contain '.' or '..' segments.")
    if parts and parts[0] == WORKSPACE_PREFIX:
        parts = parts[1:]
    return "/" + "/".join(parts)


def parent_of(path: str) -> str:
    return posixpath.dirname(path) or "/"


class WorkspaceTree:
    """Folders and objects stored in the database (one row per path)."""

    def get(self, sess: Session, path: str) -> WorkspaceObject | None:
        if path == "/":
            return None
        return sess.scalar(select(WorkspaceObject).where(WorkspaceObject.path == path))

    def require(self, sess: Session, path: str) -> WorkspaceObject:
        obj = self.get(sess, path)
        if obj is None:
            raise not_found(f"Path ({path}) doesn't exist.")
        return obj

    def is_dir(self, sess: Session, path: str) -> bool:
        if path == "/":
            return True
        obj = self.get(sess, path)
        return obj is not None and obj.object_type == DIRECTORY

    def mkdirs(self, sess: Session, path: str, owner_id: int | None = None) -> WorkspaceObject | None:
        """Create the folder and any missing parents; an existing folder is fine."""
        path = normalize_path(path)
        if path == "/":
            return None
        created = None
        prefix = ""
        for part in path.strip("/").split("/"):
            prefix = f"{prefix}/{part}"
            obj = self.get(sess, prefix)
            if obj is None:
                now = now_ms()
                created = WorkspaceObject(
                    object_id=new_numeric_id(),
                    path=prefix,
                    parent_path=parent_of(prefix),
                    object_type=DIRECTORY,
                    size=0,
                    owner_id=owner_id,
                    created_at=now,
                    modified_at=now,
                )
                sess.add(created)
                sess.flush()
            elif obj.object_type != DIRECTORY:
                raise BrickyardError(
                    "RESOURCE_ALREADY_EXISTS",
                    f"Cannot create directory {path}: {prefix} exists and is a {obj.object_type.lower()}.",
                )
        return created or self.get(sess, path)

    def ensure_roots(self, sess: Session) -> None:
        for folder in ROOT_FOLDERS:
            self.mkdirs(sess, folder)

    def ensure_home(self, sess: Session, user: User) -> None:
        self.ensure_roots(sess)
        self.mkdirs(sess, f"/Users/{user.user_name}", owner_id=user.id)

    def children(self, sess: Session, path: str) -> list[WorkspaceObject]:
        return list(
            sess.scalars(
                select(WorkspaceObject)
                .where(WorkspaceObject.parent_path == path)
                .order_by(WorkspaceObject.path)
            )
        )

    def list(self, sess: Session, path: object) -> list[WorkspaceObject]:
        path = normalize_path(path)
        if path != "/":
            obj = self.require(sess, path)
            if obj.object_type != DIRECTORY:
                return [obj]
        return self.children(sess, path)

    def descendants(self, sess: Session, path: str) -> list[WorkspaceObject]:
        like = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        return list(
            sess.scalars(select(WorkspaceObject).where(WorkspaceObject.path.like(like, escape="\\")))
        )

    def delete(self, sess: Session, path: object, recursive: bool = False) -> None:
        path = normalize_path(path)
        if path == "/" or path in ROOT_FOLDERS:
            raise invalid(f"Path ({path}) is a protected folder and cannot be deleted.")
        obj = self.require(sess, path)
        if obj.object_type == DIRECTORY:
            below = self.descendants(sess, path)
            if below and not recursive:
                raise BrickyardError(
                    "DIRECTORY_NOT_EMPTY", f"Folder ({path}) is not empty; set recursive to delete it."
                )
            for child in below:
                sess.delete(child)
        sess.delete(obj)

    def put(
        self,
        sess: Session,
        path: str,
        object_type: str,
        content: bytes,
        language: str | None,
        owner_id: int | None,
        overwrite: bool,
    ) -> WorkspaceObject:
        """Create or replace a notebook or file; the parent folder must exist."""
        parent = parent_of(path)
        if not self.is_dir(sess, parent):
            if self.get(sess, parent) is None:
                raise not_found(f"The parent folder ({parent}) does not exist.")
            raise invalid(f"The parent ({parent}) is not a folder.")
        now = now_ms()
        existing = self.get(sess, path)
        if existing is not None:
            if existing.object_type == DIRECTORY:
                raise already_exists(f"Path ({path}) already exists and is a folder.")
            if not overwrite:
                raise already_exists(f"Path ({path}) already exists.")
            existing.object_type = object_type
            existing.content = content
            existing.language = language
            existing.size = len(content)
            existing.modified_at = now
            sess.flush()
            return existing
        obj = WorkspaceObject(
            object_id=new_numeric_id(),
            path=path,
            parent_path=parent,
            object_type=object_type,
            language=language,
            content=content,
            size=len(content),
            owner_id=owner_id,
            created_at=now,
            modified_at=now,
        )
        sess.add(obj)
        sess.flush()
        return obj

    # ---- the API, as a principal -----------------------------------------------------

    def mkdirs_as(self, sess: Session, me: Principal, path: object) -> None:
        path = normalize_path(path)
        if not (may_write(me, path) or path in (f"/Users/{me.user_name}", "/Shared")):
            require_write(me, path)
        self.mkdirs(sess, path, owner_id=me.id)

    def status_as(self, sess: Session, me: Principal, path: object) -> WorkspaceObject | None:
        """The object at path (None for the root '/')."""
        path = normalize_path(path)
        require_read(me, path)
        return None if path == "/" else self.require(sess, path)

    def list_as(self, sess: Session, me: Principal, path: object,
                modified_after: int | None = None) -> list[WorkspaceObject]:
        path = normalize_path(path)
        require_read(me, path)
        objects = [o for o in self.list(sess, path) if may_read(me, o.path)]
        if modified_after is not None:
            objects = [o for o in objects if o.object_type != NOTEBOOK or o.modified_at > modified_after]
        return objects

    def delete_as(self, sess: Session, me: Principal, path: object, recursive: bool) -> None:
        path = normalize_path(path)
        require_write(me, path)
        self.delete(sess, path, recursive)

    def import_object(self, sess: Session, me: Principal, path: object, content: bytes,
                      fmt: object = None, language: object = None, overwrite: bool = False) -> str:
        """Import a notebook, a file or a DBC tree at path; returns the path created."""
        path = normalize_path(path)
        require_write(me, path)
        fmt = check_format(fmt)
        language = check_language(language)
        if len(content) > MAX_NOTEBOOK_BYTES:
            raise too_large(f"The content is larger than the {MAX_NOTEBOOK_BYTES} bytes import limit.")
        extension = formats.extension_of(path)
        if fmt == "AUTO":
            fmt = formats.detect(path, content)
            if fmt != "FILE":
                # Databricks names an AUTO-imported notebook without its extension.
                path = normalize_path(formats.strip_extension(path))
        try:
            if fmt in ("FILE", "RAW"):
                self.put(sess, path, FILE, content, None, me.id, overwrite)
            elif fmt == "DBC" or (fmt == "SOURCE" and language is None and formats.is_zip(content)):
                # SOURCE without a language may be a zip of source files: a folder import.
                self._import_archive(sess, me, path, content, fmt)
            else:
                nb = formats.read_notebook(fmt, content, posixpath.basename(path), language, extension)
                self.put(sess, path, NOTEBOOK, formats.dumps(nb), nb.language, me.id, overwrite)
        except formats.NotebookTooLarge as exc:
            raise too_large(str(exc)) from None
        except formats.NotebookFormatError as exc:
            raise invalid(str(exc)) from None
        return path

    def _import_archive(self, sess: Session, me: Principal, path: str, content: bytes, kind: str) -> None:
        entries = formats.read_archive(content, MAX_NOTEBOOK_BYTES, MAX_ARCHIVE_BYTES, kind=kind)
        if self.get(sess, path) is not None:
            # As on Databricks, overwrite does not apply to DBC: an archive may hold a folder.
            raise already_exists(f"Path ({path}) already exists.")
        if len(entries) == 1 and entries[0].path == "" and entries[0].notebook is not None:
            nb = entries[0].notebook
            nb.name = posixpath.basename(path)
            self.put(sess, path, NOTEBOOK, formats.dumps(nb), nb.language, me.id, False)
            return
        parent = parent_of(path)
        if not self.is_dir(sess, parent):
            raise not_found(f"The parent folder ({parent}) does not exist.")
        self.mkdirs(sess, path, owner_id=me.id)
        for entry in entries:
            target = normalize_path(f"{path}/{entry.path}")
            if entry.notebook is None:
                self.mkdirs(sess, target, owner_id=me.id)
            else:
                self.mkdirs(sess, parent_of(target), owner_id=me.id)
                entry.notebook.name = posixpath.basename(target)
                self.put(sess, target, NOTEBOOK, formats.dumps(entry.notebook),
                         entry.notebook.language, me.id, False)

    def export_object(self, sess: Session, me: Principal, path: object, fmt: object = None) -> Exported:
        """Export a notebook, a file or a folder (DBC, or a zip for SOURCE/AUTO)."""
        path = normalize_path(path)
        require_read(me, path)
        fmt = check_format(fmt)
        if path == "/":
            raise invalid("The workspace root cannot be exported; export a folder below it.")
        obj = self.require(sess, path)
        name = posixpath.basename(path)
        if obj.object_type == DIRECTORY:
            return self._export_folder(sess, me, obj, fmt)
        if obj.object_type == FILE:
            if fmt not in ("SOURCE", "AUTO", "RAW"):
                raise invalid(f"The file {path} can only be exported as SOURCE, AUTO or RAW, not {fmt}.")
            media = mimetypes.guess_type(name)[0] or "application/octet-stream"
            return Exported(obj.content or b"", formats.extension_of(name).lstrip("."), name, media)
        nb = self.notebook(obj)
        fmt = "SOURCE" if fmt in ("AUTO", "RAW") else fmt
        if fmt == "DBC":
            content = formats.write_archive("", [(name, nb, obj.object_id)])
        else:
            content = formats.write_notebook(fmt, nb, obj.object_id)
        if len(content) > MAX_NOTEBOOK_BYTES:
            raise too_large(f"The export of {path} is larger than {MAX_NOTEBOOK_BYTES} bytes.")
        file_type = formats.file_type(fmt, nb.language)
        filename = name if name.lower().endswith("." + file_type) else f"{name}.{file_type}"
        return Exported(content, file_type, filename, MEDIA_TYPES[fmt])

    def notebook(self, obj: WorkspaceObject) -> formats.Notebook:
        """The canonical notebook stored at a NOTEBOOK object, named after its path."""
        nb = formats.loads(obj.content or b"{}")
        nb.name = posixpath.basename(obj.path)
        return nb

    def _export_folder(self, sess: Session, me: Principal, folder: WorkspaceObject, fmt: str) -> Exported:
        if fmt not in ("DBC", "SOURCE", "AUTO"):
            raise invalid(f"A folder can only be exported as DBC, SOURCE or AUTO, not {fmt}.")
        root = posixpath.basename(folder.path)
        below = sorted((o for o in self.descendants(sess, folder.path) if may_read(me, o.path)),
                       key=lambda o: o.path)
        if sum(len(o.content or b"") for o in below) > MAX_ARCHIVE_BYTES:
            raise too_large(f"The export of {folder.path} is larger than {MAX_ARCHIVE_BYTES} bytes.")
        rel = {o.path: o.path[len(folder.path) + 1:] for o in below}
        if fmt == "DBC":
            entries = [(rel[o.path], self.notebook(o) if o.object_type == NOTEBOOK else None, o.object_id)
                       for o in below if o.object_type in (DIRECTORY, NOTEBOOK)]
            return Exported(formats.write_archive(root, entries), "dbc", f"{root}.dbc", MEDIA_TYPES["DBC"])
        # SOURCE leaves workspace files out; AUTO includes them (Databricks does the same).
        items = [(rel[o.path], self.notebook(o) if o.object_type == NOTEBOOK else (o.content or b""))
                 for o in below if o.object_type == NOTEBOOK or (o.object_type == FILE and fmt == "AUTO")]
        return Exported(formats.write_source_zip(root, items), "zip", f"{root}.zip", MEDIA_TYPES["ZIP"])


def object_info(obj: WorkspaceObject) -> dict:
    """The ObjectInfo of the Workspace API."""
    info = {
        "object_type": obj.object_type,
        "object_id": obj.object_id,
        "path": obj.path,
        "created_at": obj.created_at,
        "modified_at": obj.modified_at,
    }
    if obj.object_type == NOTEBOOK and obj.language:
        info["language"] = obj.language
    if obj.object_type == FILE:
        info["size"] = obj.size
    if obj.object_type == DIRECTORY and obj.path.startswith("/Users/") and obj.path.count("/") == 2:
        info["resource_id"] = str(obj.object_id)
    return info
