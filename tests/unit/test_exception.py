"""cacheraw's errors: which ones are retried, which are recorded for good, how one is shown."""

import pytest

from cacheraw import exception

TRANSIENT = [exception.CephUnavailable, exception.CephBusy, exception.ImageAPIUnavailable,
             exception.MessagingUnavailable, exception.ConversionFailed]
PERMANENT = [exception.NotEnoughSpace, exception.UnsafeImage, exception.UnreadableImage,
             exception.ImageUpdateRefused]
ABORTED = [exception.LockLost, exception.WorkerStopping, exception.ImageDeleted]


@pytest.mark.parametrize("error", TRANSIENT)
def test_a_transient_fault_is_retried_and_never_permanent(error):
    assert issubclass(error, exception.Transient)
    assert not issubclass(error, exception.Permanent)


@pytest.mark.parametrize("error", PERMANENT)
def test_a_permanent_fault_is_never_retried(error):
    assert issubclass(error, exception.Permanent)
    assert not issubclass(error, exception.Transient)


@pytest.mark.parametrize("error", ABORTED)
def test_a_stop_on_purpose_is_neither_a_fault_to_retry_nor_one_to_record(error):
    assert issubclass(error, exception.ConversionAborted)
    assert not issubclass(error, (exception.Transient, exception.Permanent))


def test_every_error_of_cacheraw_has_one_base():
    errors = [value for value in vars(exception).values()
              if isinstance(value, type) and issubclass(value, Exception)]
    assert len(errors) > 15
    assert all(issubclass(error, exception.CacherawError) for error in errors)


def test_one_line_joins_lines_and_spaces():
    assert exception.one_line("qemu-img failed:\n  bad\tdata\n") == "qemu-img failed: bad data"


def test_one_line_cuts_long_text_to_its_limit():
    text = exception.one_line("x" * 1000)
    assert len(text) == 250 and text.endswith("...")
    assert exception.one_line("a " * 10, limit=8) == "a a a..."


def test_one_line_of_an_exception_is_its_message():
    assert exception.one_line(exception.NotEnoughSpace("need 5,\nhave 3")) == "need 5, have 3"
