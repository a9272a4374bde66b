"""The one retry policy of cacheraw: exponential backoff on transient faults, numbers from
[worker] retry_*."""

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
        before_sleep=tenacity.before_sleep_log(LOG, logging.WARNING),
        reraise=True,
    )
