"""Which images hold the same data (cacheraw.identical): only what the image service hashed."""

import pytest

from cacheraw import exception
from cacheraw import identical

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
TWIN = "5b0ec9b3-5bd4-4bd6-a52a-1f9b0c1a3a2e"
OTHER = "9f1c7d0e-2c4b-4e55-8d5e-0b7f0f6c1d11"
SHA512 = "ab" * 64


def image(image_id=ID, **fields):
    found = {"id": image_id, "status": "active", "os_hash_algo": "sha512",
             "os_hash_value": SHA512, "size": 1 << 20, "disk_format": "qcow2",
             "checksum": "c" * 32}
    found.update(fields)
    return found


@pytest.mark.parametrize("fields", [
    {"os_hash_algo": "md5", "os_hash_value": "c" * 32},  # md5 alone: never
    {"os_hash_algo": None},
    {"os_hash_value": None},
    {"os_hash_value": "ab" * 63},  # not a sha512 digest
    {"os_hash_value": "zz" * 64},
    {"os_hash_value": "AB" * 64},
    {"size": None},
    {"size": 0},
    {"status": "queued"},
])
def test_an_image_without_a_secure_hash_computed_by_the_image_service_has_no_twin(fields):
    assert identical.fingerprint(image(**fields)) is None
    assert not identical.same_data(image(**fields), image(TWIN, **fields))


@pytest.mark.parametrize("algo, value", [("sha256", "ab" * 32), ("sha384", "ab" * 48),
                                         ("sha512", "ab" * 64)])
def test_secure_hashes_decide(algo, value):
    assert identical.same_data(image(os_hash_algo=algo, os_hash_value=value),
                               image(TWIN, os_hash_algo=algo, os_hash_value=value))


@pytest.mark.parametrize("fields", [{"size": 2 << 20}, {"disk_format": "vmdk"},
                                    {"os_hash_algo": "sha256", "os_hash_value": "ab" * 32},
                                    {"status": "deactivated"}])
def test_any_difference_is_other_data(fields):
    assert not identical.same_data(image(), image(TWIN, **fields))


def test_an_image_is_not_its_own_twin():
    assert not identical.same_data(image(), image())


class ListedImages:
    def __init__(self, images, error=None):
        self.images = images
        self.queries = []
        self.error = error

    def list(self, **filters):
        self.queries.append(filters)
        if self.error:
            raise self.error
        return [i for i in self.images if i["os_hash_value"] == filters["os_hash_value"]]


def test_the_twin_is_an_image_of_the_same_data_with_a_valid_cache():
    listed = ListedImages([image(OTHER, size=2 << 20, cache_raw_status="Cached"),
                           image(TWIN, cache_raw_status="Queued"),
                           image(ID), image(TWIN, cache_raw_status="Cached")])
    finder = identical.Finder("clone", listed,
                              lambda other: other.get("cache_raw_status") == "Cached")
    assert finder.twin(image())["id"] == TWIN
    assert listed.queries[0] == {"os_hash_value": SHA512, "os_hidden": "false"}


def test_a_hidden_twin_is_found():
    class Hidden(ListedImages):
        def list(self, **filters):
            return super().list(**filters) if filters["os_hidden"] == "true" else []

    finder = identical.Finder("copy", Hidden([image(TWIN)]), lambda other: True)
    assert finder.twin(image())["id"] == TWIN


def test_sharing_off_asks_nothing():
    listed = ListedImages([image(TWIN)])
    assert identical.Finder("off", listed, lambda other: True).twin(image()) is None
    assert listed.queries == []


def test_an_image_api_that_cannot_list_costs_only_a_conversion():
    listed = ListedImages([], error=exception.ImageAPIUnavailable("down"))
    assert identical.Finder("clone", listed, lambda other: True).twin(image()) is None
