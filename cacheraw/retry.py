"""The one retry policy of cacheraw: exponential backoff on transient faults, numbers from
[worker] retry_*; and the one decorator of a boundary's public methods, which translates the
library's errors into ours and retries the transient ones."""

import functools
import logging

import tenacity

LOG = logging.getLogger(__name__)


def policy(conf, retry_on):
    """A tenacity.Retrying that retries calls raising ``retry_on`` (a type or tuple)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=tenacity.stop_after_attempt(conf.worker.retry_attempts),
        wait=tenacity.wait_exponential(multiplier=conf.worker.retry_initial_delay,
                                       max=conf.worker.retry_max_delay),
        before_sleep=_log_retry,
        reraise=True,
    )


def boundary(library_errors, translate):
    """A decorator of a boundary class's public methods (the class has ``_retry``, a policy):
    ``library_errors`` raised by the method become ``translate(self, exc, args)``, and the
    transient ones are retried. A ``lease`` keyword argument is asked before every attempt, so
    that no attempt starts once the lease is lost (cacheraw.ceph.lease)."""
    def decorate(func):
        @functools.wraps(func)
        def attempt(self, *args, **kwargs):
            lease = kwargs.get("lease")
            if lease is not None:
                lease.check()
            try:
                return func(self, *args, **kwargs)
            except library_errors as exc:
                raise translate(self, exc, args) from exc

        @functools.wraps(func)
        def wrapper(self, *args, **kwargs):
            return self._retry(attempt, self, *args, **kwargs)
        return wrapper
    return decorate


def _log_retry(retry_state):
    """One warning per retry, naming the image (or cache) the call is about."""
    func = getattr(retry_state.fn, "__qualname__", "call")
    subject = retry_state.args[1] if len(retry_state.args) > 1 else None
    about = " of %s" % subject if isinstance(subject, str) else ""
    LOG.warning("Retrying %s%s in %.1f s (attempt %d): %s", func, about,
                retry_state.next_action.sleep, retry_state.attempt_number,
                retry_state.outcome.exception())
