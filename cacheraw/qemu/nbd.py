"""An NBD server on a Unix socket, serving one RBD image of this worker to its own qemu-img.

qemu-img holds no Ceph key and has no network: it reads the image it converts and writes the
cache through two such exports, each backed by a librbd handle of the worker (cacheraw.ceph.served).
The source is served read-only (no watch: its owner can delete it meanwhile), the cache read-write.

Only what qemu's NBD client needs of the protocol (doc/proto.md of the NBD project): the fixed
newstyle handshake, NBD_OPT_GO / NBD_OPT_INFO / NBD_OPT_EXPORT_NAME, simple replies, and READ,
WRITE, WRITE_ZEROES, FLUSH (writable exports only) and DISC (cacheraw.qemu.nbd_requests);
everything else is refused.
Every client is bounded: only this worker's uid (SO_PEERCRED; the socket is 0600 in a private
folder), MAX_CONNECTIONS at once, MAX_OPTIONS options within HANDSHAKE_TIMEOUT, requests of at
most MAX_BLOCK bytes, at most DEPTH requests (and replies) in flight per connection.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import threading
import time
from typing import Any, Callable, List, Optional, Protocol, Set

from cacheraw.qemu import nbd_requests
from cacheraw.qemu.nbd_requests import MAX_BLOCK
from cacheraw.qemu.nbd_requests import ProtocolError
from cacheraw.qemu.nbd_requests import recv_exact

LOG = logging.getLogger(__name__)

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2
CLIENT_FLAG_NO_ZEROES = 2

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_INFO = 6
OPT_GO = 7
REP_ACK = 1
REP_INFO = 3
REP_ERR_UNSUP = (1 << 31) + 1
INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

HAS_FLAGS, READ_ONLY, SEND_FLUSH, SEND_WRITE_ZEROES, CAN_MULTI_CONN = 0x1, 0x2, 0x4, 0x40, 0x100
# One librbd handle behind every connection: a FLUSH on one covers the writes of all. A read-only
# export has nothing to flush: it offers no FLUSH (and refuses one, nbd_requests).
READ_ONLY_FLAGS = HAS_FLAGS | READ_ONLY | CAN_MULTI_CONN
WRITABLE_FLAGS = HAS_FLAGS | SEND_FLUSH | SEND_WRITE_ZEROES | CAN_MULTI_CONN

MAX_OPTION = 4096
MAX_OPTIONS = 32
MAX_CONNECTIONS = 4
HANDSHAKE_TIMEOUT = 30
PEERCRED = struct.Struct("3i")  # pid, uid, gid


# ``done(data, error)``: how a backend ends a request (``error`` an errno, 0 on success).
Done = Callable[[Optional[bytes], int], None]


class Backend(Protocol):
    """What an export serves: ``size`` bytes, ``read(offset, length, done)`` and, when writable
    (a WritableBackend), its writes. Each request calls ``done(data, error)`` once, from any
    thread."""

    @property
    def size(self) -> int: ...

    @property
    def writable(self) -> bool: ...

    def read(self, offset: int, length: int, done: Done) -> None: ...


class WritableBackend(Backend, Protocol):
    """A backend whose ``writable`` is True: ``write(offset, data, done)``,
    ``write_zeroes(offset, length, done)`` and ``flush(done)`` too."""

    def write(self, offset: int, data: bytes, done: Done) -> None: ...

    def write_zeroes(self, offset: int, length: int, done: Done) -> None: ...

    def flush(self, done: Done) -> None: ...


class Export:
    """``with Export(path, backend) as export:`` serves ``backend`` on the Unix socket ``path``.
    ``failed`` is set when a request of the backend failed: qemu-img saw an I/O error."""

    def __init__(self, path: str, backend: Backend):
        self.path = path
        self.backend = backend
        self.size = backend.size
        self.flags = WRITABLE_FLAGS if backend.writable else READ_ONLY_FLAGS
        self.failed = threading.Event()
        self._listener: Optional[socket.socket] = None
        self._connections: Set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []

    def __enter__(self) -> Export:
        try:
            os.unlink(self.path)  # a socket left by a worker that died
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old_umask = os.umask(0o177)
            try:
                listener.bind(self.path)
            finally:
                os.umask(old_umask)
            listener.listen(MAX_CONNECTIONS)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._spawn(self._accept_loop, listener)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the thread in accept()
            except OSError:
                pass
            listener.close()
        with self._lock:
            for conn in list(self._connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=HANDSHAKE_TIMEOUT)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def threads(self) -> int:
        """The threads serving this export now."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name="nbd-%s" % os.path.basename(self.path))
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            refusal = self._refusal(conn)
            if refusal:
                LOG.warning("NBD socket %s: refused a client: %s", self.path, refusal)
                conn.close()
                continue
            with self._lock:
                self._connections.add(conn)
            self._spawn(self._serve, conn)

    def _refusal(self, conn: socket.socket) -> Optional[str]:
        """Why this client is not served, or None."""
        _pid, uid, _gid = PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size))
        if uid != os.getuid():
            return "uid %d is not this worker's" % uid
        with self._lock:
            if len(self._connections) >= MAX_CONNECTIONS:
                return "%d connections already" % MAX_CONNECTIONS
        return None

    def _serve(self, conn: socket.socket) -> None:
        try:
            if Handshake(conn, self).run():
                conn.settimeout(None)
                nbd_requests.Transmission(conn, self).run()
        except (OSError, ProtocolError) as exc:
            LOG.debug("NBD connection on %s ended: %s", self.path, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()


class Handshake:
    """The options a client sends until GO (or EXPORT_NAME): at most MAX_OPTIONS of them, all
    within HANDSHAKE_TIMEOUT seconds."""

    def __init__(self, conn: socket.socket, export: Export):
        self.conn = conn
        self.export = export
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT

    def _recv(self, length: int) -> bytes:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ProtocolError("handshake took longer than %d s" % HANDSHAKE_TIMEOUT)
        self.conn.settimeout(remaining)
        return recv_exact(self.conn, length)

    def run(self) -> bool:
        """True when the client goes on to transmission."""
        export = self.export
        self.conn.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT,
                                                 FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        client_flags, = struct.unpack(">I", self._recv(4))
        for _ in range(MAX_OPTIONS):
            magic, option, length = struct.unpack(">QII", self._recv(16))
            if magic != IHAVEOPT or length > MAX_OPTION:
                raise ProtocolError("bad option header")
            self._recv(length)  # one export: its name and the infos asked are moot
            if option == OPT_EXPORT_NAME:
                self.conn.sendall(struct.pack(">QH", export.size, export.flags) +
                                  (b"" if client_flags & CLIENT_FLAG_NO_ZEROES else b"\0" * 124))
                return True
            if option == OPT_ABORT:
                self._reply(option, REP_ACK)
                return False
            if option in (OPT_INFO, OPT_GO):
                self._reply(option, REP_INFO,
                            struct.pack(">HQH", INFO_EXPORT, export.size, export.flags))
                self._reply(option, REP_INFO,
                            struct.pack(">HIII", INFO_BLOCK_SIZE, 1, 64 * 1024, MAX_BLOCK))
                self._reply(option, REP_ACK)
                if option == OPT_GO:
                    return True
                continue
            self._reply(option, REP_ERR_UNSUP)
        raise ProtocolError("more than %d options" % MAX_OPTIONS)

    def _reply(self, option: int, reply: int, data: bytes = b"") -> None:
        self.conn.sendall(struct.pack(">QIII", OPTION_REPLY_MAGIC, option, reply, len(data)) +
                          data)
