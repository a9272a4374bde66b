"""The daemon's pieces that run without a stack: its work queue."""

from cacheraw import worker

ID = "0dc0185d-550c-461a-bdc5-25b9e20586d5"


def test_work_queue_holds_each_image_once():
    queue = worker.WorkQueue()
    assert queue.put(ID) is True
    assert queue.put(ID) is False
    assert queue.get() == ID
    assert queue.put(ID) is False  # still running
    queue.done(ID)
    assert queue.put(ID) is True
    queue.close()
    assert queue.get() is None
