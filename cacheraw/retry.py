"""The one retry policy of cacheraw: exponential backoff on transient faults, numbers from
[worker] retry_*; and the one decorator of a boundary's public methods, which translates the
library's errors into ours and retries the transient ones."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, Tuple, Type, TypeVar, Union, cast

import tenacity
from oslo_config import cfg

LOG = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
# What ``except`` takes: an exception class or a tuple of them.
Errors = Union[Type[BaseException], Tuple[Type[BaseException], ...]]


def policy(conf: cfg.ConfigOpts, retry_on: Errors) -> tenacity.Retrying:
    """A tenacity.Retrying that retries calls raising ``retry_on`` (a type or tuple)."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(retry_on),
        stop=tenacity.stop_after_attempt(conf.worker.retry_attempts),
        wait=tenacity.wait_exponential(multiplier=conf.worker.retry_initial_delay,
                                       max=conf.worker.retry_max_delay),
        before_sleep=_log_retry,
        reraise=True,
    )


def boundary(library_errors: Errors,
             translate: Callable[[Any, BaseException, Tuple[Any, ...]], Exception]
             ) -> Callable[[F], F]:
    """A decorator of a boundary class's public methods (the class has ``_retry``, a policy):
    ``library_errors`` raised by the method become ``translate(self, exc, args)``, and the
    transient ones are retried. A ``lease`` keyword argument is asked before every attempt, so
    that no attempt starts once the lease is lost (cacheraw.ceph.lease)."""
    def decorate(func: F) -> F:
        @functools.wraps(func)
        def attempt(self: Any, *args: Any, **kwargs: Any) -> Any:
            lease = kwargs.get("lease")
            if lease is not None:
                lease.check()
            try:
                return func(self, *args, **kwargs)
            except library_errors as exc:
                raise translate(self, exc, args) from exc

        @functools.wraps(func)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            return self._retry(attempt, self, *args, **kwargs)
        return cast(F, wrapper)
    return decorate


def _log_retry(retry_state: tenacity.RetryCallState) -> None:
    """One warning per retry, naming the image (or cache) the call is about."""
    func = getattr(retry_state.fn, "__qualname__", "call")
    subject = retry_state.args[1] if len(retry_state.args) > 1 else None
    about = " of %s" % subject if isinstance(subject, str) else ""
    # Before a sleep, tenacity has both the failed attempt's outcome and the next action.
    sleep = retry_state.next_action.sleep if retry_state.next_action else 0.0
    error = retry_state.outcome.exception() if retry_state.outcome else None
    LOG.warning("Retrying %s%s in %.1f s (attempt %d): %s", func, about, sleep,
                retry_state.attempt_number, error)
