"""The conversion lease (cacheraw.ceph.lease) over a fake lock table with cls_lock's semantics, and
the conversion's fencing: a worker that cannot prove it holds the lease touches nothing."""

import threading

import pytest

from cacheraw import exception
from cacheraw.ceph import lease
from tests.unit.conftest import Clock
from tests.unit.conftest import FakeLocks

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


def test_two_failed_renewals_in_a_row_keep_the_lease():
    """Renewals start every D/6 and each fails after at most its timeout: the third one is
    sent while the lease still holds (lease.check_timing() guarantees it)."""
    locks = FakeLocks()
    duration, timeout = 60, lease.default_renewal_timeout(60)
    lease.check_timing(duration, timeout)
    held = lease.Lease(locks, ID, duration, locks.clock, renewal_timeout=timeout)
    held.take()
    locks.fail_renewals = exception.CephUnavailable("timed out")
    for _ in range(lease.TOLERATED_FAILURES):
        locks.clock.now += duration / lease.RENEWALS_PER_DURATION
        with pytest.raises(exception.CephUnavailable):
            held.renew()
        locks.clock.now += timeout
    locks.clock.now += duration / lease.RENEWALS_PER_DURATION
    locks.fail_renewals = None
    held.renew()
    assert held.held()


def test_a_renewal_that_timed_out_but_was_applied_later_extends_the_lease():
    """An OSD that was down answers the queued renewal once it is back: the lock was renewed
    from no earlier than when that renewal was sent."""
    locks = FakeLocks()
    held = lease.Lease(locks, ID, 60, locks.clock)
    held.take()
    pending = []

    def timed_out(image_id, cookie, duration, timeout=None, late=None):
        pending.append(late)
        raise exception.CephUnavailable("timed out")

    locks.renew = timed_out
    locks.clock.now += 40
    with pytest.raises(exception.CephUnavailable):
        held.renew()
    locks.clock.now += 9
    pending[0]()  # applied after all
    locks.clock.now += 30
    assert held.held()  # 79 s after the take, 39 s after the renewal was sent


@pytest.mark.parametrize("duration, timeout", [(60, 10), (60, 30), (10, 1.7), (20, 3.4)])
def test_timings_that_cannot_tolerate_two_failed_renewals_are_refused(duration, timeout):
    with pytest.raises(exception.ConfigError, match="lock_renewal_timeout = .* is too long"):
        lease.check_timing(duration, timeout)


@pytest.mark.parametrize("duration", [10, 30, 60, 600])
def test_the_default_renewal_timeout_fits_every_duration(duration):
    lease.check_timing(duration, lease.default_renewal_timeout(duration))


def test_a_worker_with_timings_that_cannot_work_does_not_start(conf, tmp_path):
    from cacheraw.ceph import store as ceph_store
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\n")
    conf.set_override("conf", str(ceph_conf), group="ceph")
    conf.set_override("lock_renewal_timeout", 12, group="ceph")
    try:
        with pytest.raises(exception.ConfigError,
                           match="lower lock_renewal_timeout below 10.0 s"):
            ceph_store.CephStore(conf).check_config()
    finally:
        # The option groups' options are shared by every ConfigOpts: leave no override behind.
        conf.clear_override("lock_renewal_timeout", group="ceph")


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
