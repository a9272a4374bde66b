"""cacheraw.ceph.removals (through CephStore, on a fake pool behind the real rados and rbd
errors): removal that is idempotent, clones that send a cache to the trash, the trash."""

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


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


def test_a_lock_of_another_client_whose_address_is_part_of_ours_is_broken(store, ceph):
    """This worker is 127.0.0.1:0/4242 (the fake's get_addrs): the client at 127.0.0.1:0/42 is
    another one, whose stale lock is broken, not released as our own."""
    ceph.add(CACHE, snaps={"snap": True}, lockers=[("client.9", "cookie", "127.0.0.1:0/42")])
    assert store.remove(CACHE) == "removed"
    assert CACHE not in ceph.images
