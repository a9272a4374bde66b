"""Fakes shared by the unit tests, keeping the real exception names."""

from cacheraw import exception


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeLocks:
    """A RADOS lock table as cls_lock keeps it: a lock has one holder (cookie) and an expiry;
    renewal with MUST_RENEW fails unless the cookie holds it still."""

    def __init__(self, clock=None, held=None):
        self.clock = clock or Clock()
        self.holders = {}  # image id -> (cookie, expiry)
        self.released = []
        self.fail_renewals = None
        for image_id in held or ():
            self.holders[image_id] = ("someone-else", float("inf"))

    def _holder(self, image_id):
        cookie, expiry = self.holders.get(image_id, (None, 0))
        return cookie if expiry > self.clock() else None

    def take(self, image_id, cookie, duration):
        if self._holder(image_id) not in (None, cookie):
            raise exception.LockBusy(image_id)
        self.holders[image_id] = (cookie, self.clock() + duration)

    def renew(self, image_id, cookie, duration):
        if self.fail_renewals is not None:
            raise self.fail_renewals
        if self._holder(image_id) != cookie:
            raise exception.LockLost(image_id)
        self.holders[image_id] = (cookie, self.clock() + duration)

    def release(self, image_id, cookie):
        if self._holder(image_id) != cookie:
            raise exception.LockLost(image_id)
        del self.holders[image_id]
        self.released.append(image_id)

    def is_locked(self, image_id):
        return self._holder(image_id) is not None

    def steal(self, image_id):
        """Another worker takes the lock, as after ours expired."""
        self.holders[image_id] = ("thief", self.clock() + 60)
