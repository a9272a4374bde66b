"""What an image asks for, read from the image and the options alone (cacheraw.wants)."""

import pytest

from cacheraw import wants

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


@pytest.mark.parametrize("value,wanted", [("True", True), ("true", True), ("yes", True),
                                          ("1", True), ("on", True), ("False", False),
                                          ("no", False), (None, False), ("maybe", False)])
def test_cache_raw_accepts_the_usual_boolean_spellings(value, wanted):
    image = {"status": "active", "cache_raw": value}
    assert wants.wants_cache(image) is wanted


def test_only_active_images_want_a_cache():
    assert not wants.wants_cache({"status": "queued", "cache_raw": "True"})


@pytest.mark.parametrize("fmt,refused", [("qcow2", False), ("vmdk", True), (None, True)])
def test_a_format_not_allowed_is_refused_naming_the_allowed_ones(conf, fmt, refused):
    reason = wants.refusal(conf, {"id": ID, "disk_format": fmt})
    assert (reason == "disk_format %s is not converted here (allowed: qcow2)" % fmt) is refused
    assert (reason is None) is not refused


@pytest.mark.parametrize("status,error,attempt", [
    ("Error", "temporary failure (attempt 3 of 5): Ceph timed out", 3),
    ("Error", "unsafe qcow2 image: backing file", None),
    ("Error", None, None),
    ("Caching", "temporary failure (attempt 3 of 5): Ceph timed out", None)])
def test_only_a_transient_error_has_an_attempt(status, error, attempt):
    image = {"cache_raw_status": status, "cache_raw_error": error}
    assert wants.transient_attempt(image) == attempt


@pytest.mark.parametrize("image,fix", [
    ({"status": "active", "direct_url": "rbd://fsid/images/%s/snap" % ID}, {"store": "rbd"}),
    ({"status": "active", "direct_url": "file:///var/lib/glance/images/" + ID},
     {"store": "file"}),
    ({"status": "active", "direct_url": "rbd://fsid/images/%s/snap" % ID, "store": "rbd"}, {}),
    ({"status": "active", "direct_url": "swift://x", "store": "swift"}, {}),
    ({"status": "queued", "direct_url": "rbd://fsid/images/%s/snap" % ID}, {})])
def test_store_is_fixed_only_on_an_active_image_whose_data_is_elsewhere(image, fix):
    assert wants.store_fix(image) == fix


def test_an_error_clears_the_cache_properties():
    assert wants.error_props("broken") == {"cache_raw_status": "Error",
                                           "cache_raw_error": "broken",
                                           "cache_raw_url": None, "cache_raw_size": None}
