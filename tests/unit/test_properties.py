"""The rules of the StarlingX image properties, case by case from the spec's text."""

import hashlib

import pytest

from cacheraw import properties

ID = "9d34ff07-6f66-4107-9363-e38b0b559a67"
FSID = "840f16bc-3238-4adb-8700-6b9876c23462"
URL = "rbd://%s/images/%s_raw/snap" % (FSID, ID)

# The spec's own examples: the create request and the cached image it shows.
SPEC_REQUEST = {
    "hw_wrs_live_migration_timeout": "400", "name": "cirros", "container_format": "bare",
    "cache_raw": "True", "visibility": "public", "disk_format": "qcow2",
    "sw_wrs_auto_recovery": "False", "hw_wrs_live_migration_max_downtime": "350",
}
SPEC_CACHED = dict(SPEC_REQUEST, id=ID, store="rbd", status="active", cache_raw_url=URL,
                   cache_raw_size="41126400", cache_raw_status="Cached",
                   direct_url="rbd://%s/images/%s/snap" % (FSID, ID), size=13287936)


def test_the_spec_examples_have_no_problem():
    assert properties.problems(SPEC_REQUEST) == []
    assert properties.problems(SPEC_CACHED) == []


def test_missing_properties_are_never_a_problem():
    assert properties.problems({"id": ID, "name": "plain"}) == []


# (property, value, valid) — "xsd:bool"; "set this value to 0" to disable; "minimum timeout is
# 120 seconds and the maximum timeout value is 800 seconds"; "minimum timer value is 100
# milliseconds"; store "either file ... or rbd"; the four cache states.
CASES = [
    ("cache_raw", "True", True), ("cache_raw", "False", True), ("cache_raw", "true", True),
    ("cache_raw", "1", True), ("cache_raw", "no", True), ("cache_raw", "maybe", False),
    ("cache_raw", "", False), ("cache_raw", " True", False), ("cache_raw", True, False),
    ("sw_wrs_auto_recovery", "False", True), ("sw_wrs_auto_recovery", "TRUE", True),
    ("sw_wrs_auto_recovery", "disabled", False),
    ("hw_wrs_live_migration_timeout", "0", True),
    ("hw_wrs_live_migration_timeout", "120", True),
    ("hw_wrs_live_migration_timeout", "400", True),
    ("hw_wrs_live_migration_timeout", "800", True),
    ("hw_wrs_live_migration_timeout", "119", False),
    ("hw_wrs_live_migration_timeout", "100", False),
    ("hw_wrs_live_migration_timeout", "801", False),
    ("hw_wrs_live_migration_timeout", "900", False),
    ("hw_wrs_live_migration_timeout", "-1", False),
    ("hw_wrs_live_migration_timeout", "400.0", False),
    ("hw_wrs_live_migration_timeout", "0400", False),
    ("hw_wrs_live_migration_timeout", "abc", False),
    ("hw_wrs_live_migration_timeout", 400, False),
    ("hw_wrs_live_migration_max_downtime", "100", True),
    ("hw_wrs_live_migration_max_downtime", "350", True),
    ("hw_wrs_live_migration_max_downtime", "500", True),
    ("hw_wrs_live_migration_max_downtime", "100000", True),
    ("hw_wrs_live_migration_max_downtime", "99", False),
    ("hw_wrs_live_migration_max_downtime", "0", False),
    ("hw_wrs_live_migration_max_downtime", "-100", False),
    ("hw_wrs_live_migration_max_downtime", "1e3", False),
    ("store", "rbd", True), ("store", "file", True), ("store", "swift", False),
    ("store", "RBD", False),
    ("cache_raw_status", "Queued", True), ("cache_raw_status", "Caching", True),
    ("cache_raw_status", "Error", True), ("cache_raw_status", "cached", False),
    ("cache_raw_status", "Done", False),
    ("cache_raw_size", "41126400", True), ("cache_raw_size", "0", True),
    ("cache_raw_size", "-1", False), ("cache_raw_size", "41 MB", False),
    ("cache_raw_error", "image is already raw; clone it directly", True),
    ("cache_raw_error", "two\nlines", False),
]


@pytest.mark.parametrize("name, value, valid", CASES)
def test_one_property(name, value, valid):
    image = {"id": ID, name: value}
    if name == "cache_raw_status" and valid:
        image.update(cache_raw_url=URL, cache_raw_size="1", cache_raw_error="why")
    found = properties.problems(image)
    if valid:
        assert found == []
    else:
        assert len(found) == 1, found
        assert found[0].startswith("%s is %r: it must " % (name, value))
        assert found[0].endswith(".")


@pytest.mark.parametrize("url, complaint", [
    ("rbd://%s/images/%s_raw" % (FSID, ID), "rbd://<ceph fsid>"),
    ("rbd:images/%s_raw@snap" % ID, "rbd://<ceph fsid>"),
    ("rbd://%s/images/5c7f6f9e-0f0e-4d1c-9d43-7d1b1f0f6a11_raw/snap" % FSID, "another image"),
])
def test_cache_url(url, complaint):
    (found,) = properties.problems({"id": ID, "cache_raw_url": url})
    assert found.startswith("cache_raw_url is ") and complaint in found


def test_a_cached_image_names_its_cache():
    found = properties.problems({"id": ID, "cache_raw_status": "Cached"})
    assert found == ["cache_raw_url is missing although cache_raw_status is Cached.",
                     "cache_raw_size is missing although cache_raw_status is Cached."]


def test_an_error_says_why():
    assert properties.problems({"id": ID, "cache_raw_status": "Error"}) == [
        "cache_raw_error is missing although cache_raw_status is Error."]


def test_several_problems_one_sentence_each():
    found = properties.problems({"cache_raw": "maybe", "hw_wrs_live_migration_timeout": "900",
                                 "store": "swift"})
    assert [f.split(" ")[0] for f in found] == [
        "cache_raw", "hw_wrs_live_migration_timeout", "store"]


@pytest.mark.parametrize("image, cache_raw, auto_recovery", [
    ({}, False, True),                                   # the documented defaults
    ({"cache_raw": "True", "sw_wrs_auto_recovery": "False"}, True, False),
    ({"cache_raw": "junk", "sw_wrs_auto_recovery": "junk"}, False, True),
])
def test_boolean_defaults(image, cache_raw, auto_recovery):
    assert properties.cache_raw(image) is cache_raw
    assert properties.auto_recovery(image) is auto_recovery


# "If the timeout value is provisioned in both the flavor and the image, the smaller value is
# used. The default is 800 seconds. ... To disable the live migration timeout feature, set this
# value to 0."
@pytest.mark.parametrize("flavor, image, seconds", [
    (None, None, 800),
    (None, "400", 400),
    ("300", None, 300),
    ("300", "400", 300),
    ("600", "400", 400),
    (None, "0", 0),
    ("0", "400", 0),
    ("400", "0", 0),
    (120, 800, 120),
    ("900", "400", 400),     # an invalid value counts as not set
    ("abc", None, 800),
    ("100", "119", 800),
])
def test_effective_migration_timeout(flavor, image, seconds):
    assert properties.effective_migration_timeout(flavor, image) == seconds


# "If the max downtime value is provisioned in both the flavor and the image, the value from the
# flavor overrides the value from the image. The default is 500 milliseconds. The minimum timer
# value is 100 milliseconds."
@pytest.mark.parametrize("flavor, image, millis", [
    (None, None, 500),
    (None, "350", 350),
    ("300", None, 300),
    ("300", "350", 300),
    ("1000", "350", 1000),
    ("99", "350", 350),      # an invalid flavor value counts as not set
    (None, "99", 500),
    (100, None, 100),
])
def test_effective_migration_max_downtime(flavor, image, millis):
    assert properties.effective_migration_max_downtime(flavor, image) == millis


def test_cache_url_is_built_and_read_back_in_one_place():
    url = properties.cache_url(FSID, "images", ID)
    assert url == URL
    assert properties.parse_cache_url(url) == (FSID, "images", ID)


@pytest.mark.parametrize("url", [
    URL + "\n", URL + "/", "x" + URL, URL.replace("/snap", "/other"),
    URL.replace(ID + "_raw", ID), URL.replace(FSID, "fsid"), URL.replace(ID, ID.upper()),
    "rbd://%s//%s_raw/snap" % (FSID, ID), "rbd://%s/a/b/%s_raw/snap" % (FSID, ID), None, 7,
    "rbd://%s/../%s_raw/snap" % (FSID, ID), "rbd://%s/a%%2Fb/%s_raw/snap" % (FSID, ID),
])
def test_only_a_whole_cache_url_is_read(url):
    assert properties.parse_cache_url(url) is None


@pytest.mark.parametrize("value", ["True", "true", "yes", "1", "on"])
def test_cache_raw_accepts_the_boolean_strings(value):
    assert properties.cache_raw({"cache_raw": value}) is True


@pytest.mark.parametrize("value", [" True", "True\n", "maybe", "", None, True])
def test_a_cache_raw_that_is_no_boolean_string_asks_for_no_cache(value):
    # The same rule that warns about the value as invalid: the worker does not cache it.
    assert properties.cache_raw({"cache_raw": value}) is False
def test_cache_url_is_what_parse_cache_url_reads():
    fsid, image_id = "5fe62cc7-0392-4a32-8466-081ce0ea970f", "155d900f-4e14-4e4c-a73d-069cbf4541e6"
    url = properties.cache_url(fsid, "images", image_id)
    assert url == "rbd://%s/images/%s_raw/snap" % (fsid, image_id)
    assert properties.parse_cache_url(url) == (fsid, "images", image_id)


@pytest.mark.parametrize("url", [
    None, 42, "", "rbd://5fe62cc7-0392-4a32-8466-081ce0ea970f/images/"
    "155d900f-4e14-4e4c-a73d-069cbf4541e6_raw/snap\n",
    "rbd://5fe62cc7-0392-4a32-8466-081ce0ea970f/../155d900f-4e14-4e4c-a73d-069cbf4541e6_raw/snap",
    "rbd://5fe62cc7-0392-4a32-8466-081ce0ea970f/a%2Fb/155d900f-4e14-4e4c-a73d-069cbf4541e6_raw/snap",
    "rbd://5FE62CC7-0392-4a32-8466-081ce0ea970f/images/155d900f-4e14-4e4c-a73d-069cbf4541e6_raw/snap",
])
def test_parse_cache_url_refuses_anything_else(url):
    assert properties.parse_cache_url(url) is None


@pytest.mark.parametrize("image_id,ok", [(ID, True), (ID.upper(), False), ("x", False),
                                         (ID + "/../etc", False), ("../" + ID[3:], False),
                                         (None, False)])
def test_only_lowercase_uuids_name_anything_in_ceph(image_id, ok):
    assert properties.valid_id(image_id) is ok


def test_only_uuid_caches_are_ever_removed_unasked():
    assert properties.is_cache_name(ID + "_raw")
    assert properties.image_id_of(properties.cache_name(ID)) == ID
    for name in (ID, "volume-1_raw", ID.upper() + "_raw", ID + "_raw2", "x" + ID + "_raw",
                 ID[:-4] + "_raw"):
        assert not properties.is_cache_name(name)
        assert properties.image_id_of(name) is None


def test_not_needed_stands_alone():
    assert properties.problems({"id": ID, "cache_raw_status": "NotNeeded"}) == []
    assert properties.problems({"id": ID, "cache_raw_status": "NotNeeded",
                                "cache_raw_url": URL, "cache_raw_error": "why"}) == [
        "cache_raw_url is set although cache_raw_status is NotNeeded.",
        "cache_raw_error is set although cache_raw_status is NotNeeded."]


def test_only_a_raw_image_needs_no_cache():
    assert properties.needs_no_cache({"disk_format": "raw"})
    assert not properties.needs_no_cache({"disk_format": "qcow2"})
    assert not properties.needs_no_cache({})


def test_the_secure_hashes_are_hashlib_s_with_their_hex_lengths():
    assert properties.SECURE_HASHES == {
        name: 2 * hashlib.new(name).digest_size for name in ("sha256", "sha384", "sha512")}
