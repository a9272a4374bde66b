"""cls_lock's requests and replies in Ceph's encoding (src/cls/lock/cls_lock_ops.h), for the
conversion locks of cacheraw.ceph.locks: the binding's own lock calls cannot renew with
MUST_RENEW, set a duration finer than a second, assert a lock, or count the lockers."""

from __future__ import annotations

import struct

from cacheraw import exception

LOCK_NAME = "cacheraw"
LOCK_DESCRIPTION = "cacheraw conversion"
# cls_lock: renew the lock only when this cookie still holds it (ENOENT otherwise), never
# take it anew as MAY_RENEW (0x1) would after it was lost.
LOCK_FLAG_MUST_RENEW = 0x2
LOCK_TYPE_EXCLUSIVE = 1


def encode_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<I", len(data)) + data


def encoded(*fields: bytes) -> bytes:
    """Ceph's versioned encoding (ENCODE_START(1, 1)) of the fields, already encoded."""
    body = b"".join(fields)
    return struct.pack("<BBI", 1, 1, len(body)) + body


def lock_op(cookie: str, duration: float, flags: int = 0) -> bytes:
    """cls_lock's lock input (cls_lock_lock_op): the exclusive lock LOCK_NAME for ``cookie``,
    for ``duration`` seconds (utime_t: seconds, nanoseconds)."""
    seconds = int(duration)
    return encoded(encode_string(LOCK_NAME), struct.pack("<B", LOCK_TYPE_EXCLUSIVE),
                   encode_string(cookie), encode_string(""), encode_string(LOCK_DESCRIPTION),
                   struct.pack("<IIB", seconds, int((duration - seconds) * 1e9), flags))


def assert_locked_op(cookie: str) -> bytes:
    """cls_lock's assert_locked input: the exclusive lock LOCK_NAME held with ``cookie``."""
    return encoded(encode_string(LOCK_NAME), struct.pack("<B", LOCK_TYPE_EXCLUSIVE),
                   encode_string(cookie), encode_string(""))


def get_info_op() -> bytes:
    return encoded(encode_string(LOCK_NAME))


def lockers_in_info(reply: bytes) -> int:
    """The number of live lockers in cls_lock's get_info reply (the OSD drops the expired)."""
    if len(reply) < 10:
        raise exception.CephError("short reply from cls_lock get_info")
    return struct.unpack_from("<I", reply, 6)[0]
