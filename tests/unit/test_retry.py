"""The one retry policy: only the named faults, [worker] retry_* numbers, one warning a retry."""

import logging

import pytest

from cacheraw import exception
from cacheraw import retry


class Calls:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.count = 0

    def fetch(self, image_id):
        self.count += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def run(conf, calls, retry_on=exception.Transient):
    # As the boundaries use it: around a method, called with the object and the image id.
    return retry.policy(conf, retry_on)(Calls.fetch, calls, "0dc0185d")


def test_a_transient_fault_is_retried_until_it_passes(conf):
    calls = Calls(exception.CephBusy("busy"), exception.CephBusy("busy"), "done")
    assert run(conf, calls) == "done"
    assert calls.count == 3


def test_retries_stop_after_retry_attempts_with_the_last_error(conf):
    conf.set_override("retry_attempts", 2, group="worker")
    calls = Calls(*[exception.ImageAPIUnavailable("down %d" % n) for n in range(5)])
    with pytest.raises(exception.ImageAPIUnavailable, match="down 1"):
        run(conf, calls)
    assert calls.count == 2


def test_other_errors_are_never_retried(conf):
    calls = Calls(exception.UnsafeImage("backing file"), "unreached")
    with pytest.raises(exception.UnsafeImage):
        run(conf, calls)
    assert calls.count == 1


def test_each_retry_is_one_warning_naming_the_subject(conf, caplog):
    calls = Calls(exception.CephUnavailable("timed out"), "done")
    with caplog.at_level(logging.WARNING, logger="cacheraw.retry"):
        run(conf, calls)
    (line,) = caplog.messages
    assert "Calls.fetch of 0dc0185d" in line and "timed out" in line and "attempt 1" in line


def test_the_delays_grow_to_retry_max_delay(conf):
    conf.set_override("retry_initial_delay", 1.0, group="worker")
    conf.set_override("retry_max_delay", 3.0, group="worker")
    policy = retry.policy(conf, exception.Transient)
    waits = [policy.wait(type("State", (), {"attempt_number": n})()) for n in range(1, 6)]
    assert waits == sorted(waits) and max(waits) == 3.0 and waits[0] >= 1.0
