"""The worker warns, with the image id, about an image's invalid extension properties, once per
change."""

import logging

import pytest

from cacheraw import cacher
ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


@pytest.fixture
def core_for(conf, fake_images, fake_store):
    return lambda image: cacher.Cacher(conf, fake_images(image), fake_store(), converter=None)


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
