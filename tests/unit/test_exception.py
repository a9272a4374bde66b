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
    assert exception.one_line(exception.ImageAPIError("refused:\n413")) == "refused: 413"


@pytest.mark.parametrize("room, name", [(exception.Room.POOL, "images"),
                                        (exception.Room.CONVERSION_DIR, "/var/lib/cache raw"),
                                        (exception.Room.CONVERSION_DIR, "/odd: need 1, have 2")])
def test_a_space_refusal_as_recorded_on_the_image_is_read_back_as_written(room, name):
    """NotEnoughSpace writes where and how much in its message; parse() reads them back from
    the Error recorded on the image (the only record the sweep has of it)."""
    error = exception.NotEnoughSpace(room, name, 5 * 1024 ** 3, 3, " (limited by\nits quota)")
    recorded = exception.one_line(error)
    assert recorded.startswith("not enough space in %s " % room.value)
    assert exception.NotEnoughSpace.parse(recorded) == (room, 5 * 1024 ** 3)
    assert (error.room, error.need) == (room, 5 * 1024 ** 3)


@pytest.mark.parametrize("recorded", [
    None, "", "temporary failure (attempt 1 of 5): not enough space in pool images: need 5, "
    "have 3", "image is corrupt or truncated", "not enough space in the attic: need 5, have 3",
    "not enough space in conversion directory /x: need None, have 3"])
def test_any_other_error_is_no_space_refusal(recorded):
    assert exception.NotEnoughSpace.parse(recorded) is None
