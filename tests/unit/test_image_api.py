"""The image API client: the JSON patches it sends, the listing's pages, refused updates; no
read before a write of an image it knows, a fresh read when the image changed under the patch,
and every request counted."""

import copy

import pytest
from keystoneauth1 import exceptions as ks_exc
from oslo_config import cfg

from cacheraw import exception
from cacheraw import image_api
from cacheraw import metrics
from cacheraw.conf import register_opts

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


class Response:
    def __init__(self, body):
        self._body = body

    def json(self):
        return copy.deepcopy(self._body)


class FakeGlance:
    """Applies JSON patches as Glance does: add of a present property, replace or remove of a
    missing one is a conflict (HTTP 409)."""

    def __init__(self, image):
        self.image = image
        self.calls = []

    def request(self, url, method, **kwargs):
        self.calls.append(method)
        if method == "GET":
            return Response(self.image)
        for op in kwargs["json"]:
            name = op["path"][1:]
            if (op["op"] == "add") == (name in self.image):
                raise ks_exc.Conflict("Property %s" % name)
        for op in kwargs["json"]:
            name = op["path"][1:]
            if op["op"] == "remove":
                del self.image[name]
            else:
                self.image[name] = op["value"]
        return Response(self.image)


@pytest.fixture
def api():
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([])
    glance = FakeGlance({"id": ID, "status": "active"})
    client = image_api.ImageAPI.__new__(image_api.ImageAPI)
    client._api = image_api._CountingAdapter(glance)
    client._seen = image_api._Remembered()
    client._retry = image_api.retry.policy(conf, image_api.exception.ImageAPIUnavailable)
    return client, glance


def test_a_write_of_an_image_read_before_needs_no_read(api):
    client, glance = api
    client.get(ID)
    client.update(ID, {"cache_raw_status": "Caching"})
    client.update(ID, {"cache_raw_status": "Cached", "cache_raw_size": "1"})
    assert glance.calls == ["GET", "PATCH", "PATCH"]
    assert glance.image["cache_raw_status"] == "Cached"


def test_an_unknown_image_is_read_before_its_first_write(api):
    client, glance = api
    client.update(ID, {"store": "rbd"})
    assert glance.calls == ["GET", "PATCH"]


def test_a_conflict_reads_the_image_again_and_patches_what_it_found(api):
    client, glance = api
    client.get(ID)
    glance.image["cache_raw_status"] = "Queued"  # written by somebody else meanwhile
    image = client.update(ID, {"cache_raw_status": "Caching", "cache_raw_error": None})
    assert glance.calls == ["GET", "PATCH", "GET", "PATCH"]
    assert image["cache_raw_status"] == "Caching"


def test_only_if_is_decided_on_a_fresh_read(api):
    client, glance = api
    client.get(ID)
    glance.image["cache_raw_status"] = "Cached"  # recorded by another worker meanwhile
    image = client.update(ID, {"cache_raw_status": "Error"},
                          only_if=lambda fresh: fresh.get("cache_raw_status") != "Cached")
    assert image["cache_raw_status"] == "Cached"
    assert glance.calls == ["GET", "GET"]


def test_only_if_absent_needs_no_read_and_yields_to_a_property_that_appeared(api):
    client, glance = api
    client.get(ID)
    client.update(ID, {"cache_raw_status": "Queued"}, only_if_absent="cache_raw_status")
    assert glance.calls == ["GET", "PATCH"]
    glance.image["cache_raw_status"] = "Caching"
    client.update(ID, {"cache_raw_status": "Queued"}, only_if_absent="cache_raw_status")
    assert glance.image["cache_raw_status"] == "Caching"
    assert glance.calls == ["GET", "PATCH", "GET"]
    del glance.image["cache_raw_status"]
    client._seen.put(dict(glance.image))  # remembered without the status
    glance.image["cache_raw_status"] = "Cached"
    client.update(ID, {"cache_raw_status": "Queued"}, only_if_absent="cache_raw_status")
    assert glance.image["cache_raw_status"] == "Cached"  # the add conflicted, the read saw it


def test_a_write_that_changes_nothing_is_confirmed_by_a_read(api):
    client, glance = api
    client.update(ID, {"store": "rbd"})
    glance.image.pop("store")  # removed by somebody else
    client.update(ID, {"store": "rbd"})
    assert glance.image["store"] == "rbd"
    assert glance.calls == ["GET", "PATCH", "GET", "PATCH"]


def test_endless_conflicts_end_in_an_error(api):
    client, glance = api
    glance.request = lambda url, method, **kw: (_ for _ in ()).throw(ks_exc.Conflict("busy")) \
        if method == "PATCH" else Response({"id": ID})
    with pytest.raises(image_api.exception.ImageAPIError):
        client.update(ID, {"store": "rbd"})


def test_requests_are_counted_by_method(api):
    client, _ = api
    before = metrics.IMAGE_API_REQUESTS.labels(method="GET")._value.get()
    client.get(ID)
    assert metrics.IMAGE_API_REQUESTS.labels(method="GET")._value.get() == before + 1


def payload_of(image):
    """A notification payload as Glance formats one: the extra properties apart."""
    base = ("id", "status", "disk_format", "updated_at", "size")
    return dict({k: image[k] for k in base if k in image}, is_public=False, deleted=False,
                properties={k: v for k, v in image.items() if k not in base})


@pytest.fixture
def written(api):
    client, glance = api
    glance.image.update(disk_format="qcow2", size=5, updated_at="2026-11-28T10:00:00Z",
                        cache_raw="True")
    client.update(ID, {"cache_raw_status": "Caching"})
    return client, glance


def test_the_notification_of_our_own_write_is_recognised(written):
    client, glance = written
    assert client.shows_own_write(ID, payload_of(glance.image))


@pytest.mark.parametrize("change", [
    {"cache_raw_status": "Queued"}, {"cache_raw": "False"}, {"store": "file"},
    {"status": "deactivated"}, {"updated_at": "2026-11-28T10:00:01Z"}, {"other": "x"}])
def test_a_notification_of_any_other_state_is_not(written, change):
    client, glance = written
    assert not client.shows_own_write(ID, payload_of(dict(glance.image, **change)))


def test_a_cache_property_gone_from_the_payload_is_a_change(written):
    client, glance = written
    payload = payload_of(glance.image)
    del payload["properties"]["cache_raw_status"]
    assert not client.shows_own_write(ID, payload)


@pytest.mark.parametrize("payload", [None, "x", {}, {"properties": []},
                                     {"properties": {}, "updated_at": None}])
def test_malformed_payloads_are_never_our_own_write(written, payload):
    client, _ = written
    assert not client.shows_own_write(ID, payload)


def test_a_read_that_finds_a_change_since_our_write_ends_the_recognition(written):
    client, glance = written
    client.get(ID)  # unchanged: still our write
    assert client.shows_own_write(ID, payload_of(glance.image))
    before = payload_of(glance.image)
    glance.image["cache_raw_status"] = "Queued"
    client.get(ID)
    assert not client.shows_own_write(ID, before)


def test_patch_ops_add_replace_remove():
    image = {"a": "1", "b": "2"}
    ops = image_api.patch_ops(image, {"a": "1", "b": "3", "c": "4", "d": None, "a2": None})
    assert ops == [{"op": "replace", "path": "/b", "value": "3"},
                   {"op": "add", "path": "/c", "value": "4"}]
    assert image_api.patch_ops({"e": "x"}, {"e": None}) == [{"op": "remove", "path": "/e"}]


class FakeResponse:
    def __init__(self, body):
        self.body = body

    def json(self):
        return self.body


class FakeAdapter:
    """Glance capping its pages at 2 images (api_limit_max) whatever limit is asked."""

    def __init__(self, ids):
        self.ids = ids
        self.patch_status = None

    def get(self, url, params=None, **kwargs):
        if url.endswith("/images"):
            start = self.ids.index(params["marker"]) + 1 if params.get("marker") else 0
            page = [{"id": i} for i in self.ids[start:start + 2]]
            more = start + 2 < len(self.ids)
            return FakeResponse(dict(images=page, **({"next": "/v2/images?marker=x"}
                                                     if more else {})))
        return FakeResponse({"id": "x"})

    def patch(self, url, **kwargs):
        raise ks_exc.HttpError(http_status=self.patch_status)


def api_over(adapter):
    api = image_api.ImageAPI.__new__(image_api.ImageAPI)
    api._api = adapter
    api._seen = image_api._Remembered()
    api._retry = lambda func, *args, **kwargs: func(*args, **kwargs)
    return api


def test_listing_follows_next_links_past_short_pages():
    ids = ["id-%d" % n for n in range(5)]
    assert [i["id"] for i in api_over(FakeAdapter(ids)).list()] == ids


@pytest.mark.parametrize("status,error", [(413, exception.ImageUpdateRefused),
                                          (403, exception.ImageUpdateRefused),
                                          (503, exception.ImageAPIUnavailable)])
def test_a_refused_update_is_its_own_error(status, error):
    adapter = FakeAdapter([])
    adapter.patch_status = status
    with pytest.raises(error):
        api_over(adapter).update("x", {"cache_raw_status": "Cached"})
