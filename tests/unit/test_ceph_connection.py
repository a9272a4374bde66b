"""cacheraw.ceph.connection: what each rados and rbd error becomes in cacheraw.exception, the
keyring's key and the client's address."""

import threading
import time

import pytest
import rados
import rbd

from cacheraw import exception
from cacheraw.ceph import connection
from tests.unit.conftest import FakeLease

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"
CACHE = ID + "_raw"


@pytest.mark.parametrize("error, ours", [
    (rbd.ImageNotFound("gone"), exception.CephNotFound),
    (rados.ObjectNotFound("gone"), exception.CephNotFound),
    (rbd.ImageBusy("busy"), exception.CephBusy),
    (rbd.ImageHasSnapshots("snaps"), exception.CephBusy),
    (rados.TimedOut("slow"), exception.CephUnavailable),
    (rbd.Timeout("slow"), exception.CephUnavailable),
    (rados.ConnectionShutdown("down"), exception.CephBlocklisted),
    (rbd.InvalidArgument("odd"), exception.CephError),
    (rados.PermissionDeniedError("caps"), exception.CephError),
])
def test_each_library_error_is_translated(store, ceph, error, ours):
    ceph.faults["create"] = error
    with pytest.raises(ours) as raised:
        store.create(CACHE, 1024, FakeLease())
    assert raised.value.__cause__ is error


def test_a_refused_client_is_told_once_per_error_and_anything_else_is_a_ceph_error():
    told = []
    refused = connection.translated_error(rados.ConnectionShutdown("down"),
                                          lambda: told.append(True))
    assert isinstance(refused, exception.CephBlocklisted) and told == [True]
    assert type(connection.translated_error(rbd.InvalidArgument("odd"))) \
        is exception.CephError


def test_the_key_is_read_from_the_keyring_or_refused_with_the_reason(tmp_path):
    keyring = tmp_path / "keyring"
    keyring.write_text("[client.cacheraw]\n    key = QUJD==\n")
    assert connection.read_key(str(keyring), "cacheraw") == "QUJD=="
    with pytest.raises(exception.ConfigError, match="key of client.other"):
        connection.read_key(str(keyring), "other")
    with pytest.raises(exception.ConfigError, match="cannot read"):
        connection.read_key(str(tmp_path / "missing"), "cacheraw")


@pytest.mark.parametrize("addresses, address", [
    ("[v2:127.0.0.1:0/3761,v1:127.0.0.1:0/3761]", "127.0.0.1:0/3761"),
    ("10.0.0.5:0/42", "10.0.0.5:0/42"),
    ("[v2:[fd00::1]:0/3735928559,v1:[fd00::1]:0/3735928559]", "[fd00::1]:0/3735928559"),
    ("[fd00::1]:0/123", "[fd00::1]:0/123"),
    ("v1:[::ffff:10.0.0.1]:0/9", "[::ffff:10.0.0.1]:0/9"),
    ("unknown address", None),
    ("", None),
])
def test_the_entity_address_that_a_blocklist_takes(addresses, address):
    assert connection.entity_address(addresses) == address


def test_every_address_of_a_client_is_found_without_its_type():
    assert connection.entity_addresses("[v2:10.0.0.5:3300/42,v1:10.0.0.5:6789/42]") == [
        "10.0.0.5:3300/42", "10.0.0.5:6789/42"]
    assert connection.entity_addresses("v1:[fd00::1]:0/7") == ["[fd00::1]:0/7"]
    assert connection.entity_addresses("unknown address") == []


def test_threads_that_need_the_cluster_at_once_share_one_connection(conf, monkeypatch):
    conn = connection.Connection(conf)
    connects = []
    both_asked = threading.Barrier(2)

    def slow_connect():
        connects.append(threading.current_thread().name)
        time.sleep(0.3)  # the other thread asks meanwhile
        conn.cluster = object()

    monkeypatch.setattr(conn, "connect", slow_connect)

    def ask():
        both_asked.wait()
        handles.append(conn.connected())

    handles = []
    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(connects) == 1 and len(handles) == 2 and handles[0] is handles[1]
