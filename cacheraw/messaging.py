"""The image service's notifications, received with oslo.messaging."""

from __future__ import annotations

import functools
import json
import logging
import socket
import time
import urllib.parse
import uuid
from typing import Any, Callable, Dict, Optional, Tuple, Union

import kombu
import oslo_messaging
from oslo_config import cfg

from cacheraw import exception

LOG = logging.getLogger(__name__)

EVENT_TYPES = r"^image\.(upload|update|delete)$"

# handle(event_type, image_id, payload): what an image event is handed to.
Handler = Callable[[str, str, dict], object]


class ImageEventEndpoint:
    """Hands every image event to ``handle(event_type, image_id, payload)``.

    Nothing escapes: a transient fault requeues the message, anything else is logged and
    acknowledged (the handler records permanent faults on the image itself).
    """

    filter_rule = oslo_messaging.NotificationFilter(event_type=EVENT_TYPES)

    def __init__(self, handle: Handler):
        self._handle = handle

    def info(self, ctxt: object, publisher_id: str, event_type: str, payload: object,
             metadata: object) -> Any:
        return self._dispatch(event_type, payload)

    def error(self, ctxt: object, publisher_id: str, event_type: str, payload: object,
              metadata: object) -> Any:
        # A failed upload: its payload is a bare string and the image is not active.
        LOG.info("Ignoring %s at error priority from %s", event_type, publisher_id)
        return oslo_messaging.NotificationResult.HANDLED

    def _dispatch(self, event_type: str, payload: object) -> Any:
        image_id = payload.get("id") if isinstance(payload, dict) else None
        if not isinstance(payload, dict) or not isinstance(image_id, str):
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


def build_listener(conf: cfg.ConfigOpts, handle: Handler) -> Any:
    """The notification listener (oslo.messaging's, with its own threads) that hands every image
    event to ``handle``; started and stopped by the worker."""
    transport = oslo_messaging.get_notification_transport(conf)
    targets = [oslo_messaging.Target(exchange=conf.notifications.exchange,
                                     topic=conf.notifications.topic)]
    return oslo_messaging.get_notification_listener(
        transport, targets, [ImageEventEndpoint(handle)], executor="threading",
        pool=conf.notifications.pool, allow_requeue=True)


def check_connection(conf: cfg.ConfigOpts) -> str:
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


def _broker_urls(conf: cfg.ConfigOpts) -> str:
    """kombu's URL of each host of the notification transport_url (rabbit:// only)."""
    try:
        oslo_messaging.get_notification_transport(conf).cleanup()  # registers the options
        url = conf.oslo_messaging_notifications.transport_url or conf.transport_url
        where = oslo_messaging.TransportURL.parse(conf, url)
    except (oslo_messaging.MessagingException, ValueError) as exc:
        raise exception.ConfigError("transport_url: %s" % exc) from exc
    if where.transport not in ("rabbit", "kombu"):
        raise exception.ConfigError("transport_url: only rabbit:// can be watched, not %s://"
                                    % where.transport)
    quote = functools.partial(urllib.parse.quote, safe="")
    vhost = quote(where.virtual_host or "/")
    return ";".join("amqp://%s:%s@%s:%s/%s" % (quote(h.username or "guest"),
                                                quote(h.password or "guest"), h.hostname,
                                                h.port or 5672, vhost) for h in where.hosts)


def _tls_options(conf: cfg.ConfigOpts) -> Union[bool, Dict[str, str]]:
    """kombu's ssl argument from the worker's [oslo_messaging_rabbit] TLS options."""
    rabbit = getattr(conf, "oslo_messaging_rabbit", None)
    if rabbit is None or not getattr(rabbit, "ssl", False):
        return False
    files = {"ca_certs": rabbit.ssl_ca_file, "certfile": rabbit.ssl_cert_file,
             "keyfile": rabbit.ssl_key_file}
    return {key: path for key, path in files.items() if path} or True


def _event_of(body: object) -> Tuple[Optional[str], Optional[str]]:
    """(event type, image id) of a notification's body (oslo's v2 envelope or a bare v1
    message); None parts when the body says nothing usable."""
    if isinstance(body, dict) and isinstance(body.get("oslo.message"), str):
        try:
            body = json.loads(body["oslo.message"])
        except ValueError:
            return None, None
    if not isinstance(body, dict):
        return None, None
    payload = body.get("payload")
    event_type = body.get("event_type")
    image_id = payload.get("id") if isinstance(payload, dict) else None
    return (event_type if isinstance(event_type, str) else None,
            image_id if isinstance(image_id, str) else None)


class NotificationWatch:
    """The image service's notifications, seen by a queue of this process alone: exclusive and
    removed by the broker when the connection closes (a listener's queue would stay bound and
    keep collecting). For cacheraw-manage check."""

    def __init__(self, conf: cfg.ConfigOpts):
        self._conf = conf
        self._conn: Optional[kombu.Connection] = None
        self._image_id: Optional[str] = None
        self._found: Optional[str] = None

    def __enter__(self) -> NotificationWatch:
        conf = self._conf.notifications
        self._conn = conn = kombu.Connection(_broker_urls(self._conf), connect_timeout=10,
                                             ssl=_tls_options(self._conf))
        # The exchange is the image service's: bound to, never declared (a declaration whose
        # flags differ from its own would fail, and one that creates it would hide its absence).
        exchange = kombu.Exchange(conf.exchange, type="topic", no_declare=True)
        queue = kombu.Queue("cacheraw-check-%s" % uuid.uuid4().hex, exchange,
                            routing_key="%s.info" % conf.topic, exclusive=True,
                            auto_delete=True, durable=False)
        try:
            consumer = kombu.Consumer(conn.channel(), [queue], no_ack=True,
                                      callbacks=[self._on_message], accept=["json"])
            consumer.consume()
        except Exception as exc:  # noqa: BLE001 - any failure is the answer
            conn.release()
            if "NOT_FOUND" in str(exc):
                raise exception.MessagingUnavailable(
                    "exchange %s does not exist: nothing was ever published there"
                    % conf.exchange) from exc
            raise exception.MessagingUnavailable("cannot watch exchange %s: %s" % (
                conf.exchange, exception.one_line(exc))) from exc
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            self._conn.release()

    def _on_message(self, body: object, message: object) -> None:
        event_type, image_id = _event_of(body)
        if self._found is None and image_id == self._image_id:
            self._found = event_type or "?"

    def wait_for(self, image_id: str, timeout: float) -> Optional[str]:
        """The first event type seen about ``image_id`` within ``timeout`` seconds, or None;
        messages about other images are dropped as they come."""
        self._image_id, self._found = image_id, None
        conn = self._connection()
        deadline = time.monotonic() + timeout
        while True:
            if self._found is not None:
                return self._found
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                conn.drain_events(timeout=min(left, 1.0))
            except socket.timeout:
                pass

    def _connection(self) -> kombu.Connection:
        if self._conn is None:
            raise RuntimeError("NotificationWatch is used outside its with block")
        return self._conn
