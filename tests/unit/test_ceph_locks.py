"""cacheraw.ceph.locks: the fencing decisions of a take (the pool itself is in
tests/functional/test_ceph_locks.py)."""

from cacheraw.ceph import locks


def test_the_lock_object_of_an_image_is_named_after_it():
    assert locks.RadosLocks.__new__(locks.RadosLocks)._object("id-1") == "cacheraw.lock.id-1"
