"""A conversion in progress, and the one way to stop the qemu-img that runs for it."""

from __future__ import annotations

import os
import signal
import threading
from typing import Callable, Optional, Protocol, Union

from cacheraw import exception


class Process(Protocol):
    """What a job needs of the process it may kill: its id, which is its group's too."""

    @property
    def pid(self) -> int: ...


class Job:
    """A conversion in progress; cancel() kills its qemu-img (with its whole process group).
    When set, on_progress(percent) is called as qemu-img reports how far it is."""

    def __init__(self, image_id: Optional[str]):
        self.image_id = image_id
        self.on_progress: Optional[Callable[[float], None]] = None
        self.cancelled = threading.Event()
        self.reason: Union[exception.ConversionAborted, str, None] = None
        self._process: Optional[Process] = None
        self._lock = threading.Lock()

    def attach(self, process: Process) -> None:
        with self._lock:
            self._process = process
            if self.cancelled.is_set():
                self._kill_locked()

    def detach(self, process: Process) -> None:
        """The process and its group have ended."""
        with self._lock:
            if self._process is process:
                self._process = None

    def kill(self) -> None:
        with self._lock:
            self._kill_locked()

    def _kill_locked(self) -> None:
        # qemu-img runs in a process group of its own (its sandbox with it): kill all of it.
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except OSError:
                pass

    def cancel(self, reason: Union[exception.ConversionAborted, str]) -> None:
        """Stop the conversion: ``reason`` is a ConversionAborted (LockLost, WorkerStopping,
        ImageDeleted), raised by the next check()."""
        with self._lock:
            if not self.cancelled.is_set():
                self.reason = reason
            self.cancelled.set()
            self._kill_locked()

    def check(self) -> None:
        if self.cancelled.is_set():
            reason = self.reason
            if isinstance(reason, exception.ConversionAborted):
                raise type(reason)(*reason.args)
            raise exception.ConversionAborted(str(reason or "cancelled"))
