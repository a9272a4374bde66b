"""CephStore against a fake pool behind the real rados and rbd errors: what each library error
becomes, removal that is idempotent, clones that send a cache to the trash, and the trash."""

import threading

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


class Extents:
    """An RBD image of 4 MiB objects whose diff_iterate reports ``objects`` (index, exists)."""

    def __init__(self, objects):
        self.objects = objects

    def diff_iterate(self, offset, length, from_snapshot, callback, include_parent=True,
                     whole_object=False):
        assert from_snapshot is None and include_parent and whole_object
        for index, exists in self.objects:
            start = index * 4 * MiB
            if offset <= start < offset + length:
                callback(start, 4 * MiB, exists)


MiB = 1024 * 1024


def test_a_copy_reads_allocated_objects_merged_and_cut_into_bounded_chunks(monkeypatch):
    monkeypatch.setattr(ceph_store, "COPY_CHUNK", 8 * MiB)
    image = Extents([(0, True), (1, True), (2, True), (3, False), (5, True)])
    assert ceph_store._extents(image, 0, 22 * MiB) == [
        (0, 8 * MiB), (8 * MiB, 4 * MiB), (20 * MiB, 2 * MiB)]


class AioImage:
    """aio_read() completing at once from a thread of its own, as librbd's callbacks do; the
    read at ``failing`` fails with ``errno``."""

    def __init__(self, failing=None, errno=5):
        self.failing, self.errno = failing, errno
        self.threads = []

    def aio_read(self, offset, length, oncomplete):
        result = -self.errno if offset == self.failing else length

        class Completion:
            def get_return_value(self):
                return result

        data = None if result < 0 else bytes([offset // MiB + 1]) * length
        thread = threading.Thread(target=oncomplete, args=(Completion(), data))
        self.threads.append(thread)
        thread.start()


def test_a_copy_writes_each_extent_at_its_offset_with_few_reads_in_flight(tmp_path):
    path = tmp_path / "copy"
    extents = [(offset * MiB, MiB) for offset in (0, 2, 3, 7, 8, 9)]
    with open(path, "wb") as f:
        f.truncate(10 * MiB)
        ceph_store._read_into(f.fileno(), AioImage(), extents)
    data = path.read_bytes()
    for offset in range(10):
        expected = offset + 1 if offset in (0, 2, 3, 7, 8, 9) else 0
        assert data[offset * MiB:(offset + 1) * MiB] == bytes([expected]) * MiB, offset


@pytest.mark.parametrize("errno, error", [(2, rbd.ImageNotFound), (5, rbd.IOError)])
def test_a_failed_read_stops_the_copy_after_the_reads_in_flight(tmp_path, errno, error):
    image = AioImage(failing=2 * MiB, errno=errno)
    extents = [(offset * MiB, MiB) for offset in range(10)]
    with open(tmp_path / "copy", "wb") as f, pytest.raises(error):
        ceph_store._read_into(f.fileno(), image, extents)
    assert len(image.threads) <= ceph_store.COPY_DEPTH + 3


def test_a_cancelled_copy_stops_before_its_next_read(tmp_path):
    image = AioImage()
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 3:
            raise exception.WorkerStopping("stopping")

    with open(tmp_path / "copy", "wb") as f, pytest.raises(exception.WorkerStopping):
        ceph_store._read_into(f.fileno(), image, [(i * MiB, MiB) for i in range(10)], check)
    assert len(image.threads) == 3
