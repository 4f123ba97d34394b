"""MLflow artifacts in DBFS: URI forms, path safety, and the repository the server reads with.

One folder serves both client modes. The canonical form stored in MLflow's database is
`dbfs:/databricks/mlflow-tracking/<rest>` (what Databricks clients expect); clients on an
http tracking URI see `mlflow-artifacts:/<rest>`, which MLflow's artifact proxy maps to the
same DBFS folder.
"""
from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit

from brickyard.errors import invalid
from brickyard.storage.dbfs import MLFLOW_DBFS_ROOT, DbfsStorage, normalize

DBFS_PREFIX = "dbfs:" + MLFLOW_DBFS_ROOT  # dbfs:/databricks/mlflow-tracking
PROXY_SCHEME = "mlflow-artifacts:"
PROXY_ROUTE = "/api/2.0/mlflow-artifacts/artifacts"
DECODE_ROUNDS = 4
# `;` starts a path parameter and `#` a fragment in URLs: both have been used to smuggle
# traversal past MLflow's checks (CVE-2023-6909, CVE-2024-1558), so artifact paths may not hold them.
_FORBIDDEN = ("\x00", "\\", ";", "#")


def check_artifact_path(value: str, what: str = "artifact path", relative: bool = True) -> None:
    """Refuse `..` segments, `;`, `#`, backslashes and NULs, also when percent-encoded (repeatedly)."""
    seen = value
    for _ in range(DECODE_ROUNDS + 1):
        if any(ch in seen for ch in _FORBIDDEN):
            raise invalid(f"Invalid {what} {value!r}: ';', '#', backslashes and NUL bytes are not allowed.")
        if any(part == ".." for part in seen.split("/")):
            raise invalid(f"Invalid {what} {value!r}: '..' segments are not allowed.")
        if relative and seen.startswith("/"):
            raise invalid(f"Invalid {what} {value!r}: it must be relative.")
        decoded = unquote(seen)
        if decoded == seen:
            return
        seen = decoded
    raise invalid(f"Invalid {what} {value!r}: too many levels of percent-encoding.")


def _store_path(rest: str, original: str) -> str:
    """The DBFS path of `<artifact store>/<rest>`; refuses anything that could leave the store."""
    check_artifact_path(rest, "artifact location", relative=False)
    path = normalize(MLFLOW_DBFS_ROOT + "/" + rest.lstrip("/"))
    if path != MLFLOW_DBFS_ROOT and not path.startswith(MLFLOW_DBFS_ROOT + "/"):
        raise invalid(f"{original!r} is not inside the MLflow artifact store ({DBFS_PREFIX}/).")
    return path


def store_dbfs_path(uri: str) -> str:
    """The DBFS path behind an artifact-store URI, in any of its accepted spellings.

    Accepted: dbfs:/databricks/mlflow-tracking/..., mlflow-artifacts:/...,
    http(s)://<host>/api/2.0/mlflow-artifacts/artifacts/... . Everything else is refused.
    """
    if not isinstance(uri, str) or not uri:
        raise invalid("An artifact location is required.")
    check_artifact_path(uri, "artifact location", relative=False)
    lowered = uri.lower()
    if lowered.startswith("dbfs:"):
        path = uri[5:]
        if path.startswith("//"):
            raise invalid(f"{uri!r}: DBFS URIs with a profile or host are not accepted here.")
        canon = normalize(path)
        if canon != MLFLOW_DBFS_ROOT and not canon.startswith(MLFLOW_DBFS_ROOT + "/"):
            raise invalid(f"{uri!r} is not inside the MLflow artifact store ({DBFS_PREFIX}/).")
        return canon
    if lowered.startswith(PROXY_SCHEME):
        parts = urlsplit(uri)
        if parts.query or parts.fragment:
            raise invalid(f"{uri!r}: query strings are not allowed in an artifact location.")
        return _store_path(parts.path, uri)
    if lowered.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        if parts.query or parts.fragment or PROXY_ROUTE + "/" not in parts.path + "/":
            raise invalid(f"{uri!r} is not inside the MLflow artifact store ({DBFS_PREFIX}/).")
        return _store_path(parts.path.split(PROXY_ROUTE, 1)[1], uri)
    raise invalid(f"{uri!r} is not inside the MLflow artifact store ({DBFS_PREFIX}/); "
                  "artifacts live in DBFS under that folder.")


def canonical_uri(uri: str) -> str:
    """The dbfs: form of an artifact-store URI."""
    return "dbfs:" + store_dbfs_path(uri)


_DBFS_STORE_URI = re.compile(r"^dbfs:/databricks/mlflow-tracking(?=/|$)")


def proxied_uri(uri: str) -> str:
    """The mlflow-artifacts: form clients on an http tracking URI can use (others unchanged)."""
    if isinstance(uri, str) and _DBFS_STORE_URI.match(uri):
        rest = uri[len(DBFS_PREFIX):].lstrip("/")
        return f"{PROXY_SCHEME}/{rest}"
    return uri


class StoreArtifacts:
    """Artifact repositories over the MLflow folder of a workspace's DBFS."""

    def __init__(self, storage: DbfsStorage):
        self.storage = storage
        self._destination = None

    def local_dir(self, dbfs_path: str) -> str:
        """The local folder of a DBFS path in the store; symlinks may not lead out of DBFS."""
        return str(self.storage.local(dbfs_path))

    def destination(self):
        """What `mlflow-artifacts:/<rest>` resolves to: the store's root folder."""
        if self._destination is None:
            from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

            root = self.local_dir(MLFLOW_DBFS_ROOT)
            os.makedirs(root, exist_ok=True)
            self._destination = LocalArtifactRepository(root)
        return self._destination

    def repository(self, uri: str):
        """A repository for a stored location; only the artifact store can be reached."""
        from mlflow.exceptions import MlflowException
        from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

        from brickyard.errors import BrickyardError

        try:
            path = store_dbfs_path(uri)
        except BrickyardError as exc:
            raise MlflowException.invalid_parameter_value(exc.message) from None
        return LocalArtifactRepository(self.local_dir(path))
