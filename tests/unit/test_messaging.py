"""The notification endpoint, driven by a real Notifier on oslo.messaging's fake transport."""

import json
import threading
from pathlib import Path

import oslo_messaging
import pytest
from oslo_config import cfg

from cacheraw import exception
from cacheraw import messaging

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
UPLOAD = json.loads((FIXTURES / "image.upload.json").read_text())


@pytest.fixture
def bus():
    conf = cfg.ConfigOpts()
    conf([], project="cacheraw-tests")
    transport = oslo_messaging.get_notification_transport(conf, url="fake:/")
    yield conf, transport
    transport.cleanup()


def notifier(transport):
    return oslo_messaging.Notifier(transport, publisher_id="image.localhost", driver="messaging",
                                   topics=["notifications"])


def test_upload_event_reaches_the_handler_with_the_image_id():
    seen = []
    endpoint = messaging.ImageEventEndpoint(lambda e, i, p: seen.append((e, i)))
    result = endpoint.info({}, "image.localhost", "image.upload", UPLOAD["payload"], {})
    assert result == oslo_messaging.NotificationResult.HANDLED
    assert seen == [("image.upload", UPLOAD["payload"]["id"])]


def test_filter_keeps_only_upload_update_delete():
    rule = messaging.ImageEventEndpoint.filter_rule
    for kind in ("image.upload", "image.update", "image.delete"):
        assert rule.match({}, "image.localhost", kind, {}, {})
    for kind in ("image.create", "image.activate", "image.prepare", "image.uploadx"):
        assert not rule.match({}, "image.localhost", kind, {}, {})


def test_transient_fault_requeues():
    def handle(event_type, image_id, payload):
        raise exception.ImageAPIUnavailable("glance down")
    endpoint = messaging.ImageEventEndpoint(handle)
    result = endpoint.info({}, "p", "image.upload", UPLOAD["payload"], {})
    assert result == oslo_messaging.NotificationResult.REQUEUE


def test_handled_is_logged_once_the_handler_returned(caplog):
    """The line the functional tests wait for before asserting that an event changed nothing."""
    image_id = UPLOAD["payload"]["id"]
    order = []
    endpoint = messaging.ImageEventEndpoint(
        lambda e, i, p: order.append(["Handled" in r.message for r in caplog.records]))
    with caplog.at_level("INFO", logger="cacheraw.messaging"):
        endpoint.info({}, "p", "image.update", UPLOAD["payload"], {})
    assert order == [[False]]
    assert caplog.messages[-1] == "Handled image.update for image %s" % image_id


def test_a_requeued_or_failed_event_is_not_handled(caplog):
    def handle(event_type, image_id, payload):
        raise (exception.ImageAPIUnavailable("glance down") if event_type == "image.upload"
               else RuntimeError("bug"))
    endpoint = messaging.ImageEventEndpoint(handle)
    with caplog.at_level("INFO", logger="cacheraw.messaging"):
        endpoint.info({}, "p", "image.upload", UPLOAD["payload"], {})
        endpoint.info({}, "p", "image.update", UPLOAD["payload"], {})
    assert not [m for m in caplog.messages if m.startswith("Handled")]


def test_any_other_fault_is_acknowledged():
    def handle(event_type, image_id, payload):
        raise RuntimeError("bug")
    endpoint = messaging.ImageEventEndpoint(handle)
    assert endpoint.info({}, "p", "image.upload", UPLOAD["payload"], {}) == \
        oslo_messaging.NotificationResult.HANDLED


@pytest.mark.parametrize("payload", ["a failed upload", {}, {"id": 5}, None])
def test_malformed_payloads_are_acknowledged_and_ignored(payload):
    calls = []
    endpoint = messaging.ImageEventEndpoint(lambda e, i, p: calls.append(i))
    assert endpoint.info({}, "p", "image.upload", payload, {}) == \
        oslo_messaging.NotificationResult.HANDLED
    assert endpoint.error({}, "p", "image.upload", payload, {}) == \
        oslo_messaging.NotificationResult.HANDLED
    assert calls == []


def test_real_notifier_on_fake_transport_reaches_the_endpoint(bus):
    conf, transport = bus
    seen = []
    done = threading.Event()

    def handle(event_type, image_id, payload):
        seen.append((event_type, image_id))
        done.set()

    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic="notifications")],
        [messaging.ImageEventEndpoint(handle)], executor="threading", allow_requeue=True)
    listener.start()
    try:
        notifier(transport).info({}, "image.upload", UPLOAD["payload"])
        assert done.wait(10)
    finally:
        listener.stop()
        listener.wait()
    assert seen == [("image.upload", UPLOAD["payload"]["id"])]
