"""The image service's notifications as the functional tests and the bench hear them: a listener
on the exchange with a notification pool (a queue) of its own, every event kept with its arrival
time, and a notifier that publishes as Glance does."""

import queue
import time
import uuid

from oslo_config import cfg

# The event type of the probe that proves the listener's queue is bound. cacheraw's workers on
# the same exchange never see it: their filter takes image.* events only.
PROBE = "cacheraw.tests.probe"


def transport(transport_url, exchange=None):
    """oslo.messaging's notification transport, publishing on ``exchange`` when given."""
    import oslo_messaging
    conf = cfg.ConfigOpts()
    conf([], project="cacheraw-tests")
    oslo_messaging.get_notification_transport(conf, url=transport_url).cleanup()  # its options
    if exchange:
        conf.set_override("control_exchange", exchange)
    return oslo_messaging.get_notification_transport(conf, url=transport_url)


def notifier(transport_url, exchange, publisher_id="image.localhost"):
    """(a Notifier as Glance uses it, publishing on ``exchange``; its transport)."""
    import oslo_messaging
    bus = transport(transport_url, exchange)
    return oslo_messaging.Notifier(bus, publisher_id=publisher_id, driver="messagingv2",
                                   topics=["notifications"]), bus


class Listener:
    """Hears every notification on ``exchange`` in a pool named ``<name>-<random>``.

    ``start()`` returns once a probe published after it has come back through the listener's
    queue: from then on every notification published on the exchange reaches it.
    """

    def __init__(self, transport_url, name="tests", exchange="glance"):
        import oslo_messaging
        self._url = transport_url
        self._exchange = exchange
        self._queue = queue.Queue()
        self.seen = []
        heard = self._queue

        class Endpoint:
            def info(self, ctxt, publisher_id, event_type, payload, metadata):
                heard.put((time.monotonic(), event_type, payload))

        self._transport = transport(transport_url)
        self.listener = oslo_messaging.get_notification_listener(
            self._transport, [oslo_messaging.Target(exchange=exchange, topic="notifications")],
            [Endpoint()], executor="threading", pool="%s-%s" % (name, uuid.uuid4().hex))

    def start(self, timeout=30):
        self.listener.start()
        self._probe(timeout)
        return self

    def stop(self):
        self.listener.stop()
        self.listener.wait()
        self._transport.cleanup()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    def _probe(self, timeout):
        """Publish probes until one comes back (a probe published before the queue was bound
        is lost, so another follows every second)."""
        token = uuid.uuid4().hex
        probe, bus = notifier(self._url, self._exchange, publisher_id="cacheraw.tests")
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                probe.info({}, PROBE, {"token": token})
                try:
                    self.wait_for(lambda kind, payload: kind == PROBE
                                  and payload.get("token") == token, 1, "the probe")
                    return
                except AssertionError:
                    continue
        finally:
            bus.cleanup()
            self.seen = [event for event in self.seen if event[1] != PROBE]
        raise AssertionError("the listener's queue on exchange %s is not bound after %ss"
                             % (self._exchange, timeout))

    def _drain(self, timeout):
        try:
            self.seen.append(self._queue.get(timeout=timeout))
        except queue.Empty:
            pass

    def wait_for(self, predicate, timeout, what):
        """The first event (already heard or coming) whose (event type, payload) satisfies
        ``predicate``, as (arrival time, event type, payload)."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.seen:
                if isinstance(event[2], dict) and predicate(event[1], event[2]):
                    return event
            if time.monotonic() > deadline:
                raise AssertionError("no notification of %s in %s s" % (what, timeout))
            self._drain(0.2)

    def wait_for_event(self, event_type, image_id, timeout=30):
        """The payload of the first ``event_type`` notification about the image."""
        return self.wait_for(lambda kind, payload: kind == event_type
                             and payload.get("id") == image_id, timeout,
                             "%s of image %s" % (event_type, image_id))[2]

    def wait_for_status(self, image_id, statuses, timeout=120):
        """The first image.update that shows one of ``statuses`` as the image's
        cache_raw_status, as (arrival time, event type, payload)."""
        def shows(kind, payload):
            status = (payload.get("properties") or {}).get("cache_raw_status")
            return kind == "image.update" and payload.get("id") == image_id and status in statuses
        return self.wait_for(shows, timeout, "%s on image %s" % ("/".join(statuses), image_id))

    def heard(self, image_id, event_types=("image.upload", "image.update", "image.delete"),
              since=0.0):
        """How many notifications of ``event_types`` about the image were heard so far (those
        that arrived at ``since``, a time.monotonic(), or later)."""
        while not self._queue.empty():
            self._drain(0)
        return sum(1 for when, kind, payload in self.seen
                   if when >= since and kind in event_types and isinstance(payload, dict)
                   and payload.get("id") == image_id)

    def forget(self):
        while not self._queue.empty():
            self._drain(0)
        self.seen = []
