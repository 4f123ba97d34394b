"""The user side's view of the workspace: its URL and the user's token, and a small REST client."""
from __future__ import annotations

import configparser
import json
import os
from dataclasses import dataclass
from pathlib import Path

import requests

DEFAULT_PROFILES = ("brickyard", "DEFAULT")


class ApiError(Exception):
    """An error answer of the workspace ({"error_code", "message"} and the HTTP status)."""

    def __init__(self, status: int, error_code: str, message: str):
        super().__init__(f"{error_code}: {message}")
        self.status, self.error_code, self.message = status, error_code, message


@dataclass(frozen=True)
class Credentials:
    host: str
    token: str

    def __repr__(self) -> str:  # the token never reaches logs
        return f"Credentials(host={self.host!r}, token=***)"


def resolve(host: str | None = None, token: str | None = None, credentials_file: str | None = None,
            profile: str | None = None) -> Credentials:
    """Explicit values, else a credentials file, else DATABRICKS_HOST/TOKEN, else ~/.databrickscfg."""
    if credentials_file:
        data = json.loads(Path(credentials_file).read_text())
        host, token = host or data.get("host"), token or data.get("token")
    host = host or os.environ.get("DATABRICKS_HOST")
    token = token or os.environ.get("DATABRICKS_TOKEN")
    if not (host and token):
        cfg_host, cfg_token = _from_databrickscfg(profile or os.environ.get("DATABRICKS_CONFIG_PROFILE"))
        host, token = host or cfg_host, token or cfg_token
    if not host or not token:
        raise ValueError("No workspace credentials: pass --host and --token, set DATABRICKS_HOST and "
                         "DATABRICKS_TOKEN, or add a [brickyard] profile to ~/.databrickscfg.")
    if "://" not in host:
        host = "https://" + host  # as the SDK does
    return Credentials(host.rstrip("/"), token)


def _from_databrickscfg(profile: str | None) -> tuple[str | None, str | None]:
    path = Path(os.environ.get("DATABRICKS_CONFIG_FILE", Path.home() / ".databrickscfg"))
    if not path.exists():
        return None, None
    parser = configparser.ConfigParser()
    parser.read(path)
    for name in [profile] if profile else DEFAULT_PROFILES:
        if name == "DEFAULT" or parser.has_section(name):
            section = parser[name]
            if section.get("host") and section.get("token"):
                return section.get("host"), section.get("token")
    return None, None


def write_credentials(path: Path, creds: Credentials) -> None:
    """Store the credentials for kernels and the contents manager, readable by the user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"host": creds.host, "token": creds.token}, fh)
    os.replace(tmp, path)


class Api:
    """Calls to the workspace's REST API with the user's token."""

    def __init__(self, creds: Credentials, timeout: float = 60):
        self.creds = creds
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {creds.token}"

    def call(self, method: str, path: str, /, **fields: object) -> dict:
        kw = {"params": fields} if method == "GET" else {"json": fields}
        resp = self.http.request(method, self.creds.host + path, timeout=self.timeout, **kw)
        if resp.status_code >= 400:
            try:
                body = resp.json()
            except ValueError:
                body = {}
            raise ApiError(resp.status_code, body.get("error_code", f"HTTP_{resp.status_code}"),
                           body.get("message", resp.text[:500]))
        return resp.json() if resp.content else {}

    def ws_url(self, path: str) -> str:
        host = self.creds.host
        return ("wss://" + host[len("https://"):] if host.startswith("https://")
                else "ws://" + host[len("http://"):]) + path
