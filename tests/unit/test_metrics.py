"""The metrics hooks and the endpoint."""

import socket
import urllib.request

import pytest
from oslo_config import cfg
from prometheus_client import REGISTRY

from cacheraw import exception
from cacheraw import metrics
from cacheraw.conf import register_opts


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_conf(port, enabled=True):
    conf = cfg.ConfigOpts()
    register_opts(conf)
    conf([])
    conf.set_override("enabled", enabled, group="metrics")
    conf.set_override("port", port, group="metrics")
    return conf


def test_defaults_serve_nothing_and_only_on_loopback():
    conf = metrics_conf(9469, enabled=False)
    conf.clear_override("enabled", group="metrics")
    assert conf.metrics.enabled is False
    assert conf.metrics.host == "127.0.0.1"
    assert metrics.serve(conf) is None


def test_conversion_results_count_but_not_skips():
    before = value("cacheraw_conversions_total", result="cached")
    skipped = value("cacheraw_conversions_total", result="skipped")
    assert metrics.ended("cached") == "cached"
    assert metrics.ended("skipped") == "skipped"
    assert metrics.ended("busy") == "busy"
    assert value("cacheraw_conversions_total", result="cached") == before + 1
    assert value("cacheraw_conversions_total", result="skipped") == skipped == 0


def test_converted_observes_time_and_bytes():
    count = value("cacheraw_conversion_seconds_count")
    read, written = value("cacheraw_read_bytes_total"), value("cacheraw_written_bytes_total")
    metrics.converted(3.5, 1000, 4000)
    metrics.converted(1.0, None, None)  # an image without a size counts no bytes
    assert value("cacheraw_conversion_seconds_count") == count + 2
    assert value("cacheraw_read_bytes_total") == read + 1000
    assert value("cacheraw_written_bytes_total") == written + 4000


def test_errors_by_cause():
    before = value("cacheraw_errors_total", cause="UnsafeImage")
    internal = value("cacheraw_errors_total", cause="internal")
    metrics.error(exception.UnsafeImage("backing file"))
    metrics.error("internal error: KeyError: 'x'")
    assert value("cacheraw_errors_total", cause="UnsafeImage") == before + 1
    assert value("cacheraw_errors_total", cause="internal") == internal + 1


def test_running_and_queue_depth():
    seen = []

    @metrics.running
    def convert():
        seen.append(value("cacheraw_conversions_running"))

    convert()
    assert seen == [1.0] and value("cacheraw_conversions_running") == 0.0
    metrics.watch_queue([1, 2, 3])
    assert value("cacheraw_queue_depth") == 3


def test_endpoint_serves_the_metrics():
    port = free_port()
    metrics.serve(metrics_conf(port))
    metrics.swept()
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10).read()
    assert b"cacheraw_last_sweep_timestamp_seconds" in text
    assert b"cacheraw_conversions_running" in text
    assert b"process_cpu_seconds_total" in text


def test_a_port_in_use_is_one_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        with pytest.raises(exception.ConfigError, match="cannot serve metrics on 127.0.0.1"):
            metrics.serve(metrics_conf(sock.getsockname()[1]))
