"""The conversion lease (cacheraw.lease) over a fake lock table with cls_lock's semantics, and
the conversion's fencing: a worker that cannot prove it holds the lease touches nothing."""

import threading

import pytest

from cacheraw import exception
from cacheraw import lease
from tests.unit.fakes import Clock
from tests.unit.fakes import FakeLocks
from tests.unit.test_core import conf  # noqa: F401 - a fixture

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_a_lease_is_held_until_its_duration_less_the_margin():
    locks = FakeLocks()
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.take()
    assert held.held()
    locks.clock.now += 60 - lease.margin(60) - 0.1
    assert held.held()
    locks.clock.now += 0.2
    assert not held.held()  # before the cluster's own expiry
    assert locks.is_locked(ID)
    with pytest.raises(exception.LockLost):
        held.check()


def test_renewal_extends_the_lease():
    locks = FakeLocks()
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.take()
    locks.clock.now += 30
    held.renew()
    locks.clock.now += 40
    assert held.held()


def test_renewal_of_a_lost_lock_fails_and_never_takes_it_again():
    locks = FakeLocks()
    lost = []
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.on_lost(lambda: lost.append(True))
    held.take()
    locks.clock.now += 61  # stalled past the lock's duration
    locks.steal(ID)
    with pytest.raises(exception.LockLost):
        held.renew()
    assert lost == [True]
    assert locks.holders[ID][0] == "thief"
    assert not held.held()


def test_expired_lease_is_not_renewed_even_when_nobody_took_the_lock():
    locks = FakeLocks()
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.take()
    locks.clock.now += 100
    with pytest.raises(exception.LockLost):
        held.renew()
    assert not held.held()


def test_release_never_removes_a_lock_that_is_not_ours():
    locks = FakeLocks()
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.take()
    locks.clock.now += 61
    locks.steal(ID)
    held.release()
    assert locks.holders[ID][0] == "thief"
    assert locks.released == []


def test_release_removes_our_held_lock():
    locks = FakeLocks()
    with lease.hold(locks, ID, 60, clock=locks.clock) as held:
        assert held.held()
    assert locks.released == [ID]


def test_a_busy_lock_is_not_taken():
    locks = FakeLocks(held=[ID])
    with pytest.raises(exception.LockBusy):
        with lease.hold(locks, ID, 60):
            pass


def test_two_leases_of_one_process_are_two_holders():
    locks = FakeLocks()
    with lease.hold(locks, ID, 60, clock=locks.clock):
        with pytest.raises(exception.LockBusy):
            with lease.hold(locks, ID, 60, clock=locks.clock):
                pass


def test_renewer_marks_the_lease_lost_and_calls_back_when_renewal_fails():
    locks = FakeLocks()
    called = threading.Event()
    with lease.hold(locks, ID, 0.3, on_lost=called.set) as held:
        locks.steal(ID)
        assert called.wait(5)
        assert not held.held()
    assert locks.holders[ID][0] == "thief"


def test_renewer_gives_up_once_failing_renewals_outlast_the_lease():
    clock = Clock()
    locks = FakeLocks(clock)
    called = threading.Event()
    locks.fail_renewals = exception.CephUnavailable("timed out")
    with lease.hold(locks, ID, 0.3, on_lost=called.set, clock=clock) as held:
        clock.now += 1
        assert called.wait(5)
        assert not held.held()


# -- the conversion's fencing (cacheraw.cacher with a fake store and converter)

def stalled_core(conf, outcome_of_convert):
    """A core whose conversion stalls past its lease while another worker takes the lock,
    then ends with ``outcome_of_convert`` (an exception, or None for success)."""
    from tests.unit.test_core import FailingConverter
    from tests.unit.test_core import failing_core

    class StallingConverter(FailingConverter):
        def convert(self, source, fmt, name, job, secret):
            store.removed.clear()
            core.images.update = forbidden
            store.locks.clock.now += 120  # SIGSTOPped past the lock's duration
            store.locks.steal(ID)
            if outcome_of_convert is not None:
                raise outcome_of_convert

    def forbidden(image_id, wanted, only_if=None):
        raise AssertionError("wrote %s without the lock" % wanted)

    core, store = failing_core(conf, None)
    core.converter = StallingConverter(None)
    store.publish = lambda name: pytest.fail("published without the lock")
    return core, store


@pytest.mark.parametrize("error", [None, exception.ConversionFailed("qemu-img was fenced"),
                                   KeyError("bug")])
def test_a_worker_that_lost_its_lease_touches_nothing(conf, error):
    core, store = stalled_core(conf, error)
    assert core.cache(ID) == "aborted"
    assert store.removed == []
    assert store.locks.holders[ID][0] == "thief"
    assert core.images.image["cache_raw_status"] == "Caching"


def test_only_a_partial_cache_is_removed_on_failure(conf):
    from tests.unit.test_core import failing_core
    core, store = failing_core(conf, exception.ConversionFailed("qemu-img failed"))
    calls = []
    store.remove = lambda name: calls.append(("remove", name)) or "absent"
    store.remove_partial = lambda name: calls.append(("remove_partial", name)) or "absent"
    assert core.cache(ID) == "error"
    assert calls and all(kind == "remove_partial" for kind, _ in calls)


def test_a_refused_status_write_ends_in_error_and_keeps_the_finished_cache(conf):
    from tests.unit.test_core import failing_core
    core, store = failing_core(conf, None)
    store.has_protected_snap = lambda name: True
    store.used_bytes = lambda name: 1 << 20
    update = core.images.update

    def refuse_cached(image_id, wanted, only_if=None):
        if wanted.get("cache_raw_status") == "Cached":
            raise exception.ImageUpdateRefused("413 Request Entity Too Large")
        return update(image_id, wanted, only_if)

    core.images.update = refuse_cached
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_status"] == "Error"
    assert "refused to record the finished cache" in core.images.image["cache_raw_error"]
    assert store.removed == []


def test_a_forged_delete_of_a_live_image_removes_nothing(conf):
    from cacheraw import cacher
    from tests.unit.test_core import FakeImages
    from tests.unit.test_core import LockingStore
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "cache_raw_status": "Cached"})
    store = LockingStore()
    cancelled = []
    core = cacher.Cacher(conf, images, store, None,
                         cancel=lambda image_id, reason: cancelled.append(image_id))
    core.on_event("image.delete", ID)
    assert store.removed == [] and cancelled == []
    images.image = None
    core.on_event("image.delete", ID)
    assert store.removed == [ID + "_raw"] and cancelled == [ID]
