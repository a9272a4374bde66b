"""cacheraw.ceph.cls_lock: cls_lock's requests in Ceph's encoding (src/cls/lock/cls_lock_ops.h)
and the count of lockers read from its get_info reply."""

import struct

import pytest

from cacheraw import exception
from cacheraw.ceph import cls_lock as locks


def test_a_string_is_its_length_then_its_bytes():
    assert locks.encode_string("ab") == b"\x02\x00\x00\x00ab"
    assert locks.encode_string("") == b"\x00\x00\x00\x00"


def test_the_versioned_encoding_wraps_the_fields_with_their_length():
    assert locks.encoded(b"xy", b"z") == b"\x01\x01\x03\x00\x00\x00xyz"


def test_the_lock_request_names_the_exclusive_lock_its_cookie_and_duration():
    op = locks.lock_op("cookie-1", 12.5, locks.LOCK_FLAG_MUST_RENEW)
    version, compat, length = struct.unpack_from("<BBI", op)
    assert (version, compat, length) == (1, 1, len(op) - 6)
    body = op[6:]
    assert body.startswith(locks.encode_string(locks.LOCK_NAME) + b"\x01"
                           + locks.encode_string("cookie-1") + locks.encode_string("")
                           + locks.encode_string(locks.LOCK_DESCRIPTION))
    assert struct.unpack("<IIB", body[-9:]) == (12, 500000000, locks.LOCK_FLAG_MUST_RENEW)


def test_assert_locked_names_the_cookie_and_get_info_the_lock():
    assert locks.assert_locked_op("c")[6:] == (locks.encode_string(locks.LOCK_NAME) + b"\x01"
                                               + locks.encode_string("c")
                                               + locks.encode_string(""))
    assert locks.get_info_op()[6:] == locks.encode_string(locks.LOCK_NAME)


def test_the_lockers_are_counted_from_get_info_and_a_short_reply_is_an_error():
    assert locks.lockers_in_info(b"\x01\x01\x00\x00\x00\x00" + struct.pack("<I", 1)) == 1
    assert locks.lockers_in_info(b"\x01\x01\x00\x00\x00\x00" + struct.pack("<I", 0)) == 0
    with pytest.raises(exception.CephError, match="short reply"):
        locks.lockers_in_info(b"\x01\x01")
