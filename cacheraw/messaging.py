"""The image service's notifications, received with oslo.messaging."""

import logging
import uuid

import oslo_messaging

from cacheraw import exception

LOG = logging.getLogger(__name__)

EVENT_TYPES = r"^image\.(upload|update|delete)$"


class ImageEventEndpoint:
    """Hands every image event to ``handle(event_type, image_id, payload)``.

    Nothing escapes: a transient fault requeues the message, anything else is logged and
    acknowledged (the handler records permanent faults on the image itself).
    """

    filter_rule = oslo_messaging.NotificationFilter(event_type=EVENT_TYPES)

    def __init__(self, handle):
        self._handle = handle

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._dispatch(event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        # A failed upload: its payload is a bare string and the image is not active.
        LOG.info("Ignoring %s at error priority from %s", event_type, publisher_id)
        return oslo_messaging.NotificationResult.HANDLED

    def _dispatch(self, event_type, payload):
        image_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(image_id, str):
            LOG.warning("Ignoring %s without an image id", event_type)
            return oslo_messaging.NotificationResult.HANDLED
        LOG.info("Received %s for image %s", event_type, image_id)
        try:
            self._handle(event_type, image_id, payload)
        except exception.Transient as exc:
            LOG.warning("Requeueing %s of image %s: %s", event_type, image_id, exc)
            return oslo_messaging.NotificationResult.REQUEUE
        except Exception:  # noqa: BLE001 - a bad message must never stop the listener
            LOG.exception("Failed to handle %s of image %s", event_type, image_id)
            return oslo_messaging.NotificationResult.HANDLED
        # Whatever the event led to (often nothing) is decided: what "nothing happened" waits for.
        LOG.info("Handled %s for image %s", event_type, image_id)
        return oslo_messaging.NotificationResult.HANDLED


def build_listener(conf, handle):
    transport = oslo_messaging.get_notification_transport(conf)
    targets = [oslo_messaging.Target(exchange=conf.notifications.exchange,
                                     topic=conf.notifications.topic)]
    return oslo_messaging.get_notification_listener(
        transport, targets, [ImageEventEndpoint(handle)], executor="threading",
        pool=conf.notifications.pool, allow_requeue=True)


def check_connection(conf):
    """Reach the notification bus as the worker would, once, and leave nothing behind.
    Returns where it connected; raises ConfigError (transport_url) or MessagingUnavailable.

    A notification listener would be the obvious probe, but a listener declares a queue: the
    worker's own (then the probe takes messages meant for a running worker) or a new one (then
    it stays bound to the exchange, collecting every notification). Instead, an RPC cast (the
    public API) on the notification exchange, with a routing key nothing is bound to: it opens a
    connection with the driver's own TLS and heartbeat options and proves the right to publish,
    and the broker drops the message.
    """
    try:
        # The worker's transport: also registers [oslo_messaging_notifications].
        oslo_messaging.get_notification_transport(conf).cleanup()
        url = conf.oslo_messaging_notifications.transport_url or conf.transport_url
        transport = oslo_messaging.get_rpc_transport(conf, url=url)
        where = oslo_messaging.TransportURL.parse(conf, url)
    except (oslo_messaging.MessagingException, ValueError) as exc:
        raise exception.ConfigError("transport_url: %s" % exc) from exc
    hosts = ", ".join("%s:%s" % (h.hostname, h.port) for h in where.hosts) or "default host"
    about = "%s (virtual host %s)" % (hosts, where.virtual_host or "/")
    target = oslo_messaging.Target(exchange=conf.notifications.exchange,
                                   topic="cacheraw-check.%s" % uuid.uuid4().hex)
    quiet = logging.getLogger("oslo.messaging")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its retry notice would repeat our one line
    try:
        oslo_messaging.get_rpc_client(transport, target, retry=1).cast({}, "probe")
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        raise exception.MessagingUnavailable("cannot connect to %s: %s" % (
            about, str(exc).strip() or type(exc).__name__)) from exc
    finally:
        quiet.setLevel(level)
        transport.cleanup()
    return "connected to %s" % about
