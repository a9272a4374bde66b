"""The image service's notifications, received with oslo.messaging."""

import logging

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


def build_listener(conf, handle):
    transport = oslo_messaging.get_notification_transport(conf)
    targets = [oslo_messaging.Target(exchange=conf.notifications.exchange,
                                     topic=conf.notifications.topic)]
    return oslo_messaging.get_notification_listener(
        transport, targets, [ImageEventEndpoint(handle)], executor="threading",
        pool=conf.notifications.pool, allow_requeue=True)
