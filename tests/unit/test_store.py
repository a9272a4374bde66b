"""CephStore against a fake pool behind the real rados and rbd errors: transient errors retried,
permanent ones not, and every attempt of a step that writes or removes asks the lease first."""

import pytest
import rados
import rbd

from cacheraw import exception
from tests.unit.conftest import FakeLease

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


def test_a_transient_error_is_retried(store, ceph):
    calls = []

    class Once(dict):
        def __contains__(self, method):
            calls.append(method)
            return len(calls) == 1

        def __getitem__(self, method):
            return rados.TimedOut("slow")

    ceph.faults = Once()
    store.create(CACHE, 1024, FakeLease())
    assert CACHE in ceph.images and calls.count("create") == 2


def test_a_permanent_error_is_not_retried(store, ceph):
    ceph.faults["create"] = rbd.InvalidArgument("odd")
    with pytest.raises(exception.CephError):
        store.create(CACHE, 1024, FakeLease())
    assert CACHE not in ceph.images


def test_every_attempt_asks_the_lease_first(store, ceph):
    lease = FakeLease()
    ceph.faults["remove"] = rados.TimedOut("slow")
    ceph.add(CACHE)
    with pytest.raises(exception.CephUnavailable):
        store.remove(CACHE, lease=lease)
    assert lease.checks == 2  # retry_attempts
    lease.lost = True
    ceph.faults.clear()
    with pytest.raises(exception.LockLost):
        store.remove(CACHE, lease=lease)
    assert CACHE in ceph.images
