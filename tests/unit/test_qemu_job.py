"""cacheraw.qemu.job: a conversion in progress, cancelled once with the first reason, killing the
process group of its qemu-img whenever it is attached."""

import subprocess

import pytest

from cacheraw import exception
from cacheraw.qemu.job import Job

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_a_job_not_cancelled_passes_its_check():
    Job(ID).check()


def test_the_first_reason_is_raised_by_every_check():
    job = Job(ID)
    job.cancel(exception.LockLost("lease lost"))
    job.cancel(exception.WorkerStopping("stopping"))
    for _ in range(2):
        with pytest.raises(exception.LockLost, match="lease lost"):
            job.check()


def test_a_reason_that_is_no_conversion_abort_still_aborts():
    job = Job(ID)
    job.cancel("operator")
    with pytest.raises(exception.ConversionAborted, match="operator"):
        job.check()


def sleeper():
    return subprocess.Popen(["sleep", "60"], start_new_session=True)


def test_cancel_kills_the_attached_process_group():
    job = Job(ID)
    process = sleeper()
    job.attach(process)
    job.cancel(exception.WorkerStopping("stopping"))
    assert process.wait(timeout=10) == -9
    job.detach(process)
    job.kill()  # nothing attached: nothing to do


def test_a_process_attached_after_the_cancel_is_killed_at_once():
    job = Job(ID)
    job.cancel(exception.ImageDeleted("deleted"))
    process = sleeper()
    job.attach(process)
    assert process.wait(timeout=10) == -9
