"""Whatever arrives on the bus, the listener acknowledges it, never raises, and hands on only an
image id that is a string; the core touches nothing for an id that is not a lowercase UUID."""

import threading
import uuid
from unittest import mock

import oslo_messaging
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from oslo_config import cfg

from cacheraw import cacher
from cacheraw import messaging
from cacheraw import properties

pytestmark = pytest.mark.hostile

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
IDS = (st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())
       | st.uuids().map(lambda u: str(u) + "_raw") | st.text() | JSON)
PAYLOADS = JSON | st.dictionaries(st.sampled_from(["id", "status", "properties", "deleted"]),
                                  IDS, min_size=1) | st.builds(lambda i: {"id": i}, IDS)
EVENT_TYPES = st.sampled_from(["image.upload", "image.update", "image.delete"]) | st.text()


@settings(max_examples=300, deadline=None)
@given(event_type=EVENT_TYPES, payload=PAYLOADS)
def test_endpoint_acknowledges_anything_and_passes_on_only_string_ids(event_type, payload):
    seen = []
    endpoint = messaging.ImageEventEndpoint(lambda e, i, p: seen.append((e, i)))
    handled = oslo_messaging.NotificationResult.HANDLED
    assert endpoint.info({}, "image.localhost", event_type, payload, {}) == handled
    assert endpoint.error({}, "image.localhost", event_type, payload, {}) == handled
    if isinstance(payload, dict) and isinstance(payload.get("id"), str):
        assert seen == [(event_type, payload["id"])]
    else:
        assert seen == []


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_type=EVENT_TYPES, image_id=st.text() | st.uuids().map(lambda u: str(u).upper()))
def test_core_touches_nothing_for_an_id_that_is_not_a_uuid(event_type, image_id):
    if properties.valid_id(image_id):
        return
    images, store = mock.Mock(), mock.Mock()
    core = cacher.Cacher(mock.Mock(), images, store, mock.Mock())
    core.on_event(event_type, image_id)
    assert images.mock_calls == [] and store.mock_calls == []


# -- a real Notifier and listener on oslo.messaging's fake transport

MALFORMED = [("info", "image.upload", {}), ("info", "image.upload", {"id": 5}),
             ("info", "image.upload", "a plain string"), ("info", "image.upload", None),
             ("info", "image.upload", [1, 2]), ("error", "image.upload", "upload failed"),
             ("info", "image.frobnicate", {"id": str(uuid.uuid4())}),
             ("info", "image.update", {"id": "../../etc/passwd"})]


@pytest.fixture
def transport():
    conf = cfg.ConfigOpts()
    conf([], project="cacheraw-tests")
    transport = oslo_messaging.get_notification_transport(conf, url="fake:/")
    yield transport
    transport.cleanup()


def test_valid_event_after_malformed_ones_is_handled(transport):
    valid_id = str(uuid.uuid4())
    seen = []
    done = threading.Event()

    def handle(event_type, image_id, payload):
        seen.append((event_type, image_id))
        if image_id == valid_id:
            done.set()
        if image_id == "../../etc/passwd":
            raise RuntimeError("a bug in the handler")

    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic="notifications")],
        [messaging.ImageEventEndpoint(handle)], executor="threading", allow_requeue=True)
    notifier = oslo_messaging.Notifier(transport, publisher_id="image.localhost",
                                       driver="messaging", topics=["notifications"])
    listener.start()
    try:
        for priority, event_type, payload in MALFORMED:
            getattr(notifier, priority)({}, event_type, payload)
        notifier.info({}, "image.upload", {"id": valid_id})
        assert done.wait(10)
    finally:
        listener.stop()
        listener.wait()
    assert seen == [("image.update", "../../etc/passwd"), ("image.upload", valid_id)]
