"""How a cache's data is made (cacheraw.making): where qemu-img reads the image, the space limit,
sharing an identical image's cache, the published progress."""

import contextlib
import errno
import os
import struct
import subprocess

import pytest

from cacheraw import converter
from cacheraw import exception
from cacheraw import identical
from cacheraw import making
from cacheraw.ceph import served
from cacheraw.qemu import nbd
from cacheraw.qemu.job import Job
from tests.unit.conftest import Completion
from tests.unit.conftest import FakeImages
from tests.unit.conftest import FakeLease
from tests.unit.conftest import FakeStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
TWIN = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"


class Core:
    def __init__(self, conf, store):
        self.conf = conf
        self.images = None
        self.store = store
        self.converter = None
        self.fsid = store.fsid()


class ReservingStore(FakeStore):
    def __init__(self):
        self.reserved = []
        self.progress = []
        self.removed = []
        self.clone_error = None
        self.progress_error = None

    def reserve(self, lease, need):
        self.reserved.append(need)

    def set_progress(self, lease, progress):
        if self.progress_error:
            raise self.progress_error
        self.progress.append(progress["percent"])

    def clone_cache(self, source, target, lease, independent=False):
        if self.clone_error:
            raise self.clone_error
        return source, "rbd-id"

    def publish(self, name, rbd_id, lease):
        self.published = (name, rbd_id)

    def used_bytes(self, name, snapshot="snap", with_parent=False):
        return 7000 if with_parent else 0

    def remove_partial(self, name, lease=None):
        self.removed.append(name)


def test_an_image_in_our_pool_is_read_in_place_any_other_downloaded(conf):
    core = Core(conf, ReservingStore())
    here = making.locate(core, {"id": ID, "direct_url": "rbd://fsid/images/%s/snap" % ID})
    assert isinstance(here, converter.RBDSource)
    assert str(here) == "rbd images/%s@snap" % ID
    for elsewhere in ("rbd://other-fsid/images/%s/snap" % ID, "rbd://fsid/vms/%s/snap" % ID,
                      "file:///var/lib/glance/images/" + ID, None):
        assert making.locate(core, {"id": ID, "direct_url": elsewhere}) is None


def test_an_image_that_expands_too_much_is_refused_before_any_space_is_reserved(conf):
    store = ReservingStore()
    conf.set_override("max_expansion", 4, group="converter")
    try:
        with pytest.raises(exception.ExpandsTooMuch, match="more than .* max_expansion = 4 "
                                                           "times its upload of 100 bytes"):
            making.check_space(conf, store, {"size": 100}, 401, FakeLease())
        making.check_space(conf, store, {"size": 100}, 400, FakeLease())
    finally:
        conf.clear_override("max_expansion", group="converter")
    making.check_space(conf, store, {"size": 100}, 10 ** 9, FakeLease())  # 0: no limit
    assert store.reserved == [400, 10 ** 9]


class Twins:
    """A Finder that finds ``twin`` (or nothing) in ``mode``."""

    def __init__(self, twin, mode="clone"):
        self.found = twin
        self.mode = identical.Mode(mode)

    def twin(self, image):
        return self.found


def test_a_cache_shared_with_a_twin_is_published_from_the_twins_cache(conf):
    store = ReservingStore()
    origin = making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease())
    assert origin == TWIN + "_raw"
    assert store.published == (ID + "_raw", "rbd-id")


def test_no_twin_or_a_failed_clone_shares_nothing_and_leaves_nothing(conf):
    store = ReservingStore()
    assert making.share(conf, store, Twins(None), {"id": ID}, FakeLease()) is None
    assert store.removed == []
    store.clone_error = exception.CephBusy("snapshot unprotected")
    assert making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease()) is None
    assert store.removed == [ID + "_raw"]
    store.clone_error = exception.CephBlocklisted("fenced")
    with pytest.raises(exception.CephBlocklisted):
        making.share(conf, store, Twins({"id": TWIN}), {"id": ID}, FakeLease())


def test_a_copy_reserves_the_bytes_of_the_cache_it_copies_a_clone_none(conf):
    store = ReservingStore()
    assert making.share(conf, store, Twins({"id": TWIN}), {"id": ID, "size": 5000},
                        FakeLease()) == TWIN + "_raw"
    assert store.reserved == []
    assert making.share(conf, store, Twins({"id": TWIN}, "copy"), {"id": ID, "size": 5000},
                        FakeLease()) == TWIN + "_raw"
    assert store.reserved == [7000]


def test_a_copy_that_does_not_fit_is_not_made_and_the_image_is_converted(conf):
    store = ReservingStore()
    store.reserve = lambda lease, need: (_ for _ in ()).throw(
        exception.NotEnoughSpace(exception.Room.POOL, "images", 7000, 0))
    store.clone_cache = None  # never reached
    assert making.share(conf, store, Twins({"id": TWIN}, "copy"), {"id": ID, "size": 5000},
                        FakeLease()) is None
    assert store.removed == [ID + "_raw"]


def test_progress_is_published_at_most_once_an_interval_and_always_at_the_end(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(making.time, "monotonic", lambda: now[0])
    store = ReservingStore()
    publish = making.ProgressPublisher(store, FakeLease(), 1 << 20)
    for percent in (1, 2, 3):
        publish(percent)
        now[0] += 0.6
    publish(100)
    assert store.progress == [1, 3, 100]
    store.progress_error = exception.CephUnavailable("timed out")
    publish(100)  # a missed sample, no failure


# -- a qemu-img failure under an outage of Ceph: real qemu-img, NBD server and served snapshot


class FileImage:
    """An RBD image handle over a local file whose aio calls fail with EIO while the cluster
    is out (``outage["reads"]``, ``outage["writes"]``)."""

    def __init__(self, path, outage):
        self.path = str(path)
        self.outage = outage

    def id(self):
        return "abc123"

    def get_name(self):
        return os.path.basename(self.path)

    def size(self):
        return os.path.getsize(self.path)

    def snap_get_id(self, name):
        return 4

    def aio_read(self, offset, length, oncomplete):
        if self.outage["reads"]:
            oncomplete(Completion(-errno.EIO), None)
            return
        with open(self.path, "rb") as f:
            f.seek(offset)
            oncomplete(Completion(0), f.read(length))

    def aio_write(self, data, offset, oncomplete):
        if not self.outage["writes"]:
            with open(self.path, "r+b") as f:
                f.seek(offset)
                f.write(data)
        oncomplete(Completion(-errno.EIO if self.outage["writes"] else 0))

    def aio_write_zeroes(self, offset, length, oncomplete):
        self.aio_write(b"\0" * length, offset, oncomplete)

    def aio_flush(self, oncomplete):
        oncomplete(Completion(0))


class SnapshotIoctx:
    """The image's header: its snapshot is there."""

    def execute(self, oid, cls, method, data):
        return 0, struct.pack("<QIQ", 4, 1, 4)


class OutageStore(ReservingStore):
    """The image (a local qcow2) served through the real ServedSnapshot and NBD export, the
    cache a local file; ``outage`` says which of the worker's requests fail now."""

    def __init__(self, image_path, cache_path, outage_at=None):
        super().__init__()
        self.image_path = str(image_path)
        self.cache_path = str(cache_path)
        self.outage = {"reads": False, "writes": False}
        self.outage_at = outage_at or {}

    def read(self, name, offset, length, snapshot="snap"):
        with open(self.image_path, "rb") as f:
            f.seek(offset)
            return f.read(length)

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        self.outage.update(self.outage_at.get("info", {}))
        snap = served.ServedSnapshot(SnapshotIoctx(), FileImage(self.image_path, self.outage),
                                     snapshot, lambda exc: exc)
        with nbd.Export(path, snap) as snap.export:
            yield snap

    def create(self, name, size, lease):
        with open(self.cache_path, "wb") as f:
            f.truncate(size)
        self.outage.update(self.outage_at.get("convert", {}))
        return "rbd-id"

    @contextlib.contextmanager
    def serve_cache(self, name, path):
        cache = served.ServedCache(FileImage(self.cache_path, self.outage))
        with nbd.Export(path, cache) as cache.export:
            yield cache


def qcow2(path, *writes):
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(path), "8M"], check=True,
                   capture_output=True)
    if writes:
        subprocess.run(["qemu-io", *[arg for w in writes for arg in ("-c", w)], str(path)],
                       check=True, capture_output=True)
    return path


def convert_in_place(conf, store, image_path):
    core = Core(conf, store)
    core.images = FakeImages({"id": ID, "status": "active"})
    core.converter = converter.Converter(conf)
    image = {"id": ID, "disk_format": "qcow2", "size": os.path.getsize(image_path),
             "direct_url": "rbd://fsid/images/%s/snap" % ID}
    return making.convert(core, image, Job(ID), FakeLease())


@pytest.mark.parametrize("step, failing, failed", [
    ("info", {"reads": True}, "reads of the image"),
    ("convert", {"reads": True}, "reads of the image"),
    ("convert", {"writes": True}, "writes of the cache")])
def test_qemu_img_failing_while_cephs_reads_or_writes_fail_is_a_temporary_failure(
        conf, tmp_path, step, failing, failed):
    """The worker's own reads (or writes) of Ceph failed under qemu-img, and the outage is over
    when qemu-img has ended: not the image's fault, retried (however brief the outage)."""
    image = qcow2(tmp_path / "disk.qcow2", "write -P 1 0 1M")
    store = OutageStore(image, tmp_path / "cache", {step: failing})
    with pytest.raises(exception.CephUnavailable,
                       match="Ceph failed the worker's %s under qemu-img: qemu-img %s failed"
                       % (failed, step)) as raised:
        convert_in_place(conf, store, image)
    assert isinstance(raised.value, exception.Transient)
    assert isinstance(raised.value.__cause__,
                      exception.UnreadableImage if step == "info" else exception.ConversionFailed)


def test_a_broken_image_read_without_a_failure_of_ceph_stays_refused(conf, tmp_path):
    image = qcow2(tmp_path / "disk.qcow2", "write -P 1 0 1M")
    with open(image, "r+b") as f:  # the L1 table's offset past the end of the file
        f.seek(40)
        f.write(struct.pack(">Q", 1 << 40))
    with pytest.raises(exception.UnsafeImage) as raised:
        convert_in_place(conf, OutageStore(image, tmp_path / "cache"), image)
    assert not isinstance(raised.value, exception.Transient)


def test_an_image_read_without_failures_is_converted(conf, tmp_path):
    image = qcow2(tmp_path / "disk.qcow2", "write -P 1 0 1M")
    store = OutageStore(image, tmp_path / "cache")
    convert_in_place(conf, store, image)
    assert store.published == (ID + "_raw", "rbd-id")
    with open(tmp_path / "cache", "rb") as f:
        assert f.read(1 << 20) == b"\1" * (1 << 20)
