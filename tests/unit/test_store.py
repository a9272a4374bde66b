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


# -- caches of images with the same data (cacheraw.identical)

OTHER = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e_raw"
THIRD = "9f1c7d0e-2c4b-4e55-8d5e-0b7f0f6c1d11_raw"


def finished_cache(ceph):
    """CACHE, finished by the conversion of its own image: its metadata (which librbd copies
    into its clones) says which lease made and published it."""
    ceph.add(CACHE, snaps={"snap": True})
    ceph.images[CACHE]["metadata"] = {"cacheraw.created_by": "cookie-cache",
                                      "cacheraw.published_by": "cookie-cache"}


def shared_pair(store, ceph):
    """CACHE, a finished cache, and OTHER, a finished clone of it."""
    lease = FakeLease()
    finished_cache(ceph)
    origin, rbd_id = store.clone_cache(CACHE, OTHER, lease)
    assert (origin, rbd_id) == (CACHE, ceph.images[OTHER]["id"])
    store.publish(OTHER, rbd_id, lease)


def test_a_clone_of_a_cache_is_unpublished_until_publish(store, ceph):
    finished_cache(ceph)
    lease = FakeLease()
    store.clone_cache(CACHE, OTHER, lease)
    assert ceph.images[OTHER]["metadata"]["cacheraw.created_by"] == lease.cookie
    assert not store.has_protected_snap(OTHER)
    assert store.remove_partial(OTHER, lease=lease) == "removed"
    assert ceph.images[CACHE]["children"] == []


def test_a_clone_of_a_shared_cache_clones_the_cache_it_shares(store, ceph):
    shared_pair(store, ceph)
    assert store.clone_cache(OTHER, THIRD, FakeLease("cookie-3"))[0] == CACHE
    assert ceph.images[THIRD]["parent_name"] == CACHE
    assert store.sharing(CACHE) == {"parent": None, "parent_trashed": False,
                                    "sharers": sorted([OTHER, THIRD])}


def test_a_shared_cache_whose_parent_is_trashed_is_cloned_itself(store, ceph):
    shared_pair(store, ceph)
    assert store.remove(CACHE, lease=FakeLease()) == "trashed"
    assert store.sharing(OTHER) == {"parent": CACHE, "parent_trashed": True, "sharers": []}
    assert store.clone_cache(OTHER, THIRD, FakeLease("cookie-3"))[0] == OTHER


def test_a_copy_of_a_cache_has_no_parent(store, ceph):
    finished_cache(ceph)
    lease = FakeLease()
    _, rbd_id = store.clone_cache(CACHE, OTHER, lease, independent=True)
    store.publish(OTHER, rbd_id, lease)
    assert store.sharing(OTHER)["parent"] is None
    assert store.remove(CACHE, lease=FakeLease("cookie-2")) == "removed"


class Once(dict):
    """Faults that each happen once."""

    def __getitem__(self, method):
        return self.pop(method)


@pytest.mark.parametrize("independent, lost", [(False, "clone"), (True, "clone"),
                                               (True, "flatten")])
def test_a_clone_whose_answer_was_lost_is_recognised_on_its_retry(store, ceph, independent,
                                                                   lost):
    """The first attempt makes the clone (and flattens it) but times out; the retry meets
    ImageExists, finds the clone its own and goes on from where the first attempt stopped."""
    finished_cache(ceph)
    ceph.faults = Once({lost: rados.TimedOut("answer lost")})
    lease = FakeLease()
    origin, rbd_id = store.clone_cache(CACHE, OTHER, lease, independent=independent)
    assert ceph.faults == {} and lease.checks == 2
    assert (origin, rbd_id) == (CACHE, ceph.images[OTHER]["id"])
    assert ceph.images[OTHER]["metadata"]["cacheraw.created_by"] == lease.cookie
    assert (ceph.images[OTHER]["parent"] is None) == independent
    store.publish(OTHER, rbd_id, lease)
    assert store.has_protected_snap(OTHER)


def test_a_clone_target_made_by_another_lease_is_not_taken_for_ours(store, ceph):
    finished_cache(ceph)
    other = FakeLease("cookie-other")
    rbd_id = store.create(OTHER, 1024, other)
    with pytest.raises(exception.CephError, match="not made by this conversion"):
        store.clone_cache(CACHE, OTHER, FakeLease())
    with pytest.raises(exception.CephError, match="not created by this conversion"):
        store.publish(OTHER, rbd_id, FakeLease())
    assert ceph.images[OTHER]["metadata"] == {"cacheraw.created_by": other.cookie}
    assert ceph.images[CACHE]["children"] == []


def test_a_clone_asks_the_lease_first(store, ceph):
    finished_cache(ceph)
    lease = FakeLease()
    lease.lost = True
    with pytest.raises(exception.LockLost):
        store.clone_cache(CACHE, OTHER, lease)
    assert OTHER not in ceph.images


@pytest.mark.parametrize("first", [CACHE, OTHER])
def test_a_chain_of_cache_clone_volume_is_purged_in_one_pass_after_the_volume(store, ceph,
                                                                                first):
    shared_pair(store, ceph)
    ceph.images[OTHER]["clones"] = 1  # a volume
    for name in (first, CACHE if first == OTHER else OTHER):
        assert store.remove(name, lease=FakeLease()) == "trashed"
    assert store.purge_trash() == []
    other = next(data for name, data in ceph.trash.values() if name == OTHER)
    other["clones"] = 0  # the volume is deleted
    assert sorted(store.purge_trash()) == sorted([CACHE, OTHER])
    assert ceph.trash == {} and ceph.images == {}


def test_a_dry_run_purge_says_each_cache_once(store, ceph):
    shared_pair(store, ceph)
    ceph.images[OTHER]["clones"] = 1
    store.remove(CACHE, lease=FakeLease())
    store.remove(OTHER, lease=FakeLease())
    next(data for name, data in ceph.trash.values() if name == OTHER)["clones"] = 0
    said = []
    store.before_remove = lambda outcome, name: said.append((outcome, name)) or False
    assert store.purge_trash() == [OTHER]
    assert said == [("purged", OTHER), ("kept", CACHE)]
    assert len(ceph.trash) == 2
