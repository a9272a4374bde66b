"""One image's conversion under its lease (cacheraw.conversion), with a fake store and
converter: the outcomes, what is recorded on the image, and the fencing."""

import logging

import pytest

from cacheraw import cacher
from cacheraw import exception
from tests.unit.conftest import FailingConverter
from tests.unit.conftest import FakeImages
from tests.unit.conftest import LockingStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_converting_a_raw_image_records_not_needed_and_converts_nothing(conf):
    image = {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "raw",
             "cache_raw_status": "Queued"}
    store = LockingStore()
    core = cacher.Cacher(conf, FakeImages(image), store, None)
    assert core.cache(ID) == "skipped"
    assert core.images.image["cache_raw_status"] == "NotNeeded"
    assert store.created == [] and store.locked == set()


def failing_core(conf, error, status=None, message=None):
    image = {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
             "direct_url": "rbd://fsid/images/%s/snap" % ID}
    if status:
        image.update({"cache_raw_status": status, "cache_raw_error": message})
    store = LockingStore()
    return cacher.Cacher(conf, FakeImages(image), store, FailingConverter(error)), store


def test_transient_failures_count_their_attempts(conf):
    core, store = failing_core(conf, exception.ConversionFailed("qemu-img convert timed out"),
                               "Error", "temporary failure (attempt 2 of 5): Ceph timed out")
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_error"] == (
        "temporary failure (attempt 3 of 5): qemu-img convert timed out")
    assert store.removed[-1] == ID + "_raw"  # the partial cache is gone
    assert store.locked == set()


def test_permanent_failure_is_recorded_as_it_is(conf):
    core, _ = failing_core(conf, exception.UnsafeImage("unsafe qcow2 image: backing file"))
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_status"] == "Error"
    assert core.images.image["cache_raw_error"] == "unsafe qcow2 image: backing file"


def test_a_bug_leaves_no_partial_cache_and_tells_the_operator(conf):
    core, store = failing_core(conf, KeyError("virtual-size"))
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_error"].startswith("internal error: KeyError")
    assert store.removed[-1] == ID + "_raw"


def test_shutdown_leaves_the_image_queued(conf):
    core, store = failing_core(conf, cacher.SHUTDOWN)
    assert core.cache(ID) == "aborted"
    assert core.images.image["cache_raw_status"] == "Queued"
    assert store.removed[-1] == ID + "_raw"


def test_an_image_locked_by_another_worker_is_left_alone(conf):
    core, store = failing_core(conf, AssertionError("must not convert"))
    store.locks.steal(ID)
    assert core.cache(ID) == "busy"
    assert core.images.patches == []



# -- fencing: a worker that cannot prove it holds the lease touches nothing

def stalled_core(conf, outcome_of_convert):
    """A core whose conversion stalls past its lease while another worker takes the lock,
    then ends with ``outcome_of_convert`` (an exception, or None for success)."""

    class StallingConverter(FailingConverter):
        def convert(self, source, fmt, target, job):
            store.removed.clear()
            core.images.update = forbidden
            store.locks.clock.now += 120  # SIGSTOPped past the lock's duration
            store.locks.steal(ID)
            if outcome_of_convert is not None:
                raise outcome_of_convert

    def forbidden(image_id, wanted, only_if=None, lease=None):
        raise AssertionError("wrote %s without the lock" % wanted)

    core, store = failing_core(conf, None)
    core.converter = StallingConverter(None)
    store.publish = lambda name, rbd_id, lease: pytest.fail("published without the lock")
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
    core, store = failing_core(conf, exception.ConversionFailed("qemu-img failed"))
    calls = []
    store.remove = lambda name, lease=None: calls.append(("remove", name)) or "absent"
    store.remove_partial = lambda name, lease=None: calls.append(("remove_partial", name)) or \
        "absent"
    assert core.cache(ID) == "error"
    assert calls and all(kind == "remove_partial" for kind, _ in calls)


def test_a_refused_status_write_ends_in_error_and_keeps_the_finished_cache(conf):
    core, store = failing_core(conf, None)
    store.has_protected_snap = lambda name: True
    store.used_bytes = lambda name: 1 << 20
    update = core.images.update

    def refuse_cached(image_id, wanted, only_if=None, lease=None):
        if wanted.get("cache_raw_status") == "Cached":
            raise exception.ImageUpdateRefused("413 Request Entity Too Large")
        return update(image_id, wanted, only_if)

    core.images.update = refuse_cached
    assert core.cache(ID) == "error"
    assert core.images.image["cache_raw_status"] == "Error"
    assert "refused to record the finished cache" in core.images.image["cache_raw_error"]
    assert store.removed == []


# -- an image with the same data as a cached one (cacheraw.identical)

TWIN = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
HASH = {"os_hash_algo": "sha512", "os_hash_value": "ab" * 64, "size": 1 << 20}


class SharingStore(LockingStore):
    """The twin's cache is finished; clone_cache() and publish() are recorded. publish() takes
    only the RBD id of the image that clone_cache() or create() made under the lease held."""

    def __init__(self, clone_error=None):
        super().__init__()
        self.cloned = []
        self.published = []
        self.clone_error = clone_error
        self.made = {}  # cache name -> RBD id, as create() or clone_cache() returned it

    def has_protected_snap(self, name):
        return name == TWIN + "_raw" or name in self.published

    def create(self, name, size, lease):
        self.made[name] = super().create(name, size, lease)
        return self.made[name]

    def clone_cache(self, source, target, lease, independent=False):
        lease.check()
        if self.clone_error:
            raise self.clone_error
        self.cloned.append((source, target, independent))
        self.made[target] = "id-of-clone-" + target
        return source, self.made[target]

    def publish(self, name, rbd_id, lease):
        lease.check()
        assert rbd_id == self.made[name]
        self.published.append(name)

    def used_bytes(self, name, with_parent=False):
        return 0


class TwinImages(FakeImages):
    def __init__(self, image, twin):
        super().__init__(image)
        self.twin = twin

    def list(self, **filters):
        return [self.twin] if filters["os_hash_value"] == self.twin["os_hash_value"] else []


CONVERTED = AssertionError("converted")


def sharing_core(conf, mode="clone", clone_error=None, error=CONVERTED):
    image = dict(HASH, id=ID, status="active", cache_raw="True", disk_format="qcow2",
                 direct_url="rbd://fsid/images/%s/snap" % ID)
    twin = dict(HASH, id=TWIN, status="active", cache_raw="True", disk_format="qcow2",
                cache_raw_status="Cached", cache_raw_size="4194304",
                cache_raw_url="rbd://fsid/images/%s_raw/snap" % TWIN)
    conf.set_override("share_identical", mode, group="converter")
    store = SharingStore(clone_error)
    return cacher.Cacher(conf, TwinImages(image, twin), store, FailingConverter(error)), store


@pytest.mark.parametrize("mode", ["clone", "copy"])
def test_an_image_with_the_data_of_a_cached_one_shares_its_cache(conf, mode, caplog):
    caplog.set_level(logging.INFO)
    core, store = sharing_core(conf, mode)
    assert core.cache(ID) == "shared"
    assert store.cloned == [(TWIN + "_raw", ID + "_raw", mode == "copy")]
    assert store.published == [ID + "_raw"]
    assert [p.get("cache_raw_status") for p in core.images.patches] == ["Caching", "Cached"]
    assert core.images.image["cache_raw_url"] == "rbd://fsid/images/%s_raw/snap" % ID
    assert "Image %s: same data as image %s: cache made as a %s" % (ID, TWIN, mode) in caplog.text
    assert store.locked == set()


def test_sharing_off_converts(conf):
    core, store = sharing_core(conf, "off", error=None)
    store.used_bytes = lambda name: 1 << 20
    assert core.cache(ID) == "cached"
    assert store.cloned == [] and store.created
    assert store.published == [ID + "_raw"] and store.made[ID + "_raw"] == "rbd-id"


def test_a_forced_recache_converts_into_an_independent_cache(conf):
    core, store = sharing_core(conf, error=None)
    assert core.cache(ID, force=True) == "cached"
    assert store.cloned == [] and store.created
    assert store.published == [ID + "_raw"] and store.made[ID + "_raw"] == "rbd-id"


def test_a_failed_clone_is_removed_and_the_image_converted(conf):
    core, store = sharing_core(conf, clone_error=exception.CephBusy("snapshot unprotected"),
                               error=None)
    assert core.cache(ID) == "cached"
    assert store.removed[-1] == ID + "_raw" and store.created
    assert store.published == [ID + "_raw"] and store.made[ID + "_raw"] == "rbd-id"
