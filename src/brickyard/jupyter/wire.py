"""The framing of Jupyter messages on the kernel WebSocket, shared by the relay and the proxy.

One binary WebSocket message is one ZMQ multipart message of a channel: the channel name, then
the routing identities, the ``<IDS|MSG>`` delimiter and the message parts **without** the HMAC
signature; each side signs with the key of the ZMQ peer it talks to.
"""
from __future__ import annotations

import hmac
import struct

DELIM = b"<IDS|MSG>"
CHANNELS = ("shell", "control", "stdin", "iopub")
_LEN = struct.Struct("!I")


class WireError(ValueError):
    """A frame that does not follow the protocol."""


def pack(channel: str, frames: list[bytes]) -> bytes:
    out = [_LEN.pack(len(frames) + 1)]
    for frame in [channel.encode()] + [bytes(f) for f in frames]:
        out += [_LEN.pack(len(frame)), frame]
    return b"".join(out)


def unpack(data: bytes) -> tuple[str, list[bytes]]:
    view = memoryview(data)
    try:
        (count,), pos = _LEN.unpack_from(view, 0), _LEN.size
        frames = []
        for _ in range(count):
            (size,) = _LEN.unpack_from(view, pos)
            pos += _LEN.size
            if pos + size > len(view):
                raise WireError("truncated frame")
            frames.append(bytes(view[pos:pos + size]))
            pos += size
    except struct.error:
        raise WireError("truncated frame") from None
    if not frames or pos != len(view):
        raise WireError("bad frame count")
    channel = frames[0].decode("ascii", "replace")
    if channel not in CHANNELS:
        raise WireError(f"unknown channel {channel!r}")
    return channel, frames[1:]


def unsign(frames: list[bytes], session) -> list[bytes]:  # noqa: ANN001
    """Drop (after checking, when `session` has a key) the signature of a signed ZMQ message."""
    try:
        at = frames.index(DELIM)
    except ValueError:
        raise WireError("no <IDS|MSG> delimiter") from None
    sig, parts = frames[at + 1], frames[at + 2:]
    if len(parts) < 4:
        raise WireError("too few message parts")
    if session.auth is not None and not hmac.compare_digest(sig, session.sign(parts[:4])):
        raise WireError("invalid signature")
    return frames[:at + 1] + parts


def sign(frames: list[bytes], session) -> list[bytes]:  # noqa: ANN001
    """Insert the signature of `session`'s key into an unsigned message."""
    try:
        at = frames.index(DELIM)
    except ValueError:
        raise WireError("no <IDS|MSG> delimiter") from None
    parts = frames[at + 1:]
    if len(parts) < 4:
        raise WireError("too few message parts")
    return frames[:at + 1] + [session.sign(parts[:4])] + parts
