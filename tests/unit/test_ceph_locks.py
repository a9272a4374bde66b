"""cacheraw.ceph.locks: the fencing decisions of a take (the pool itself is in
tests/functional/test_ceph_locks.py)."""

import contextlib
import errno
import json

import pytest
import rados

from cacheraw import exception
from cacheraw.ceph import cls_lock
from cacheraw.ceph import locks
from tests.unit.conftest import RecordedOp


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


class FakeOp(RecordedOp):
    """A write operation: its steps, applied by LockObject.operate_write_op."""

    def __getattr__(self, step):
        return lambda *args: self.steps.append((step,) + args)


class LockObject:
    """One lock object: its live lock's cookie (None: none, or expired), its xattrs and version;
    ``meanwhile()`` runs between a read and the next write (another worker)."""

    def __init__(self, holder, record_cookie):
        self.exists, self.holder, self.version = True, holder, 7
        self.xattrs = {locks.HOLDER_XATTR: json.dumps({"cookie": record_cookie}).encode()}
        self.meanwhile = lambda: None
        self._last = None

    def get_xattr(self, name, key):
        self._last = self.version
        return self.xattrs[key]

    def get_last_version(self):
        return self._last

    def operate_write_op(self, op, name):
        self.meanwhile()
        for step, *args in op.steps:
            if step == "assert_version" and args[0] != self.version:
                raise rados.OSError("version", errno=errno.ERANGE)
            if step == "execute" and args[1] == "assert_locked" and (
                    self.holder is None or args[2] != cls_lock.assert_locked_op(self.holder)):
                raise rados.ObjectBusy("not locked", errno=errno.EBUSY)
            if step == "execute" and args[1] == "lock" and self.holder is not None:
                raise rados.ObjectBusy("locked", errno=errno.EBUSY)
        self.exists = False  # the steps that pass end with the remove


def _locks_on(lock_object, monkeypatch):
    monkeypatch.setattr(locks.rados, "WriteOpCtx", FakeOp)
    rados_locks = locks.RadosLocks(StubConnection("10.0.0.1:0/1"), 60)
    rados_locks.conn.ioctx = lambda: contextlib.nullcontext(lock_object)
    return rados_locks


def test_a_release_after_the_lock_expired_removes_its_record(monkeypatch):
    """Left in place, the record would have whoever takes the lock next blocklist this worker,
    days later, in the middle of other conversions."""
    lock_object = LockObject(holder=None, record_cookie="cookie-a")
    _locks_on(lock_object, monkeypatch).release("image-1", "cookie-a")
    assert not lock_object.exists


@pytest.mark.parametrize("holder, record_cookie, written_meanwhile", [
    ("cookie-b", "cookie-b", False),  # another worker took it: its lock and record stay
    (None, "cookie-b", False),  # another worker's lease ran out too: it is to be fenced
    (None, "cookie-a", True),  # another worker took the lock between the read and the write
])
def test_a_release_leaves_a_lock_object_that_is_not_its_own_any_more(
        monkeypatch, holder, record_cookie, written_meanwhile):
    lock_object = LockObject(holder, record_cookie)
    if written_meanwhile:
        lock_object.meanwhile = lambda: setattr(lock_object, "version", lock_object.version + 1)
    with pytest.raises(exception.LockLost):
        _locks_on(lock_object, monkeypatch).release("image-1", "cookie-a")
    assert lock_object.exists
