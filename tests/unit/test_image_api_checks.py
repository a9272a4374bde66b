"""cacheraw-manage check's questions to the image API (cacheraw.image_api_checks), over a fake
keystoneauth1 adapter that raises keystoneauth1's own errors (the real image API:
tests/functional/test_manage.py and test_glance_settings.py)."""

import types

import pytest
from keystoneauth1 import exceptions as ks_exc

from cacheraw import exception
from cacheraw import image_api
from cacheraw import image_api_checks
from cacheraw import properties

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
ENDPOINT = "http://127.0.0.1:9292"


class Response:
    def __init__(self, body):
        self.body = body

    def json(self):
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


class FakeAdapter:
    """The image API: each method's fault (a keystoneauth1 error) set in ``faults``; every
    request recorded as (method, url)."""

    def __init__(self, endpoint=ENDPOINT, schema=None):
        self.endpoint = endpoint
        self.schema = schema if schema is not None else {"properties": {}}
        self.faults = {}
        self.calls = []

    def _call(self, method, url, body=None):
        self.calls.append((method, url))
        if method in self.faults:
            raise self.faults[method]
        return Response(body)

    def get_endpoint(self):
        if "get_endpoint" in self.faults:
            raise self.faults["get_endpoint"]
        return self.endpoint

    def get(self, url, **kwargs):
        body = self.schema if url.endswith("/schemas/image") else {"id": ID, "size": 4096}
        return self._call("GET", url, body)

    def post(self, url, json=None, **kwargs):
        assert json["name"].startswith(properties.SCRATCH_PREFIX)
        assert json["visibility"] == "private"
        return self._call("POST", url, {"id": ID})

    def put(self, url, **kwargs):
        return self._call("PUT", url)

    def patch(self, url, json=None, headers=None, **kwargs):
        assert headers == {"Content-Type": image_api.PATCH_TYPE}
        assert all(op["op"] == "add" for op in json)
        return self._call("PATCH", url)

    def delete(self, url, **kwargs):
        return self._call("DELETE", url)


OPTIONS = types.SimpleNamespace(username="cacheraw", auth_url="http://127.0.0.1:5000/v3",
                                service_type="image", valid_interfaces=["internal"],
                                region_name=None, endpoint_override=None)


@pytest.fixture
def adapter():
    return FakeAdapter()


@pytest.fixture
def checks(adapter):
    return image_api_checks.ImageAPIChecks(image_api.CheckingAdapter(adapter), OPTIONS)


def deleted(adapter):
    return ("DELETE", "/v2/images/%s" % ID) in adapter.calls


def test_the_endpoint_is_named_with_where_it_comes_from_once_it_answers(checks, adapter):
    assert checks.check_endpoint() == "%s (from the Keystone catalog)" % ENDPOINT
    assert adapter.calls == [("GET", "/v2/images")]


def test_no_endpoint_in_the_catalog_names_the_option_to_set(checks, adapter):
    adapter.endpoint = None
    with pytest.raises(exception.ConfigError, match=r"no image endpoint \(interfaces internal, "
                                                    r"region any\) .* endpoint_override"):
        checks.check_endpoint()


@pytest.mark.parametrize("fault, said", [
    (ks_exc.Unauthorized("401"), "Keystone at http://127.0.0.1:5000/v3 refused the "
                                 "credentials of user cacheraw"),
    (ks_exc.ConnectionError("refused"), "cannot reach http://127.0.0.1:5000/v3: refused")])
def test_keystone_s_refusal_is_said_with_its_url_and_the_user(checks, adapter, fault, said):
    adapter.faults["get_endpoint"] = fault
    with pytest.raises(exception.ImageAPIUnavailable) as caught:
        checks.check_endpoint()
    assert str(caught.value) == said


def test_an_endpoint_that_does_not_answer_is_named(checks, adapter):
    adapter.faults["GET"] = ks_exc.ConnectFailure("timed out")
    with pytest.raises(exception.ImageAPIUnavailable,
                       match="%s \\(from the Keystone catalog\\) does not answer: timed out"
                       % ENDPOINT):
        checks.check_endpoint()


def test_a_scratch_image_with_data_is_read_again_and_deleted(checks, adapter):
    with checks.scratch_image(b"\0" * 4096) as image:
        assert image == {"id": ID, "size": 4096}
    assert [method for method, _ in adapter.calls] == ["POST", "PUT", "GET", "DELETE"]


def test_a_scratch_image_is_deleted_when_its_use_fails(checks, adapter):
    with pytest.raises(exception.ImageAPIError, match="scratch image %s: 500" % ID):
        with checks.scratch_image():
            # What a use of the scratch image through the checks' adapter raises.
            raise exception.ImageAPIRequestFailed("500")
    assert deleted(adapter)


def test_a_scratch_image_refused_names_the_user(checks, adapter):
    adapter.faults["POST"] = ks_exc.Forbidden("403 Forbidden")
    with pytest.raises(exception.ImageAPIError,
                       match="user cacheraw cannot create a scratch image: 403 Forbidden"):
        with checks.scratch_image():
            pytest.fail("no image was made")


def test_the_service_user_s_write_is_tried_on_a_scratch_image(checks, adapter):
    assert checks.check_write() == ("user cacheraw may write cache_raw_status (on a scratch "
                                    "image, deleted again)")
    assert ("PATCH", "/v2/images/%s" % ID) in adapter.calls and deleted(adapter)


def test_a_write_refused_names_the_user_and_the_property(checks, adapter):
    adapter.faults["PATCH"] = ks_exc.Forbidden("403 Forbidden")
    with pytest.raises(exception.ImageAPIError,
                       match="user cacheraw may not write cache_raw_status: 403 Forbidden"):
        checks.check_write()
    assert deleted(adapter)


@pytest.mark.parametrize("fault, refused", [(None, False), (ks_exc.Forbidden("403"), True)])
def test_a_property_is_refused_only_by_a_403(checks, adapter, fault, refused):
    if fault is not None:
        adapter.faults["PATCH"] = fault
    assert checks.property_refused(ID, properties.PROTECTION_PROBE) is refused


def test_the_checks_adapter_says_how_a_request_failed_in_cacheraw_s_errors(adapter):
    checking = image_api.CheckingAdapter(adapter)
    for fault, kind in [(ks_exc.Unauthorized("401"), "unauthorized"),
                        (ks_exc.ConnectFailure("refused"), "unreachable"),
                        (ks_exc.Forbidden("403"), "forbidden"),
                        (ks_exc.BadRequest("400"), "other")]:
        adapter.faults["GET"] = fault
        with pytest.raises(exception.ImageAPIRequestFailed) as raised:
            checking.get(image_api.url("/images"))
        assert raised.value.kind == kind


def test_any_other_answer_to_a_property_is_an_error(checks, adapter):
    adapter.faults["PATCH"] = ks_exc.BadRequest("400 Bad Request")
    with pytest.raises(exception.ImageAPIError, match="setting cacheraw_protection_probe on "
                                                      "scratch image %s: 400" % ID):
        checks.property_refused(ID, properties.PROTECTION_PROBE)


def test_the_image_schema_is_read_and_an_unreadable_one_is_an_error(checks, adapter):
    adapter.schema = {"properties": {"cache_raw": {}}}
    assert checks.image_schema() == {"properties": {"cache_raw": {}}}
    adapter.schema = ValueError("Expecting value: line 1 column 1 (char 0)")
    with pytest.raises(exception.ImageAPIError, match="cannot read the image schema: "
                                                      "Expecting value"):
        checks.image_schema()
