"""cacheraw.ceph.locks: the fencing decisions of a take (the pool itself is in
tests/functional/test_ceph_locks.py)."""

import pytest

from cacheraw import exception
from cacheraw.ceph import locks


def test_the_lock_object_of_an_image_is_named_after_it():
    assert locks.RadosLocks.__new__(locks.RadosLocks)._object("id-1") == "cacheraw.lock.id-1"


class StubConnection:
    """A connection whose client has ``address`` (None: get_addrs() could not be parsed); its
    pool is never reached by these tests."""

    def __init__(self, address):
        self._address = address
        self.retry = lambda func, *args, **kwargs: func(*args, **kwargs)

    def address(self):
        return self._address

    def addresses(self):
        return "[v2:[fd00::1]:0/7]" if self._address else "unknown address"

    def shut_out(self):
        pass

    def ioctx(self):
        raise AssertionError("the pool is not touched")


def _stub_locks(address, previous):
    """RadosLocks on a StubConnection whose lock object holds ``previous``'s record; what it
    blocklists, records and releases is kept in its lists."""
    rados_locks = locks.RadosLocks(StubConnection(address), 60)
    rados_locks.blocklisted, rados_locks.recorded, rados_locks.released = [], [], []
    rados_locks._take = lambda image_id, cookie, duration: None
    rados_locks.holder_record = lambda image_id: previous
    rados_locks._blocklist_address = rados_locks.blocklisted.append
    rados_locks.release = lambda image_id, cookie, remove=True: rados_locks.released.append(
        (cookie, remove))
    return rados_locks


def test_a_holder_whose_address_cannot_be_told_does_not_take_the_lock():
    rados_locks = _stub_locks(None, None)
    with pytest.raises(exception.CephError, match="address"):
        rados_locks.take("image-1", "cookie-a", 30)
    assert rados_locks.released == [("cookie-a", False)]  # given back at once


def test_an_expired_lease_whose_record_has_no_address_is_not_taken_over():
    previous = {"cookie": "cookie-old", "host": "h", "pid": 1, "addr": None}
    rados_locks = _stub_locks("[fd00::1]:0/7", previous)
    rados_locks._record_holder = lambda image_id, cookie: rados_locks.recorded.append(cookie)
    with pytest.raises(exception.CephError, match="no client address"):
        rados_locks.take("image-1", "cookie-a", 30)
    assert rados_locks.blocklisted == [] and rados_locks.recorded == []
    assert rados_locks.released == [("cookie-a", False)]  # the old record stays for the next


def test_the_taker_of_an_expired_ipv6_lease_blocklists_its_address():
    previous = {"cookie": "cookie-old", "host": "h", "pid": 1, "addr": "[fd00::2]:0/9"}
    rados_locks = _stub_locks("[fd00::1]:0/7", previous)
    rados_locks._record_holder = lambda image_id, cookie: rados_locks.recorded.append(cookie)
    rados_locks.take("image-1", "cookie-a", 30)
    assert rados_locks.blocklisted == ["[fd00::2]:0/9"] and rados_locks.recorded == ["cookie-a"]
