"""The transmission phase of cacheraw.qemu.nbd: one client's requests and their replies.

Every request takes one of DEPTH slots before anything is done for it and gives it back once its
reply is sent (or cannot be): a client that sends without reading the replies stops being read,
so neither the replies nor the data in flight grow past DEPTH requests of MAX_BLOCK bytes.
"""

from __future__ import annotations

import errno
import logging
import queue
import socket
import struct
import threading
from typing import TYPE_CHECKING, Optional, Tuple, cast

if TYPE_CHECKING:
    from cacheraw.qemu.nbd import Export, WritableBackend

LOG = logging.getLogger(__name__)

REQUEST = struct.Struct(">IHHQQI")
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY = struct.Struct(">IIQ")
SIMPLE_REPLY_MAGIC = 0x67446698

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_WRITE_ZEROES = 6
WRITES = (CMD_WRITE, CMD_WRITE_ZEROES)
KNOWN = (CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_WRITE_ZEROES)

MAX_BLOCK = 2 * 1024 * 1024  # qemu-img convert's own buffer; at most 16 MiB held per client
DEPTH = 8
# The errors NBD has names for; any other errno of librbd is sent as EIO.
NBD_ERRORS = (errno.EPERM, errno.EIO, errno.ENOMEM, errno.EINVAL, errno.ENOSPC,
              errno.EOVERFLOW, errno.ESHUTDOWN)


# A reply as queued: (handle, errno, data of a read).
Reply = Tuple[int, int, Optional[bytes]]


class ProtocolError(Exception):
    pass


def recv_exact(conn: socket.socket, length: int) -> bytes:
    """Exactly ``length`` bytes, received into the one bytes object handed on (to librbd for a
    write): no second copy of a 2 MiB payload."""
    chunks = []
    got = 0
    while got < length:
        chunk = conn.recv(length - got, socket.MSG_WAITALL)
        if not chunk:
            raise ProtocolError("the client closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class Transmission:
    """Requests go to the export's backend, DEPTH at a time; their replies are sent, in the
    order they finish, by a thread of their own."""

    def __init__(self, conn: socket.socket, export: Export):
        self.conn = conn
        self.export = export
        self.backend = export.backend
        self.slots = threading.Semaphore(DEPTH)
        # never more than DEPTH: each item holds a slot
        self.replies: queue.Queue[Optional[Reply]] = queue.Queue()
        self.logged = False  # a backend's exception is logged once per connection

    def run(self) -> None:
        sender = threading.Thread(target=self._send_replies, daemon=True,
                                  name=threading.current_thread().name + "-replies")
        sender.start()
        try:
            self._receive()
        finally:
            for _ in range(DEPTH):  # the requests in flight end before the connection does
                self.slots.acquire()
            self.replies.put(None)
            sender.join()

    def _receive(self) -> None:
        while True:
            magic, _flags, command, handle, offset, length = REQUEST.unpack(
                recv_exact(self.conn, REQUEST.size))
            if magic != REQUEST_MAGIC:
                raise ProtocolError("bad request magic")
            if command == CMD_DISC:
                return
            payload = None
            if command == CMD_WRITE:
                if length > MAX_BLOCK:
                    raise ProtocolError("a write of %d bytes" % length)
                payload = recv_exact(self.conn, length)
            self.slots.acquire()
            error = self._refusal(command, offset, length)
            if error:
                self.replies.put((handle, error, None))
            else:
                self._start(command, offset, length, payload,
                            Completion(self, handle, length if command == CMD_READ else None))

    def _refusal(self, command: int, offset: int, length: int) -> int:
        """The errno this request is refused with, or 0."""
        if command not in KNOWN:
            return errno.EINVAL
        if command in WRITES and not self.backend.writable:
            return errno.EPERM
        if command == CMD_FLUSH and not self.backend.writable:
            return errno.EINVAL  # not offered: a read-only backend has no flush
        if command == CMD_READ and length > MAX_BLOCK:
            return errno.EINVAL
        if command != CMD_FLUSH and offset + length > self.export.size:
            return errno.ENOSPC if command in WRITES else errno.EINVAL
        return 0

    def _start(self, command: int, offset: int, length: int, payload: Optional[bytes],
               done: Completion) -> None:
        # Only a writable backend gets a write or a flush (_refusal).
        writable = cast("WritableBackend", self.backend)
        try:
            if command == CMD_READ:
                self.backend.read(offset, length, done)
            elif command == CMD_WRITE:
                writable.write(offset, cast(bytes, payload), done)
            elif command == CMD_WRITE_ZEROES:
                writable.write_zeroes(offset, length, done)
            else:
                writable.flush(done)
        except Exception:  # noqa: BLE001 - the client gets an error reply; the slot is freed
            if not self.logged:  # the client may repeat it: no flood of the journal
                self.logged = True
                LOG.exception("NBD request %d at %d of %d bytes failed on %s (logged once per "
                              "connection)", command, offset, length, self.export.path)
            done(None, errno.EIO)

    def _send_replies(self) -> None:
        broken = False
        while True:
            item = self.replies.get()
            if item is None:
                return
            handle, error, data = item
            if not broken:
                try:
                    self.conn.sendall(SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle))
                    if data is not None:
                        self.conn.sendall(data)
                except OSError:
                    broken = True
            self.slots.release()


class Completion:
    """``done(data, error)`` of one request: its reply is queued once, whatever calls it how
    often; a read's reply carries exactly the bytes asked, or is an error."""

    def __init__(self, transmission: Transmission, handle: int, read_length: Optional[int]):
        self.transmission = transmission
        self.handle = handle
        self.read_length = read_length
        self._called = False
        self._lock = threading.Lock()

    def __call__(self, data: Optional[bytes], error: int) -> None:
        with self._lock:
            if self._called:
                return
            self._called = True
        if not error and self.read_length is not None and \
                (data is None or len(data) != self.read_length):
            LOG.warning("A read of %d bytes on %s returned %s bytes", self.read_length,
                        self.transmission.export.path, None if data is None else len(data))
            error = errno.EIO
        if error:
            self.transmission.export.failed.set()
            error = error if error in NBD_ERRORS else errno.EIO
        self.transmission.replies.put(
            (self.handle, error, data if self.read_length is not None and not error else None))
