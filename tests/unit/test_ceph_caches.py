"""cacheraw.ceph.caches (through CephStore, on a fake pool behind the real rados and rbd
errors): a cache created by its lease, published by it once, and only caches listed."""

import pytest
import rados

from cacheraw import exception
from tests.unit.conftest import FakeLease

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


def test_publish_snapshots_and_protects_once(store, ceph):
    lease = FakeLease()
    rbd_id = store.create(CACHE, 1024, lease)
    store.publish(CACHE, rbd_id, lease)
    store.publish(CACHE, rbd_id, lease)
    assert ceph.images[CACHE]["snaps"] == {"snap": True}
    assert store.has_protected_snap(CACHE)
    assert not store.has_protected_snap(ID + "x_raw")


def test_only_caches_are_listed(store, ceph):
    for name in (CACHE, ID, "volume-1", ID.upper() + "_raw"):
        ceph.add(name)
    assert store.list_caches() == [CACHE]


def test_a_create_whose_answer_was_lost_is_recognised_on_its_retry(store, ceph):
    """The first attempt creates the image but times out; the retry meets ImageExists and finds
    the image its own (no snapshot, its size, no other lease's mark)."""
    real_create = FakeRBDCreate(ceph)
    ceph.faults = real_create
    lease = FakeLease()
    rbd_id = store.create(CACHE, 1024, lease)
    assert rbd_id == ceph.images[CACHE]["id"]
    assert ceph.images[CACHE]["metadata"] == {"cacheraw.created_by": lease.cookie}
    assert real_create.calls == 2


class FakeRBDCreate(dict):
    """Faults: the first create is applied, then its answer is lost (a timeout)."""

    def __init__(self, pool):
        super().__init__()
        self.pool = pool
        self.calls = 0

    def __contains__(self, method):
        if method != "create":
            return False
        self.calls += 1
        if self.calls == 1:
            self.pool.add(CACHE)
            self.pool.images[CACHE]["size"] = 1024
            return True
        return False

    def __getitem__(self, method):
        return rados.TimedOut("answer lost")


def test_a_cache_made_by_another_lease_is_not_taken_for_ours(store, ceph):
    other = FakeLease("cookie-other")
    store.create(CACHE, 1024, other)
    with pytest.raises(exception.CephError, match="not made by this conversion"):
        store.create(CACHE, 1024, FakeLease())


def test_publish_works_on_the_image_its_lease_created_only(store, ceph):
    lease = FakeLease()
    rbd_id = store.create(CACHE, 1024, lease)
    with pytest.raises(exception.CephError, match="not created by this conversion"):
        store.publish(CACHE, rbd_id, FakeLease("cookie-stale"))
    assert ceph.images[CACHE]["snaps"] == {}


def test_publish_refuses_a_snap_it_did_not_make(store, ceph):
    lease = FakeLease()
    rbd_id = store.create(CACHE, 1024, lease)
    ceph.images[CACHE]["snaps"]["snap"] = False  # made by someone else
    with pytest.raises(exception.CephError, match="did not make"):
        store.publish(CACHE, rbd_id, lease)
    assert ceph.images[CACHE]["snaps"] == {"snap": False}


@pytest.mark.parametrize("snaps, finished", [({}, False), ({"snap": False}, False),
                                             ({"snap": True}, True)])
def test_a_cache_is_finished_only_with_a_protected_snap(store, ceph, monkeypatch, snaps,
                                                         finished):
    """The store's three readers of "finished" agree: its question, its facts and the removal
    of a partial cache."""
    ceph.add(CACHE, snaps=snaps, clones=1 if snaps else 0)
    monkeypatch.setattr(store.caches, "count_used", lambda *args, **kwargs: 0)
    assert store.has_protected_snap(CACHE) is finished
    facts = store.cache_facts(CACHE)
    assert facts["protected"] is finished
    assert facts["clones"] == (1 if snaps else None)
    expected = "finished" if finished else "trashed" if snaps else "removed"
    assert store.remove_partial(CACHE, lease=FakeLease()) == expected
