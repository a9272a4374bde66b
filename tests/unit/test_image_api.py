"""The image API client: the JSON patches it sends, the listing's pages, refused updates."""

import pytest
from keystoneauth1 import exceptions as ks_exc

from cacheraw import exception
from cacheraw import image_api


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
