"""The core's decisions (cacheraw.cacher), with fakes that keep the real exception names."""

import contextlib
import datetime
import logging

import pytest

from cacheraw import cacher
from cacheraw import exception
from cacheraw.ceph import lease
from tests.unit.conftest import FakeImages
from tests.unit.conftest import FakeLocks
from tests.unit.conftest import FakeStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


@pytest.mark.parametrize("value,wanted", [("True", True), ("true", True), ("yes", True),
                                          ("1", True), ("on", True), ("False", False),
                                          ("no", False), (None, False), ("maybe", False)])
def test_cache_raw_accepts_the_usual_boolean_spellings(value, wanted):
    image = {"status": "active", "cache_raw": value}
    assert cacher.wants_cache(image) is wanted


def test_only_active_images_want_a_cache():
    assert not cacher.wants_cache({"status": "queued", "cache_raw": "True"})


def test_a_raw_image_needs_no_cache_and_is_no_failure(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "raw"})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    assert core.request(images.get(ID)) is False
    assert images.image["cache_raw_status"] == "NotNeeded"
    assert "cache_raw_error" not in images.image
    assert queued == []
    core.on_event("image.update", ID)  # written once: the next event finds nothing to do
    assert images.patches == [{"cache_raw_status": "NotNeeded", "cache_raw_error": None,
                               "cache_raw_url": None, "cache_raw_size": None}]


def test_the_sweep_turns_the_error_of_a_raw_image_into_not_needed(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "raw", "cache_raw_status": "Error",
                         "cache_raw_error": "image is already raw; clone it directly"})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    cacher.Sweeper(core)._sweep_image(images.get(ID))
    assert images.image["cache_raw_status"] == "NotNeeded"
    assert "cache_raw_error" not in images.image


def test_a_refused_not_needed_leaves_the_image_alone(conf):
    class RefusingImages(FakeImages):
        def update(self, image_id, wanted, only_if=None, only_if_absent=None):
            raise exception.ImageUpdateRefused("400: 'NotNeeded' is not one of the enum")
    images = RefusingImages({"id": ID, "status": "active", "cache_raw": "True",
                             "disk_format": "raw"})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    assert core.request(images.get(ID)) is False


def test_converting_a_raw_image_records_not_needed_and_converts_nothing(conf):
    image = {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "raw",
             "cache_raw_status": "Queued"}
    store = LockingStore()
    core = cacher.Cacher(conf, FakeImages(image), store, None)
    assert core.cache(ID) == "skipped"
    assert core.images.image["cache_raw_status"] == "NotNeeded"
    assert store.created == [] and store.locked == set()


def test_new_request_is_queued_before_it_is_acknowledged(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "direct_url": "rbd://fsid/images/%s/snap" % ID})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    core.on_event("image.upload", ID)
    assert images.image["cache_raw_status"] == "Queued"
    assert images.image["store"] == "rbd"
    assert queued == [ID]
    # One write: the store and the status together.
    assert images.patches == [{"cache_raw_status": "Queued", "cache_raw_error": None,
                               "store": "rbd"}]


def test_store_is_set_alone_when_another_worker_queued_the_image_first(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "direct_url": "rbd://fsid/images/%s/snap" % ID})
    seen = images.get(ID)
    images.image["cache_raw_status"] = "Queued"
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=lambda image_id: True)
    core.request(seen)
    assert images.patches == [{"store": "rbd"}]
    assert images.image["cache_raw_status"] == "Queued"


def test_store_alone_for_an_image_that_wants_no_cache(conf):
    images = FakeImages({"id": ID, "status": "active", "disk_format": "qcow2",
                         "direct_url": "file:///var/lib/glance/images/%s" % ID})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    assert core.request(images.get(ID)) is False
    assert images.patches == [{"store": "file"}]


def test_permanent_error_is_not_requeued_by_events(conf):
    images = FakeImages({"id": ID, "status": "active", "cache_raw": "True",
                         "disk_format": "qcow2", "cache_raw_status": "Error",
                         "cache_raw_error": "unsafe qcow2 image: backing file"})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    core.on_event("image.update", ID)
    assert queued == []


def transient_image(attempt, minutes_ago):
    updated = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(
        minutes=minutes_ago)
    return {"id": ID, "status": "active", "cache_raw": "True", "disk_format": "qcow2",
            "cache_raw_status": "Error", "updated_at": updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cache_raw_error": "temporary failure (attempt %d of 5): Ceph timed out" % attempt}


@pytest.mark.parametrize("attempt,minutes_ago,due", [(1, 0, False), (1, 2, True),
                                                    (3, 3, False), (3, 5, True),
                                                    (5, 600, False)])
def test_sweep_retries_transient_errors_with_growing_capped_delays(conf, attempt, minutes_ago,
                                                                   due):
    queued = []
    core = cacher.Cacher(conf, None, FakeStore(), None, enqueue=queued.append)
    assert cacher.Sweeper(core)._retry_due(transient_image(attempt, minutes_ago)) is due
    assert queued == ([ID] if due else [])


class LockingStore(FakeStore):
    """A store whose cache image and lock are remembered, for the conversion flow."""

    def __init__(self):
        self.removed = []
        self.locks = FakeLocks()
        self.created = []

    @property
    def locked(self):
        return {i for i in self.locks.holders if self.locks.is_locked(i)}

    def conversion_lock(self, image_id, on_lost=None):
        return lease.hold(self.locks, image_id, 60, on_lost, clock=self.locks.clock)

    def remove(self, name, lease=None):
        if lease is not None:
            lease.check()
        self.removed.append(name)
        return "absent"

    def remove_partial(self, name, lease=None):
        return self.remove(name, lease)

    @contextlib.contextmanager
    def serve_snapshot(self, name, snapshot, path):
        yield ServedImage()

    @contextlib.contextmanager
    def serve_cache(self, name, path):
        yield ServedImage()

    def pool_space(self):
        return 1 << 40, "free space"

    def reserve(self, lease, need):
        lease.check()

    def create(self, name, size, lease):
        lease.check()
        self.created.append((name, size))
        return "rbd-id"

    def publish(self, name, rbd_id, lease):
        lease.check()


class ServedImage:
    def check(self):
        """Still there."""


class FailingConverter:
    def __init__(self, error):
        self.error = error

    def inspect(self, source, fmt):
        pass

    def info(self, source, fmt, job=None):
        return {"virtual-size": 1 << 20}

    def data_bytes(self, source, fmt, job=None, bound=None, info=None):
        return 1 << 20

    def convert(self, source, fmt, target, job):
        if self.error is not None:
            raise self.error


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


def test_the_notification_of_our_own_write_is_not_read_again(conf):
    class OwnWrite(FakeImages):
        def shows_own_write(self, image_id, payload):
            return payload == {"id": image_id}

        def get(self, image_id):
            raise AssertionError("read again")

    core = cacher.Cacher(conf, OwnWrite({"id": ID}), FakeStore(), None)
    core.on_event("image.update", ID, {"id": ID})
    with pytest.raises(AssertionError):
        core.on_event("image.upload", ID, {"id": ID})


class OrphanStore(LockingStore):
    """Two orphaned caches; Ceph refuses to remove the first, and to purge the trash."""

    def __init__(self, ids):
        super().__init__()
        self.ids = ids

    def list_caches(self):
        return [image_id + "_raw" for image_id in self.ids]

    def remove(self, name, lease=None):
        if name.startswith(self.ids[0]):
            raise exception.CephError("PermissionError: error listing children")
        self.removed.append(name)
        return "removed"

    def purge_trash(self):
        raise exception.CephError("PermissionError: error listing children")


class NoImages:
    def list(self, **filters):
        return []

    def get(self, image_id):
        raise exception.ImageNotFound(image_id)


def test_one_cache_that_cannot_be_removed_does_not_stop_the_sweep(conf):
    other = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
    store = OrphanStore([ID, other])
    core = cacher.Cacher(conf, NoImages(), store, None, enqueue=lambda image_id: None)
    assert core.sweep() == 0
    assert store.removed == [other + "_raw"]


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


def test_a_forged_delete_of_a_live_image_removes_nothing(conf):
    from cacheraw import cacher
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


# -- warnings about an image's invalid extension properties, with its id, once per change

@pytest.fixture
def core_for(conf):
    return lambda image: cacher.Cacher(conf, FakeImages(image), FakeStore(), converter=None)


def warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name == "cacheraw.cacher"]


def test_invalid_properties_are_warned_once_per_change(core_for, caplog):
    image = {"id": ID, "status": "active", "disk_format": "raw",
             "hw_wrs_live_migration_timeout": "900", "sw_wrs_auto_recovery": "maybe"}
    core = core_for(image)
    with caplog.at_level(logging.WARNING):
        core.on_event("image.update", ID)
        core.on_event("image.update", ID)  # the same problems: said once
    assert warnings(caplog) == [
        "Image %s: sw_wrs_auto_recovery is 'maybe': it must be a boolean string such as "
        "'True' or 'False'." % ID,
        "Image %s: hw_wrs_live_migration_timeout is '900': it must be '0' (no timeout) or a "
        "whole number of seconds from 120 to 800." % ID]
    caplog.clear()
    core.images.image["hw_wrs_live_migration_timeout"] = "99"
    with caplog.at_level(logging.WARNING):
        core.on_event("image.update", ID)
    assert len(warnings(caplog)) == 2 and "'99'" in warnings(caplog)[1]


def test_valid_properties_are_not_warned(core_for, caplog):
    core = core_for({"id": ID, "status": "active", "disk_format": "raw",
                           "hw_wrs_live_migration_timeout": "400"})
    with caplog.at_level(logging.WARNING):
        core.on_event("image.update", ID)
    assert warnings(caplog) == []


def test_the_memory_of_warned_images_is_bounded():
    problems = cacher.PropertyProblems()
    for n in range(problems.REMEMBERED + 10):
        problems.warn({"id": "image-%d" % n, "store": "swift"})
    assert len(problems._last) == problems.REMEMBERED


def test_an_image_deleted_between_its_read_and_its_write_ends_the_event_quietly(conf, caplog):
    class GoneOnWrite(FakeImages):
        def update(self, image_id, wanted, only_if=None, only_if_absent=None):
            raise exception.ImageNotFound(image_id)
    images = GoneOnWrite({"id": ID, "status": "active", "disk_format": "raw",
                          "direct_url": "rbd://fsid/images/%s/snap" % ID})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    with caplog.at_level(logging.INFO):
        core.on_event("image.upload", ID)  # store = rbd would be written: the image is gone
    assert "Image %s is gone" % ID in caplog.text


def test_an_import_is_queued_at_the_update_that_shows_it_active(conf):
    # Glance's import task sends image.upload and image.activate before it saves the image:
    # the image API still says "importing" then.
    images = FakeImages({"id": ID, "status": "importing", "cache_raw": "True",
                         "disk_format": "qcow2", "direct_url": "rbd://fsid/images/%s/snap" % ID})
    queued = []
    core = cacher.Cacher(conf, images, FakeStore(), None, enqueue=queued.append)
    for event in ("image.update", "image.upload"):
        core.on_event(event, ID, {"id": ID, "status": "active"})
    assert queued == [] and images.patches == []
    images.image["status"] = "active"
    core.on_event("image.update", ID, {"id": ID, "status": "active"})
    assert queued == [ID]
    assert images.image["cache_raw_status"] == "Queued"


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

    def used_bytes(self, name):
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


# -- the sweep's breaker: most caches' images reading as gone at once removes nothing

def test_the_sweep_removes_nothing_when_most_cached_images_read_as_gone(conf, caplog):
    from cacheraw import metrics
    ids = ["%08d-0000-4000-8000-000000000000" % n for n in range(6)]
    store = OrphanStore([ID] + ids)
    store.remove = lambda name, lease: store.removed.append(name) or "removed"
    store.purge_trash = lambda: []
    core = cacher.Cacher(conf, NoImages(), store, None, enqueue=lambda image_id: None)
    core.sweep()
    assert store.removed == []
    assert metrics.ORPHAN_BREAKER._value.get() == 1
    assert "removing none of them" in caplog.text
    core.sweep(confirmed=True)  # cacheraw-manage reconcile
    assert len(store.removed) == 7
    store.ids = ids[:2]  # fewer than orphan_breaker_min
    core.sweep()
    assert metrics.ORPHAN_BREAKER._value.get() == 0
    assert len(store.removed) == 9


def test_a_removed_cache_purges_at_once_the_trashed_cache_it_shared(conf, caplog):
    caplog.set_level(logging.INFO)
    store = LockingStore()
    store.remove = lambda name, lease: "removed"
    store.purge_trash = lambda: [TWIN + "_raw"]
    core = cacher.Cacher(conf, FakeImages(None), store, None)
    core.forget(ID)
    assert "Purged cache %s_raw: its last clone is gone" % TWIN in caplog.text
    store.remove = lambda name, lease: "trashed"
    store.purge_trash = lambda: pytest.fail("a trashed cache frees nothing")
    core.forget(ID)
