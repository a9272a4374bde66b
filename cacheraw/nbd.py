"""A read-only NBD server on a Unix socket, serving one image to this worker's own qemu-img.

qemu's rbd driver opens every image read-write and watches it, so an image that qemu-img reads in
place cannot be deleted by its owner until the conversion ends (Glance answers 409). Served from a
read-only librbd handle (no watch) over NBD, the image is read by qemu-img as fast as in place,
with no local copy, and its owner can delete it at any moment.

Only what qemu's NBD client needs of the protocol (doc/proto.md of the NBD project): the fixed
newstyle handshake, NBD_OPT_GO / NBD_OPT_INFO / NBD_OPT_EXPORT_NAME, simple replies, and the
READ, FLUSH and DISC commands; everything else is refused. The socket is the worker's own (mode
0600 in conversion_dir). A client is bounded: requests of at most MAX_BLOCK bytes (advertised as
the export's maximum block size), at most DEPTH reads in flight per connection.
"""

import errno
import logging
import os
import queue
import socket
import struct
import threading

LOG = logging.getLogger(__name__)

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
OPTION_REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

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

TRANSMISSION_FLAGS = 0x1 | 0x2 | 0x4 | 0x100  # HAS_FLAGS, READ_ONLY, SEND_FLUSH, CAN_MULTI_CONN
CMD_READ = 0
CMD_DISC = 2
CMD_FLUSH = 3

MAX_BLOCK = 2 * 1024 * 1024  # qemu-img convert's own buffer; at most 16 MiB held per client
DEPTH = 8
MAX_OPTION = 4096
HANDSHAKE_TIMEOUT = 30


class ProtocolError(Exception):
    pass


def _recv_exact(conn, length):
    data = bytearray()
    while len(data) < length:
        chunk = conn.recv(length - len(data))
        if not chunk:
            raise ProtocolError("the client closed the connection")
        data += chunk
    return bytes(data)


class Export:
    """``with Export(path, size, read) as export:`` serves an image of ``size`` bytes on the Unix
    socket ``path``, read through ``read(offset, length, done)``, which calls
    ``done(data, error)`` (``error`` an errno, 0 on success) from any thread when the read ends.
    ``failed`` is set when a read failed: qemu-img saw an I/O error."""

    def __init__(self, path, size, read):
        self.path = path
        self.size = size
        self._read = read
        self.failed = threading.Event()
        self._listener = None
        self._connections = set()
        self._lock = threading.Lock()
        self._threads = []

    def __enter__(self):
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
            listener.listen(4)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def __exit__(self, *exc_info):
        self.close()

    def qemu_file(self):
        return {"driver": "nbd", "server.type": "unix", "server.path": self.path}

    def close(self):
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
        for thread in self._threads:
            thread.join(timeout=HANDSHAKE_TIMEOUT)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _spawn(self, target, *args):
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name="nbd-%s" % os.path.basename(self.path))
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self):
        listener = self._listener
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._connections.add(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn):
        try:
            conn.settimeout(HANDSHAKE_TIMEOUT)
            if self._handshake(conn):
                conn.settimeout(None)
                Transmission(conn, self).run()
        except (OSError, ProtocolError) as exc:
            LOG.debug("NBD connection on %s ended: %s", self.path, exc)
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    # -- the handshake: options until GO (or EXPORT_NAME)

    def _handshake(self, conn):
        conn.sendall(NBDMAGIC + struct.pack(">QH", IHAVEOPT,
                                            FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
        client_flags, = struct.unpack(">I", _recv_exact(conn, 4))
        while True:
            magic, option, length = struct.unpack(">QII", _recv_exact(conn, 16))
            if magic != IHAVEOPT or length > MAX_OPTION:
                raise ProtocolError("bad option header")
            _recv_exact(conn, length)  # one export: its name and the infos asked are moot
            if option == OPT_EXPORT_NAME:
                conn.sendall(struct.pack(">QH", self.size, TRANSMISSION_FLAGS) +
                             (b"" if client_flags & CLIENT_FLAG_NO_ZEROES else b"\0" * 124))
                return True
            if option == OPT_ABORT:
                self._reply(conn, option, REP_ACK)
                return False
            if option in (OPT_INFO, OPT_GO):
                self._reply(conn, option, REP_INFO,
                            struct.pack(">HQH", INFO_EXPORT, self.size, TRANSMISSION_FLAGS))
                self._reply(conn, option, REP_INFO,
                            struct.pack(">HIII", INFO_BLOCK_SIZE, 1, 64 * 1024, MAX_BLOCK))
                self._reply(conn, option, REP_ACK)
                if option == OPT_GO:
                    return True
                continue
            self._reply(conn, option, REP_ERR_UNSUP)

    @staticmethod
    def _reply(conn, option, reply, data=b""):
        conn.sendall(struct.pack(">QIII", OPTION_REPLY_MAGIC, option, reply, len(data)) + data)


class Transmission:
    """One client's requests: reads go to the export's reader, DEPTH at a time; their replies
    are sent, in the order they finish, by a thread of their own."""

    def __init__(self, conn, export):
        self.conn = conn
        self.export = export
        self.slots = threading.Semaphore(DEPTH)
        self.replies = queue.Queue()

    def run(self):
        sender = threading.Thread(target=self._send_replies, daemon=True)
        sender.start()
        try:
            self._receive()
        finally:
            for _ in range(DEPTH):  # the reads in flight end before the connection does
                self.slots.acquire()
            self.replies.put(None)
            sender.join()

    def _receive(self):
        while True:
            magic, _flags, command, handle, offset, length = struct.unpack(
                ">IHHQQI", _recv_exact(self.conn, 28))
            if magic != REQUEST_MAGIC:
                raise ProtocolError("bad request magic")
            if command == CMD_DISC:
                return
            if command == CMD_FLUSH:
                self._queue(handle, 0)
            elif command != CMD_READ:
                raise ProtocolError("command %d on a read-only export" % command)
            elif length > MAX_BLOCK or offset + length > self.export.size:
                self._queue(handle, errno.EINVAL)
            else:
                self.slots.acquire()
                self.export._read(offset, length,
                                  lambda data, error, h=handle: self._done(h, data, error))

    def _done(self, handle, data, error):
        if error:
            self.export.failed.set()
        self._queue(handle, error, None if error else data, release=True)

    def _queue(self, handle, error, data=None, release=False):
        self.replies.put((handle, error, data, release))

    def _send_replies(self):
        broken = False
        while True:
            item = self.replies.get()
            if item is None:
                return
            handle, error, data, release = item
            if not broken:
                try:
                    self.conn.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle))
                    if data is not None:
                        self.conn.sendall(data)
                except OSError:
                    broken = True
            if release:
                self.slots.release()
