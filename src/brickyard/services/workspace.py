"""The workspace tree: folders, notebooks and files under /Users and /Shared."""
from __future__ import annotations

import posixpath

from sqlalchemy import select
from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, already_exists, invalid, not_found
from brickyard.services.common import new_numeric_id, now_ms
from brickyard.store.models import User, WorkspaceObject

DIRECTORY = "DIRECTORY"
NOTEBOOK = "NOTEBOOK"
FILE = "FILE"
ROOT_FOLDERS = ("/Users", "/Shared")
MAX_PATH = 4096


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
    if obj.object_type != DIRECTORY:
        info["size"] = obj.size
    if obj.object_type == DIRECTORY and obj.path.startswith("/Users/") and obj.path.count("/") == 2:
        info["resource_id"] = str(obj.object_id)
    return info
