"""cacheraw.qemu.nbd_requests: the transmission phase over a socket pair, its export a fake: each
request answered once, by its handle, refused before the backend sees it when it is out of
bounds, unknown, or a write to a read-only export."""

import errno
import logging
import socket
import threading

import pytest

from cacheraw.qemu import nbd_requests as requests

DATA = bytes(range(256)) * 16  # 4 KiB


class Backend:
    def __init__(self, writable=False, short=False, raising=False):
        self.writable = writable
        self.short = short
        self.raising = raising
        self.written = {}

    def read(self, offset, length, done):
        if self.raising:
            raise RuntimeError("backend broken")
        done(DATA[offset:offset + length - (1 if self.short else 0)], 0)

    def write(self, offset, data, done):
        self.written[offset] = data
        done(None, 0)

    def write_zeroes(self, offset, length, done):
        done(None, errno.EROFS)  # an errno NBD has no name for

    def flush(self, done):
        done(None, 0)


class Export:
    path = "/run/test.sock"
    size = len(DATA)

    def __init__(self, backend):
        self.backend = backend
        self.failed = threading.Event()


def transmit(backend, *sent):
    """Run one connection's transmission over ``sent`` requests, then DISC; its replies
    {handle: (error, data)} and the export."""
    ours, theirs = socket.socketpair()
    export = Export(backend)
    thread = threading.Thread(target=requests.Transmission(ours, export).run)
    thread.start()
    expected = {}
    for handle, (command, offset, length, payload) in enumerate(sent, 1):
        theirs.sendall(requests.REQUEST.pack(requests.REQUEST_MAGIC, 0, command, handle,
                                             offset, length) + payload)
        expected[handle] = length if command == requests.CMD_READ else 0
    theirs.sendall(requests.REQUEST.pack(requests.REQUEST_MAGIC, 0, requests.CMD_DISC, 0, 0, 0))
    thread.join(10)
    assert not thread.is_alive()
    replies = {}
    for _ in expected:
        magic, error, handle = requests.SIMPLE_REPLY.unpack(
            requests.recv_exact(theirs, requests.SIMPLE_REPLY.size))
        assert magic == requests.SIMPLE_REPLY_MAGIC
        data = requests.recv_exact(theirs, expected[handle]) if not error else b""
        replies[handle] = (error, data)
    ours.close()
    theirs.close()
    return replies, export


def read(offset, length):
    return (requests.CMD_READ, offset, length, b"")


def test_reads_are_answered_with_exactly_their_bytes():
    replies, export = transmit(Backend(), read(0, 512), read(4000, 96))
    assert replies == {1: (0, DATA[:512]), 2: (0, DATA[4000:])}
    assert not export.failed.is_set()


def test_requests_out_of_bounds_unknown_or_too_large_are_refused_before_the_backend():
    backend = Backend(raising=True)
    replies, _ = transmit(backend, read(4000, 97), read(0, requests.MAX_BLOCK + 1),
                          (9, 0, 1, b""), (requests.CMD_WRITE, 0, 1, b"x"))
    assert replies == {1: (errno.EINVAL, b""), 2: (errno.EINVAL, b""), 3: (errno.EINVAL, b""),
                       4: (errno.EPERM, b"")}


def test_writes_within_the_export_only_and_errors_nbd_has_no_name_for_are_eio():
    backend = Backend(writable=True)
    replies, export = transmit(backend, (requests.CMD_WRITE, 8, 2, b"ab"),
                               (requests.CMD_WRITE, 4095, 2, b"ab"),
                               (requests.CMD_FLUSH, 0, 0, b""),
                               (requests.CMD_WRITE_ZEROES, 0, 8, b""))
    assert replies == {1: (0, b""), 2: (errno.ENOSPC, b""), 3: (0, b""), 4: (errno.EIO, b"")}
    assert backend.written == {8: b"ab"} and export.failed.is_set()


@pytest.mark.parametrize("backend", [Backend(short=True), Backend(raising=True)])
def test_a_short_or_raising_read_is_an_eio_reply_and_marks_the_export_failed(backend):
    replies, export = transmit(backend, read(0, 16))
    assert replies == {1: (errno.EIO, b"")} and export.failed.is_set()


def test_a_raising_backend_is_logged_once_per_connection(caplog):
    replies, _ = transmit(Backend(raising=True), *[read(0, 16)] * 5)
    assert set(replies.values()) == {(errno.EIO, b"")}
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_flush_is_refused_on_a_read_only_export_before_the_backend():
    replies, export = transmit(Backend(raising=True), (requests.CMD_FLUSH, 0, 0, b""))
    assert replies == {1: (errno.EINVAL, b"")} and not export.failed.is_set()


def test_a_completion_called_twice_replies_once():
    class Replies(list):
        put = list.append

    class Transmission:
        export = Export(Backend())
        replies = Replies()

    done = requests.Completion(Transmission, 7, 4)
    done(b"abcd", 0)
    done(None, errno.EIO)
    assert Transmission.replies == [(7, 0, b"abcd")]


def test_recv_exact_gathers_pieces_and_refuses_a_closed_connection():
    ours, theirs = socket.socketpair()
    theirs.sendall(b"ab")
    theirs.sendall(b"cd")
    assert requests.recv_exact(ours, 4) == b"abcd"
    theirs.sendall(b"e")
    theirs.close()
    with pytest.raises(requests.ProtocolError, match="closed"):
        requests.recv_exact(ours, 2)
    ours.close()


def test_a_bad_magic_ends_the_connection():
    ours, theirs = socket.socketpair()
    theirs.sendall(requests.REQUEST.pack(0x1234, 0, requests.CMD_READ, 1, 0, 1))
    with pytest.raises(requests.ProtocolError, match="magic"):
        requests.Transmission(ours, Export(Backend())).run()
    ours.close()
    theirs.close()
