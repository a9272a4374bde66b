"""Prometheus metrics of the worker ([metrics] options), with prometheus-client.

The core and the daemon call the small hooks below, one line each; the hooks cost next to nothing
when the endpoint is off (the counters still count, nobody reads them). The metrics live in
prometheus-client's default registry, next to its process collector (CPU, memory, open files).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional, Sized, TypeVar, Union

import prometheus_client
from oslo_config import cfg

from cacheraw import exception

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., object])
S = TypeVar("S", bound=str)

NAMESPACE = "cacheraw"
# Results of Cacher.cache() that are not the end of a conversion attempt.
NOT_CONVERSIONS = ("skipped", "busy")

CONVERSIONS = prometheus_client.Counter(
    "conversions", "Conversions that ended, by result (cached, shared: cached from the cache "
                   "of an image with the same data without qemu-img, error, aborted, deleted).",
    ["result"], namespace=NAMESPACE)
CONVERSION_SECONDS = prometheus_client.Histogram(
    "conversion_seconds", "Duration of the conversions that ended with a cache, in seconds.",
    namespace=NAMESPACE,
    buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, float("inf")))
READ_BYTES = prometheus_client.Counter(
    "read_bytes", "Bytes of source image data converted (the images' sizes).",
    namespace=NAMESPACE)
WRITTEN_BYTES = prometheus_client.Counter(
    "written_bytes", "Bytes the new caches use in Ceph.", namespace=NAMESPACE)
QUEUE_DEPTH = prometheus_client.Gauge(
    "queue_depth", "Images waiting for a conversion in this worker.", namespace=NAMESPACE)
RUNNING = prometheus_client.Gauge(
    "conversions_running", "Conversions running in this worker now.", namespace=NAMESPACE)
LAST_SWEEP = prometheus_client.Gauge(
    "last_sweep_timestamp_seconds", "When the last complete sweep ended (Unix time).",
    namespace=NAMESPACE)
ERRORS = prometheus_client.Counter(
    "errors", "Errors by cause: the exception's class (UnsafeImage, NotEnoughSpace, "
              "CephUnavailable, ImageAPIUnavailable, ...) or 'internal'.",
    ["cause"], namespace=NAMESPACE)
IMAGE_API_REQUESTS = prometheus_client.Counter(
    "image_api_requests", "Requests to the image API, by HTTP method.", ["method"],
    namespace=NAMESPACE)
QEMU_IMG_RUNS = prometheus_client.Counter(
    "qemu_img_runs", "qemu-img processes started, by subcommand (info, check, map, convert).",
    ["subcommand"], namespace=NAMESPACE)
CEPH_CONNECTIONS = prometheus_client.Counter(
    "ceph_connections", "Ceph client connections the worker opened (qemu-img opens none).",
    namespace=NAMESPACE)

SHARED_BYTES = prometheus_client.Counter(
    "shared_bytes", "Bytes used by the caches that new caches were made from without a "
                    "conversion (images with the same data), by [converter] share_identical "
                    "mode (clone: shared, copy: copied inside Ceph).", ["mode"],
    namespace=NAMESPACE)
ORPHAN_BREAKER = prometheus_client.Gauge(
    "orphan_breaker_open", "1 while the sweep removes no orphaned cache because most of the "
                           "cached images read as gone at once ([worker] orphan_breaker_ratio).",
    namespace=NAMESPACE)

def serve(conf: cfg.ConfigOpts) -> None:
    """Start the /metrics endpoint when [metrics] enabled; a port in use is a config error."""
    if not conf.metrics.enabled:
        return
    try:
        prometheus_client.start_http_server(conf.metrics.port, addr=conf.metrics.host)
    except OSError as exc:
        why = exc.strerror or exc
        raise exception.ConfigError("cannot serve metrics on %s port %d: %s"
                                    % (conf.metrics.host, conf.metrics.port, why)) from exc
    LOG.info("Metrics on http://%s:%d/metrics", conf.metrics.host, conf.metrics.port)


def watch_queue(queue: Sized) -> None:
    QUEUE_DEPTH.set_function(lambda: len(queue))


def ended(result: S) -> S:
    """Count how one conversion attempt ended; returns ``result`` to pass it on."""
    if result not in NOT_CONVERSIONS:
        CONVERSIONS.labels(result=result).inc()
    return result


def converted(seconds: float, read_bytes: Optional[int], written_bytes: Optional[int]) -> None:
    CONVERSION_SECONDS.observe(seconds)
    READ_BYTES.inc(read_bytes or 0)
    WRITTEN_BYTES.inc(written_bytes or 0)


def shared(mode: str, source_bytes: Optional[int]) -> None:
    """A cache made from the cache of an image with the same data, which uses
    ``source_bytes``."""
    SHARED_BYTES.labels(mode=mode).inc(source_bytes or 0)


def orphan_breaker(is_open: bool) -> None:
    ORPHAN_BREAKER.set(1 if is_open else 0)


def error(cause: Union[BaseException, str]) -> None:
    """Count an error: an exception, or a message for the ones that are ours ('internal')."""
    ERRORS.labels(cause=type(cause).__name__ if isinstance(cause, BaseException)
                  else "internal").inc()


def image_api_request(method: str) -> None:
    IMAGE_API_REQUESTS.labels(method=method).inc()


def qemu_img_run(subcommand: str) -> None:
    QEMU_IMG_RUNS.labels(subcommand=subcommand).inc()


def ceph_connected() -> None:
    CEPH_CONNECTIONS.inc()


def swept() -> None:
    LAST_SWEEP.set(time.time())


def running(func: F) -> F:
    """Decorator: the wrapped conversion counts as running while it runs."""
    return RUNNING.track_inprogress()(func)
