"""CephStore against a fake pool behind the real rados and rbd errors: what each library error
becomes, removal that is idempotent, clones that send a cache to the trash, the trash."""


import pytest
import rados
import rbd

from cacheraw import exception
from cacheraw import store as ceph_store

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


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
        store.create(CACHE, 1024)
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
    store.create(CACHE, 1024)
    assert CACHE in ceph.images and len(calls) == 2


def test_a_permanent_error_is_not_retried(store, ceph):
    ceph.faults["create"] = rbd.InvalidArgument("odd")
    with pytest.raises(exception.CephError):
        store.create(CACHE, 1024)
    assert CACHE not in ceph.images


def test_publish_snapshots_and_protects_once(store, ceph):
    ceph.add(CACHE)
    store.publish(CACHE)
    store.publish(CACHE)
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
