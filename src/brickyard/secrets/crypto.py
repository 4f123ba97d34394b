"""Keys of the workspace: the master key, data keys wrapped by it, AEAD and keyed hashes.

The master key (a 0600 file in the home, or BRICKYARD_MASTER_KEY) never encrypts data
directly: it wraps random data keys kept in the ``meta`` table. Rotating the master key
re-wraps those data keys and re-encrypts every secret, so token hashes and signed URLs
stay valid across a rotation.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets as pysecrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from brickyard.errors import BrickyardError

NONCE_BYTES = 12
DATA_KEY_NAMES = ("token_hash_key", "url_signing_key", "secret_data_key")


def decode_key(text: str) -> bytes:
    """Decode a base64 (standard or urlsafe) or hex 32-byte key."""
    text = text.strip()
    for decoder in (base64.urlsafe_b64decode, base64.b64decode, bytes.fromhex):
        try:
            raw = decoder(text + ("=" * (-len(text) % 4)) if decoder is not bytes.fromhex else text)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == 32:
            return raw
    raise ValueError("the master key must be 32 bytes, base64 or hex encoded")


def encode_key(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def load_or_create_master_key(path: Path, override: str | None) -> bytes:
    """Return the master key from the override or the key file, creating the file (0600)."""
    if override:
        return decode_key(override)
    if path.exists():
        return decode_key(path.read_text())
    raw = os.urandom(32)
    write_private_file(path, encode_key(raw) + "\n")
    return raw


def write_private_file(path: Path, text: str) -> None:
    """Write a 0600 file atomically."""
    tmp = path.with_name(f".{path.name}.{pysecrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt; the result is nonce || ciphertext || tag."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError) as exc:
        # Never include the blob or the key in the message.
        raise BrickyardError(
            "INTERNAL_ERROR", "A stored value could not be decrypted with the master key."
        ) from exc


def secret_aad(scope: str, key: str) -> bytes:
    return f"secret\x00{scope}\x00{key}".encode()


class Keyring:
    """The unwrapped data keys of a running workspace."""

    def __init__(self, master_key: bytes, data_keys: dict[str, bytes]):
        self.master_key = master_key
        self._keys = data_keys

    @staticmethod
    def wrap(master_key: bytes, name: str, data_key: bytes) -> str:
        return base64.b64encode(seal(master_key, data_key, f"datakey\x00{name}".encode())).decode()

    @staticmethod
    def unwrap(master_key: bytes, name: str, wrapped: str) -> bytes:
        return unseal(master_key, base64.b64decode(wrapped), f"datakey\x00{name}".encode())

    def key(self, name: str) -> bytes:
        return self._keys[name]

    def hash_token(self, token: str) -> str:
        """Keyed hash of a personal access token (what the store keeps)."""
        return hmac.new(self._keys["token_hash_key"], token.encode(), hashlib.sha256).hexdigest()

    def sign(self, message: str) -> str:
        digest = hmac.new(self._keys["url_signing_key"], message.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)

    def encrypt(self, plaintext: bytes, aad: bytes) -> bytes:
        return seal(self._keys["secret_data_key"], plaintext, aad)

    def decrypt(self, blob: bytes, aad: bytes) -> bytes:
        return unseal(self._keys["secret_data_key"], blob, aad)
