"""CephStore against a fake pool behind the real rados and rbd errors: what each library error
becomes, removal that is idempotent, clones that send a cache to the trash, the trash."""


import pytest
import rados
import rbd

from cacheraw import exception
from cacheraw.ceph import store as ceph_store

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


class Lease:
    """A lease that holds (or, once ``lost``, raises LockLost)."""

    def __init__(self, cookie="cookie-1"):
        self.cookie = cookie
        self.image_id = ID
        self.lost = False
        self.checks = 0

    def check(self):
        self.checks += 1
        if self.lost:
            raise exception.LockLost("lost")

    def held(self):
        return not self.lost


@pytest.fixture
def store(conf, ceph, tmp_path):
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\n")
    conf.set_override("conf", str(ceph_conf), group="ceph")
    conf.set_override("retry_attempts", 2, group="worker")
    with ceph_store.CephStore(conf) as connected:
        yield connected


@pytest.mark.parametrize("error, ours", [
    (rbd.ImageNotFound("gone"), exception.CephNotFound),
    (rados.ObjectNotFound("gone"), exception.CephNotFound),
    (rbd.ImageBusy("busy"), exception.CephBusy),
    (rbd.ImageHasSnapshots("snaps"), exception.CephBusy),
    (rados.TimedOut("slow"), exception.CephUnavailable),
    (rbd.Timeout("slow"), exception.CephUnavailable),
    (rados.ConnectionShutdown("down"), exception.CephBlocklisted),
    (rbd.InvalidArgument("odd"), exception.CephError),
    (rados.PermissionDeniedError("caps"), exception.CephError),
])
def test_each_library_error_is_translated(store, ceph, error, ours):
    ceph.faults["create"] = error
    with pytest.raises(ours) as raised:
        store.create(CACHE, 1024, Lease())
    assert raised.value.__cause__ is error


def test_a_transient_error_is_retried(store, ceph):
    calls = []

    class Once(dict):
        def __contains__(self, method):
            calls.append(method)
            return len(calls) == 1

        def __getitem__(self, method):
            return rados.TimedOut("slow")

    ceph.faults = Once()
    store.create(CACHE, 1024, Lease())
    assert CACHE in ceph.images and calls.count("create") == 2


def test_a_permanent_error_is_not_retried(store, ceph):
    ceph.faults["create"] = rbd.InvalidArgument("odd")
    with pytest.raises(exception.CephError):
        store.create(CACHE, 1024, Lease())
    assert CACHE not in ceph.images


def test_publish_snapshots_and_protects_once(store, ceph):
    lease = Lease()
    rbd_id = store.create(CACHE, 1024, lease)
    store.publish(CACHE, rbd_id, lease)
    store.publish(CACHE, rbd_id, lease)
    assert ceph.images[CACHE]["snaps"] == {"snap": True}
    assert store.has_protected_snap(CACHE)
    assert not store.has_protected_snap(ID + "x_raw")


def test_remove_is_idempotent(store, ceph):
    ceph.add(CACHE, snaps={"snap": True}, lockers=[("client.9", "cookie", "addr")])
    assert store.remove(CACHE) == "removed"
    assert store.remove(CACHE) == "absent"
    assert ceph.images == {} and ceph.trash == {}


def test_a_cache_with_clones_goes_to_the_trash_and_is_purged_after_them(store, ceph):
    ceph.add(CACHE, snaps={"snap": True}, clones=1)
    assert store.remove(CACHE) == "trashed"
    assert CACHE not in ceph.images
    assert store.purge_trash() == []  # its clone still reads it
    ((name, data),) = ceph.trash.values()
    data["clones"] = 0
    assert store.purge_trash() == [CACHE]
    assert ceph.trash == {}


def test_only_caches_are_purged_from_the_trash(store, ceph):
    ceph.add("volume-1")
    ceph.to_trash("volume-1")
    assert store.purge_trash() == []
    assert [name for name, _ in ceph.trash.values()] == ["volume-1"]


def test_only_caches_are_listed(store, ceph):
    for name in (CACHE, ID, "volume-1", ID.upper() + "_raw"):
        ceph.add(name)
    assert store.list_caches() == [CACHE]


def test_a_dry_run_hook_is_told_each_removal_and_keeps_the_cache(store, ceph):
    told = []

    def dry_run(outcome, name):
        told.append((outcome, name))
        return False

    store.before_remove = dry_run
    ceph.add(CACHE, snaps={"snap": True})
    assert store.remove(CACHE) == "removed"
    other = "1dc0185d-550c-461a-bdc5-25b9e20586d5_raw"
    ceph.add(other, snaps={"snap": True}, clones=2)
    assert store.remove(other) == "trashed"
    assert told == [("removed", CACHE), ("trashed", other)]
    assert set(ceph.images) == {CACHE, other} and ceph.trash == {}


def test_a_create_whose_answer_was_lost_is_recognised_on_its_retry(store, ceph):
    """The first attempt creates the image but times out; the retry meets ImageExists and finds
    the image its own (no snapshot, its size, no other lease's mark)."""
    real_create = FakeRBDCreate(ceph)
    ceph.faults = real_create
    lease = Lease()
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
    other = Lease("cookie-other")
    store.create(CACHE, 1024, other)
    with pytest.raises(exception.CephError, match="not made by this conversion"):
        store.create(CACHE, 1024, Lease())


def test_publish_works_on_the_image_its_lease_created_only(store, ceph):
    lease = Lease()
    rbd_id = store.create(CACHE, 1024, lease)
    with pytest.raises(exception.CephError, match="not created by this conversion"):
        store.publish(CACHE, rbd_id, Lease("cookie-stale"))
    assert ceph.images[CACHE]["snaps"] == {}


def test_publish_refuses_a_snap_it_did_not_make(store, ceph):
    lease = Lease()
    rbd_id = store.create(CACHE, 1024, lease)
    ceph.images[CACHE]["snaps"]["snap"] = False  # made by someone else
    with pytest.raises(exception.CephError, match="did not make"):
        store.publish(CACHE, rbd_id, lease)
    assert ceph.images[CACHE]["snaps"] == {"snap": False}


def test_every_attempt_asks_the_lease_first(store, ceph):
    lease = Lease()
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
    lease = Lease()
    finished_cache(ceph)
    origin, rbd_id = store.clone_cache(CACHE, OTHER, lease)
    assert (origin, rbd_id) == (CACHE, ceph.images[OTHER]["id"])
    store.publish(OTHER, rbd_id, lease)


def test_a_clone_of_a_cache_is_unpublished_until_publish(store, ceph):
    finished_cache(ceph)
    lease = Lease()
    store.clone_cache(CACHE, OTHER, lease)
    assert ceph.images[OTHER]["metadata"]["cacheraw.created_by"] == lease.cookie
    assert not store.has_protected_snap(OTHER)
    assert store.remove_partial(OTHER, lease=lease) == "removed"
    assert ceph.images[CACHE]["children"] == []


def test_a_clone_of_a_shared_cache_clones_the_cache_it_shares(store, ceph):
    shared_pair(store, ceph)
    assert store.clone_cache(OTHER, THIRD, Lease("cookie-3"))[0] == CACHE
    assert ceph.images[THIRD]["parent_name"] == CACHE
    assert store.sharing(CACHE) == {"parent": None, "parent_trashed": False,
                                    "sharers": sorted([OTHER, THIRD])}


def test_a_shared_cache_whose_parent_is_trashed_is_cloned_itself(store, ceph):
    shared_pair(store, ceph)
    assert store.remove(CACHE, lease=Lease()) == "trashed"
    assert store.sharing(OTHER) == {"parent": CACHE, "parent_trashed": True, "sharers": []}
    assert store.clone_cache(OTHER, THIRD, Lease("cookie-3"))[0] == OTHER


def test_a_copy_of_a_cache_has_no_parent(store, ceph):
    finished_cache(ceph)
    lease = Lease()
    _, rbd_id = store.clone_cache(CACHE, OTHER, lease, independent=True)
    store.publish(OTHER, rbd_id, lease)
    assert store.sharing(OTHER)["parent"] is None
    assert store.remove(CACHE, lease=Lease("cookie-2")) == "removed"


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
    lease = Lease()
    origin, rbd_id = store.clone_cache(CACHE, OTHER, lease, independent=independent)
    assert ceph.faults == {} and lease.checks == 2
    assert (origin, rbd_id) == (CACHE, ceph.images[OTHER]["id"])
    assert ceph.images[OTHER]["metadata"]["cacheraw.created_by"] == lease.cookie
    assert (ceph.images[OTHER]["parent"] is None) == independent
    store.publish(OTHER, rbd_id, lease)
    assert store.has_protected_snap(OTHER)


def test_a_clone_target_made_by_another_lease_is_not_taken_for_ours(store, ceph):
    finished_cache(ceph)
    other = Lease("cookie-other")
    rbd_id = store.create(OTHER, 1024, other)
    with pytest.raises(exception.CephError, match="not made by this conversion"):
        store.clone_cache(CACHE, OTHER, Lease())
    with pytest.raises(exception.CephError, match="not created by this conversion"):
        store.publish(OTHER, rbd_id, Lease())
    assert ceph.images[OTHER]["metadata"] == {"cacheraw.created_by": other.cookie}
    assert ceph.images[CACHE]["children"] == []


def test_a_clone_asks_the_lease_first(store, ceph):
    finished_cache(ceph)
    lease = Lease()
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
        assert store.remove(name, lease=Lease()) == "trashed"
    assert store.purge_trash() == []
    other = next(data for name, data in ceph.trash.values() if name == OTHER)
    other["clones"] = 0  # the volume is deleted
    assert sorted(store.purge_trash()) == sorted([CACHE, OTHER])
    assert ceph.trash == {} and ceph.images == {}


def test_a_dry_run_purge_says_each_cache_once(store, ceph):
    shared_pair(store, ceph)
    ceph.images[OTHER]["clones"] = 1
    store.remove(CACHE, lease=Lease())
    store.remove(OTHER, lease=Lease())
    next(data for name, data in ceph.trash.values() if name == OTHER)["clones"] = 0
    said = []
    store.before_remove = lambda outcome, name: said.append((outcome, name)) or False
    assert store.purge_trash() == [OTHER]
    assert said == [("purged", OTHER), ("kept", CACHE)]
    assert len(ceph.trash) == 2
