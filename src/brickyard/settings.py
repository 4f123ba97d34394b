"""One typed settings object; every path derives from the home folder."""
from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from brickyard.store.urls import is_postgres, jdbc_postgres, sqlalchemy_url

MLFLOW_SCHEMA = "mlflow"  # MLflow's tables in the workspace's PostgreSQL
METASTORE_SCHEMA = "hive"  # the Hive metastore's tables in the workspace's PostgreSQL


class Settings(BaseSettings):
    """Workspace settings, read from BRICKYARD_* variables (and keyword arguments)."""

    model_config = SettingsConfigDict(env_prefix="BRICKYARD_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".brickyard")
    host: str = "127.0.0.1"
    port: int = 8700
    # SQLAlchemy URL of the metadata store; empty means SQLite in the home. A PostgreSQL URL
    # (postgresql://user:password@host:5432/db; plain postgresql:// uses psycopg 3) puts the
    # workspace's tables in its default schema, MLflow's in schema `mlflow` and the Hive
    # metastore's in schema `hive` of that database.
    database_url: str = ""
    admin_user: str = "admin"
    # Base64 (urlsafe or standard) 32-byte key; overrides the key file in the home.
    master_key: str | None = None
    bootstrap_token: str | None = None
    # Keep one pre-started kernel per running cluster for the next execution context.
    context_spares: bool = True
    # Public base URL for links (signed URLs); derived from host/port when empty.
    public_url: str = ""
    # Azure Key Vault client options, so that a local emulator works.
    akv_tenant_id: str = ""
    akv_client_id: str = ""
    akv_client_secret: str = ""
    akv_api_version: str = ""
    akv_verify_tls: bool = True
    akv_ca_bundle: str = ""
    akv_disable_challenge_resource_verification: bool = False
    # Which Azure credential reads Key Vault secrets: auto (client_secret when a client
    # secret is set, else default), default (DefaultAzureCredential: environment, managed
    # identity, Azure CLI, ...), client_secret (tenant/client id + secret), static_token
    # (akv_static_token sent as the bearer token; for emulators such as Lowkey Vault).
    akv_credential: str = "auto"
    akv_static_token: str = ""
    # Azure AD authority host for sovereign clouds (e.g. login.microsoftonline.us); empty = public.
    akv_authority_host: str = ""
    akv_timeout_seconds: int = 30
    akv_retry_total: int = 2
    # DBFS streaming handles expire after this many idle seconds.
    dbfs_handle_idle_seconds: int = 600
    max_request_bytes: int = 512 * 1024 * 1024
    log_level: str = "info"

    @field_validator("home", mode="before")
    @classmethod
    def _expand_home(cls, value: object) -> object:
        if isinstance(value, str):
            return Path(value).expanduser()
        if isinstance(value, Path):
            return value.expanduser()
        return value

    @field_validator("akv_credential")
    @classmethod
    def _check_akv_credential(cls, value: str) -> str:
        kinds = ("auto", "default", "client_secret", "static_token")
        if value not in kinds:
            raise ValueError(f"akv_credential must be one of {', '.join(kinds)}")
        return value

    @field_validator("port")
    @classmethod
    def _check_port(cls, value: int) -> int:
        if not 0 <= value <= 65535:
            raise ValueError("port must be between 0 and 65535")
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                if not value or "/" in value or " " in value:
                    raise ValueError(f"not a host name or address: {value!r}") from None
        return value

    @property
    def db_url(self) -> str:
        return sqlalchemy_url(self.database_url) if self.database_url else f"sqlite:///{self.home / 'workspace.db'}"

    @property
    def uses_postgres(self) -> bool:
        return is_postgres(self.db_url)

    @property
    def metastore_jdbc(self) -> tuple[str, str, str]:
        """(JDBC URL, user, password) of the Hive metastore's database: schema `hive` of the
        workspace's PostgreSQL, or ("", "", "") for the metastore's own Derby database."""
        return jdbc_postgres(self.db_url, METASTORE_SCHEMA) if self.uses_postgres else ("", "", "")

    @property
    def dbfs_root(self) -> Path:
        return self.home / "dbfs"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def master_key_file(self) -> Path:
        return self.home / "master.key"

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"
