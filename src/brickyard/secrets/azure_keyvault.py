"""Azure Key Vault-backed scopes: values read live from the vault, read-only through our API.

Key mapping: Key Vault secret names allow only letters, digits and '-', while our keys may
also hold '_' and '.'. A key is looked up as the Key Vault name with every '_' and '.'
replaced by '-' (so `db_password` and `db.password` both read the vault secret
`db-password`); listing returns the vault's own names, which are always valid keys.
"""
from __future__ import annotations

import logging
import threading
import time
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from brickyard.errors import BrickyardError, denied, invalid, not_found
from brickyard.secrets.base import KeyInfo, ScopeRef, SecretBackend
from brickyard.settings import Settings

log = logging.getLogger(__name__)
KV_NAME_MAX = 127


def kv_secret_name(key: str) -> str:
    """The Key Vault secret name our key reads (see the module docstring)."""
    name = key.replace("_", "-").replace(".", "-")
    if len(name) > KV_NAME_MAX:
        raise invalid(f"Key {key} is too long for Azure Key Vault (at most {KV_NAME_MAX} characters).")
    return name


def vault_url(dns_name: str) -> str:
    """Normalise a scope's dns_name (`https://x.vault.azure.net/` or `x.vault.azure.net`)."""
    text = dns_name.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise invalid(
            f"backend_azure_keyvault.dns_name {dns_name!r} must be a Key Vault URI such as "
            "https://myvault.vault.azure.net/ (https only)."
        )
    return f"https://{parts.netloc}"


class StaticTokenCredential:
    """A fixed bearer token, for Key Vault emulators that accept any token."""

    def __init__(self, token: str):
        self._token = token

    def get_token(self, *scopes: str, **kwargs):  # noqa: ANN003, ANN201
        from azure.core.credentials import AccessToken

        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


def make_credential(settings: Settings):  # noqa: ANN201
    """The Azure credential chosen by `akv_credential`."""
    kind = settings.akv_credential
    if kind == "auto":
        kind = "client_secret" if settings.akv_client_secret else "default"
    authority = {"authority": settings.akv_authority_host} if settings.akv_authority_host else {}
    if kind == "static_token":
        return StaticTokenCredential(settings.akv_static_token)
    if kind == "client_secret":
        from azure.identity import ClientSecretCredential

        if not (settings.akv_tenant_id and settings.akv_client_id and settings.akv_client_secret):
            raise BrickyardError(
                "INVALID_STATE",
                "Azure Key Vault credential 'client_secret' needs BRICKYARD_AKV_TENANT_ID, "
                "BRICKYARD_AKV_CLIENT_ID and BRICKYARD_AKV_CLIENT_SECRET.",
            )
        return ClientSecretCredential(
            settings.akv_tenant_id, settings.akv_client_id, settings.akv_client_secret, **authority
        )
    from azure.identity import DefaultAzureCredential

    extra = {}
    if settings.akv_client_id:
        extra["managed_identity_client_id"] = settings.akv_client_id
    return DefaultAzureCredential(**authority, **extra)


class AzureKeyVaultBackend(SecretBackend):
    backend_type = "AZURE_KEYVAULT"
    display_name = "Azure Key Vault"
    read_only = True

    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._credential = None
        self._clients: dict[str, object] = {}

    def _client(self, scope: ScopeRef):  # noqa: ANN202
        url = vault_url(scope.dns_name or "")
        with self._lock:
            client = self._clients.get(url)
            if client is None:
                client = self._clients[url] = self._new_client(url)
            return client

    def _new_client(self, url: str):  # noqa: ANN202
        from azure.keyvault.secrets import SecretClient

        s = self.settings
        if self._credential is None:
            self._credential = make_credential(s)
        options: dict = {
            "verify_challenge_resource": not s.akv_disable_challenge_resource_verification,
            "connection_timeout": s.akv_timeout_seconds,
            "read_timeout": s.akv_timeout_seconds,
            "retry_total": s.akv_retry_total,
        }
        if s.akv_api_version:
            from azure.keyvault.secrets import ApiVersion

            supported = [v.value for v in ApiVersion]
            if s.akv_api_version not in supported:
                raise BrickyardError(
                    "INVALID_STATE",
                    f"BRICKYARD_AKV_API_VERSION {s.akv_api_version!r} is not an API version that "
                    f"azure-keyvault-secrets supports ({', '.join(supported)}).",
                )
            options["api_version"] = s.akv_api_version
        if not s.akv_verify_tls:
            options["connection_verify"] = False
        elif s.akv_ca_bundle:
            options["connection_verify"] = s.akv_ca_bundle
        try:
            return SecretClient(vault_url=url, credential=self._credential, **options)
        except (NotImplementedError, ValueError) as exc:
            raise BrickyardError("INVALID_STATE", f"Azure Key Vault client settings are not valid: {exc}") from None

    def get(self, sess: Session, scope: ScopeRef, key: str) -> bytes:
        name = kv_secret_name(key)
        client = self._client(scope)
        try:
            secret = client.get_secret(name)
        except Exception as exc:  # noqa: BLE001 - every Azure failure becomes a Databricks error
            raise self._translate(exc, scope, key) from None
        return (secret.value or "").encode("utf-8")

    def list_keys(self, sess: Session, scope: ScopeRef) -> list[KeyInfo]:
        client = self._client(scope)
        try:
            # Disabled secrets cannot be read, so they are not listed.
            items = [KeyInfo(p.name, _millis(p)) for p in client.list_properties_of_secrets() if p.enabled is not False]
        except Exception as exc:  # noqa: BLE001
            raise self._translate(exc, scope, None) from None
        return sorted(items, key=lambda k: k.key)

    def _translate(self, exc: Exception, scope: ScopeRef, key: str | None) -> BrickyardError:
        """Map an Azure SDK failure to a Databricks error; messages never carry values."""
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        where = f"Azure Key Vault {vault_url(scope.dns_name or '')} (scope {scope.name})"
        if isinstance(exc, BrickyardError):
            return exc
        if isinstance(exc, ResourceNotFoundError) and key is not None:
            return not_found(f"Secret {key} does not exist in scope {scope.name}.")
        detail = _first_line(getattr(exc, "message", None) or str(exc))
        log.warning("%s failed: %s: %s", where, type(exc).__name__, detail)
        if isinstance(exc, ClientAuthenticationError) or (
            isinstance(exc, HttpResponseError) and exc.status_code == 403
        ):
            return denied(f"{where} refused access: {detail}")
        if isinstance(exc, HttpResponseError) and exc.status_code and 400 <= exc.status_code < 500:
            return BrickyardError("MALFORMED_REQUEST", f"{where} answered {exc.status_code}: {detail}")
        if isinstance(exc, (ServiceRequestError, ServiceResponseError, HttpResponseError)):
            return BrickyardError("IO_ERROR", f"Could not read from {where}: {detail}", http_status=502)
        if isinstance(exc, ValueError) and "challenge" in str(exc).lower():
            return BrickyardError(
                "IO_ERROR",
                f"{where} sent an authentication challenge for another resource ({detail}); for a "
                "local emulator set BRICKYARD_AKV_DISABLE_CHALLENGE_RESOURCE_VERIFICATION=true.",
                http_status=502,
            )
        return BrickyardError("IO_ERROR", f"Could not read from {where}: {type(exc).__name__}", http_status=502)

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                try:
                    client.close()
                except Exception:  # noqa: BLE001 - best effort at shutdown
                    pass
            self._clients.clear()
            if self._credential is not None:
                try:
                    self._credential.close()
                except Exception:  # noqa: BLE001
                    pass
                self._credential = None


def _millis(props) -> int:  # noqa: ANN001
    when = props.updated_on or props.created_on
    return int(when.timestamp() * 1000) if when else 0


def _first_line(text: str, limit: int = 300) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line[:limit]
