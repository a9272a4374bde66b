"""cacheraw.qemu.nbd under a seeded fuzz: random and truncated handshakes, options and requests,
disconnects at every byte, against the real server. It keeps its threads and memory bounded,
never hangs, and a well-formed client still reads (and writes) the right bytes afterwards."""

import os
import random
import socket
import struct
import threading
import time

import pytest

from cacheraw.qemu import nbd
from cacheraw.qemu import nbd_requests as requests

SEED = int(os.environ.get("CACHERAW_FUZZ_SEED", "20261207"))
SIZE = 1 << 20
ROUNDS = 2000
MAX_THREADS = 1 + 2 * nbd.MAX_CONNECTIONS
MAX_GROWTH = 64 << 20


class MemoryBackend:
    """An image in memory, answered from other threads as librbd answers."""

    def __init__(self, writable):
        self.writable = writable
        self.size = SIZE
        self.data = bytearray(bytes(range(256)) * (SIZE // 256))

    def _later(self, done, data, error=0):
        threading.Thread(target=done, args=(data, error)).start()

    def read(self, offset, length, done):
        self._later(done, bytes(self.data[offset:offset + length]))

    def write(self, offset, data, done):
        self.data[offset:offset + len(data)] = data
        self._later(done, None)

    def write_zeroes(self, offset, length, done):
        self.data[offset:offset + length] = bytes(length)
        self._later(done, None)

    def flush(self, done):
        self._later(done, None)


def option(number, payload=b""):
    return struct.pack(">QII", nbd.IHAVEOPT, number, len(payload)) + payload


def request(command, offset, length, handle=1, payload=b"", magic=requests.REQUEST_MAGIC,
            flags=0):
    return struct.pack(">IHHQQI", magic, flags, command, handle, offset, length) + payload


def well_formed_session():
    """A valid client's bytes: handshake, a few options, requests of every kind, DISC."""
    return (struct.pack(">I", nbd.CLIENT_FLAG_NO_ZEROES) + option(nbd.OPT_INFO, b"\0" * 6) +
            option(99, b"x") + option(nbd.OPT_GO, b"\0" * 6) +
            request(requests.CMD_READ, 0, 512) + request(requests.CMD_WRITE, 512, 4, 2, b"abcd") +
            request(requests.CMD_WRITE_ZEROES, 1024, 512, 3) +
            request(requests.CMD_FLUSH, 0, 0, 4) +
            request(requests.CMD_DISC, 0, 0, 5))


def random_session(rng):
    """Bytes a hostile client might send: a valid prefix, then noise of some shape."""
    prefix = well_formed_session()[:rng.randrange(0, 60)]
    shape = rng.randrange(6)
    if shape == 0:
        tail = rng.randbytes(rng.randrange(0, 300))
    elif shape == 1:
        tail = option(rng.randrange(1 << 32), rng.randbytes(rng.randrange(0, 64)))
    elif shape == 2:
        tail = struct.pack(">QII", nbd.IHAVEOPT, nbd.OPT_GO, rng.choice([0, nbd.MAX_OPTION + 1,
                                                                         0xFFFFFFFF]))
    else:
        prefix = struct.pack(">I", nbd.CLIENT_FLAG_NO_ZEROES) + option(nbd.OPT_GO, b"\0" * 6)
        tail = b"".join(request(rng.choice([0, 1, 2, 3, 4, 6, 7, 0xFFFF]),
                                rng.choice([0, SIZE - 1, SIZE, 1 << 63, rng.randrange(SIZE)]),
                                rng.choice([0, 1, 512, requests.MAX_BLOCK,
                                            requests.MAX_BLOCK + 1, 0xFFFFFFFF]),
                                handle=rng.randrange(1 << 64),
                                magic=rng.choice([requests.REQUEST_MAGIC] * 5 + [0]),
                                flags=rng.randrange(1 << 16),
                                payload=rng.randbytes(rng.randrange(0, 2048)))
                        for _ in range(rng.randrange(1, 40)))
    data = prefix + tail
    return data[:rng.randrange(len(data) + 1)] if rng.random() < 0.5 else data


def play(export, data, read_replies):
    """Send ``data`` as a client; True when the server greeted it (it was not refused)."""
    deadline = time.monotonic() + 10
    while len(export._connections) >= nbd.MAX_CONNECTIONS:  # a fuzz case, not a refusal
        assert time.monotonic() < deadline, "the server holds its connections"
        time.sleep(0.005)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(5)
    greeted = False
    try:
        conn.connect(export.path)
        greeted = conn.recv(18, socket.MSG_WAITALL)[:8] == nbd.NBDMAGIC
        conn.sendall(data)
        if read_replies:
            conn.shutdown(socket.SHUT_WR)  # the server sees the end of what was sent
            while conn.recv(65536):
                pass
    except OSError:
        pass  # reset or timed out: all fine for a hostile client
    finally:
        conn.close()
    return greeted


def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def wait_idle(export, timeout=30):
    deadline = time.monotonic() + timeout
    while export.threads() > 1:
        assert time.monotonic() < deadline, "the server did not end its connections"
        time.sleep(0.02)


def recv_exact(conn, length):
    return requests.recv_exact(conn, length)


def well_formed_client(export, backend):
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    conn.connect(export.path)
    recv_exact(conn, 18)
    conn.sendall(struct.pack(">I", nbd.CLIENT_FLAG_NO_ZEROES) + option(nbd.OPT_EXPORT_NAME))
    size, _flags = struct.unpack(">QH", recv_exact(conn, 10))
    assert size == SIZE
    if backend.writable:
        conn.sendall(request(requests.CMD_WRITE, 4096, 5, 9, b"hello"))
        assert struct.unpack(">IIQ", recv_exact(conn, 16))[1:] == (0, 9)
    conn.sendall(request(requests.CMD_READ, 4000, 200, 10))
    assert struct.unpack(">IIQ", recv_exact(conn, 16))[1:] == (0, 10)
    assert recv_exact(conn, 200) == bytes(backend.data[4000:4200])
    conn.sendall(request(requests.CMD_DISC, 0, 0, 11))
    conn.close()


@pytest.mark.parametrize("writable", [False, True])
def test_the_server_survives_a_seeded_fuzz_and_serves_the_right_bytes(tmp_path, writable):
    rng = random.Random(SEED + writable)
    backend = MemoryBackend(writable)
    with nbd.Export(str(tmp_path / "sock"), backend) as export:
        before, most_threads, greeted = rss(), 0, 0
        session = well_formed_session()
        for cut in range(len(session) + 1):  # a disconnect at every byte
            greeted += play(export, session[:cut], read_replies=cut % 2 == 0)
            most_threads = max(most_threads, export.threads())
        for _ in range(ROUNDS):
            greeted += play(export, random_session(rng), read_replies=rng.random() < 0.5)
            most_threads = max(most_threads, export.threads())
        wait_idle(export)
        assert greeted == len(session) + 1 + ROUNDS
        assert most_threads <= MAX_THREADS
        assert rss() - before < MAX_GROWTH
        well_formed_client(export, backend)
        wait_idle(export)
        began = time.monotonic()
    assert time.monotonic() - began < 5 and export.threads() == 0
