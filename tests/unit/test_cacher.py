"""The core's decisions on an image's events (cacheraw.cacher), with fakes that keep the real
exception names."""

import logging

import pytest

from cacheraw import cacher
from cacheraw import exception
from tests.unit.conftest import FakeImages
from tests.unit.conftest import FakeStore
from tests.unit.conftest import LockingStore

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


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


def test_a_refused_not_needed_leaves_the_image_alone(conf):
    class RefusingImages(FakeImages):
        def update(self, image_id, wanted, only_if=None, only_if_absent=None):
            raise exception.ImageUpdateRefused("400: 'NotNeeded' is not one of the enum")
    images = RefusingImages({"id": ID, "status": "active", "cache_raw": "True",
                             "disk_format": "raw"})
    core = cacher.Cacher(conf, images, FakeStore(), None)
    assert core.request(images.get(ID)) is False


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


def test_a_forged_delete_of_a_live_image_removes_nothing(conf):
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
