"""The errors of cacheraw. Library errors (rados, rbd, HTTP) are translated into these at the
boundary of the module that talks to the outside system; the core never sees a library error."""

from __future__ import annotations

import enum
import re
from typing import Optional, Tuple


class CacherawError(Exception):
    """Base of every error of cacheraw."""


class ConfigError(CacherawError):
    """The configuration cannot work; the daemon cannot start."""


class Transient(CacherawError):
    """A fault that may go away by itself: worth retrying later."""


class Permanent(CacherawError):
    """A fault that retrying cannot mend until the image changes or an operator acts."""


# -- Ceph

class CephUnavailable(Transient):
    """The cluster cannot be reached or did not answer in time."""


class CephBusy(Transient):
    """An RBD image is busy or the cluster refused for now."""


class CephNotFound(CacherawError):
    """An RBD image, snapshot or object does not exist."""


class CephError(CacherawError):
    """Any other error from Ceph."""


class LockBusy(CacherawError):
    """Another worker holds the conversion lock of the image."""


class Room(enum.Enum):
    """Where a conversion lacked the space it needs."""
    POOL = "pool"
    CONVERSION_DIR = "conversion directory"


class NotEnoughSpace(Permanent):
    """The cache would not fit in the pool, or the image's download in [converter]
    conversion_dir: the sweep converts the image once there is room for it. The image's Error
    is the only record of that: MESSAGE writes where and how much, parse() reads them back."""

    MESSAGE = "not enough space in %s %s: need %d, have %d"
    # The last ": need" (a directory's name may say anything; what follows it never does).
    MESSAGE_RE = re.compile(r"^not enough space in (%s) .*: need (\d+), have \d+"
                            % "|".join(room.value for room in Room))

    def __init__(self, room: Room, name: str, need: int, have: int, detail: str = ""):
        super().__init__(self.MESSAGE % (room.value, name, need, have) + detail)
        self.room = room
        self.need = need

    @classmethod
    def parse(cls, error: Optional[str]) -> Optional[Tuple[Room, int]]:
        """(where, bytes needed) of a recorded NotEnoughSpace, None for any other Error."""
        match = cls.MESSAGE_RE.match(error or "")
        return (Room(match.group(1)), int(match.group(2))) if match else None


class ExpandsTooMuch(Permanent):
    """The image's data once converted is more than [converter] max_expansion times its
    upload."""


# -- image API

class ImageAPIUnavailable(Transient):
    """The image API or Keystone cannot be reached, timed out or answered 5xx."""


class ImageNotFound(CacherawError):
    """The image does not exist (any more)."""


class ImageAPIError(CacherawError):
    """The image API refused a request for another reason."""


class ImageAPIRequestFailed(ImageAPIError):
    """A request of the operator's checks failed (cacheraw.image_api.CheckingAdapter): ``kind``
    says how, for the check to word it: "unauthorized" (Keystone refused the credentials),
    "unreachable", "forbidden" (403), "other"."""

    def __init__(self, message: str, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


# -- message bus

class MessagingUnavailable(Transient):
    """The message bus cannot be reached or refused us."""


# -- images

class UnsafeImage(Permanent):
    """The image data is malformed, mislabelled or dangerous: it is never converted."""


class UnreadableImage(UnsafeImage):
    """qemu-img cannot read the image (unless the cluster itself is unreachable)."""


class ConversionFailed(Transient):
    """qemu-img failed or timed out while converting an image it could read: most often the
    cluster or the host, so the image is retried a bounded number of times."""


class ConversionAborted(CacherawError):
    """The conversion was stopped on purpose (image deleted, worker stopping)."""


class LockLost(ConversionAborted):
    """This worker can no longer prove that it holds the image's conversion lock: another worker
    may own the image now, so nothing of it may be touched."""


class WorkerStopping(ConversionAborted):
    """The worker is stopping: the image is left for the next start."""


class ImageDeleted(ConversionAborted):
    """The image was deleted during its conversion."""


class CephBlocklisted(CacherawError):
    """The cluster blocklisted this worker's Ceph client: nothing it sends is accepted any more,
    so the process must start again with a new client."""


class ImageUpdateRefused(Permanent):
    """The image API refused a property update with a 4xx (e.g. 413: the image's property
    quota is reached): repeating it cannot help."""


def one_line(text: object, limit: int = 250) -> str:
    """An error as one line of at most ``limit`` characters, as it is recorded and shown."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
