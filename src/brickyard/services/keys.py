"""Master-key rotation: re-wrap the data keys and re-encrypt every stored secret."""
from __future__ import annotations

import os

from sqlalchemy import select

from brickyard.context import _recover_rotation, lock_home, prepare_home, release_home
from brickyard.secrets.crypto import (
    DATA_KEY_NAMES,
    Keyring,
    encode_key,
    load_or_create_master_key,
    secret_aad,
    write_private_file,
)
from brickyard.settings import Settings
from brickyard.store.db import Store, migrate
from brickyard.store.models import Meta, Secret, SecretScope


def rotate_master_key(settings: Settings) -> int:
    """Rotate; returns how many stored values were re-encrypted.

    The new key is written to ``master.key.new`` before the database commits and renamed
    over ``master.key`` after, so a crash in between is recovered on the next start.
    """
    prepare_home(settings)
    lock = lock_home(settings, "rotate the master key")  # a running workspace keeps the old keys in memory
    try:
        return _rotate(settings)
    finally:
        release_home(lock)


def _rotate(settings: Settings) -> int:
    old_master = load_or_create_master_key(settings.master_key_file, settings.master_key)
    pending = settings.master_key_file.with_name("master.key.new")
    store = Store(settings.db_url)
    migrate(store.engine)
    count = 0
    wrote_pending = False
    try:
        # A rotation that stopped between its commit and the rename left the only copy of
        # the key in use in master.key.new: finish it before writing a new pending key.
        with store.session() as sess:
            old_meta = {m.key: m.value for m in sess.scalars(select(Meta))}
        old_master = _recover_rotation(settings, old_master, old_meta)
        new_master = os.urandom(32)
        write_private_file(pending, encode_key(new_master) + "\n")
        wrote_pending = True
        with store.session() as sess:
            meta = {m.key: m for m in sess.scalars(select(Meta))}
            old_keys = {n: Keyring.unwrap(old_master, n, meta[n].value) for n in DATA_KEY_NAMES if n in meta}
            old_ring = Keyring(old_master, old_keys)
            new_keys = dict(old_keys)
            new_keys["secret_data_key"] = os.urandom(32)
            new_ring = Keyring(new_master, new_keys)
            rows = sess.execute(select(Secret, SecretScope.name).join(SecretScope, Secret.scope_id == SecretScope.id))
            for secret, scope_name in rows:
                aad = secret_aad(scope_name, secret.key)
                secret.ciphertext = new_ring.encrypt(old_ring.decrypt(secret.ciphertext, aad), aad)
                count += 1
            for extra in _extra_reencrypters():
                count += extra(sess, old_ring, new_ring)
            for name, key in new_keys.items():
                if name in meta:
                    meta[name].value = Keyring.wrap(new_master, name, key)
                else:
                    sess.add(Meta(key=name, value=Keyring.wrap(new_master, name, key)))
    except BaseException:
        if wrote_pending:
            pending.unlink(missing_ok=True)
        raise
    finally:
        store.dispose()
    os.replace(pending, settings.master_key_file)
    return count


def _extra_reencrypters() -> list:
    """Other encrypted values (e.g. mount configs) register here as they are added."""
    from brickyard.services import mounts

    return [mounts.reencrypt]
