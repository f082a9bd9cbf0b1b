"""An executor whose work runs on the thread that created it (for ``LocalBackend``).

libgomp gives every thread that enters a parallel region an OpenMP thread team of its own;
once a process holds more OpenMP threads than CPUs, idle team members sleep between parallel
regions instead of spinning, and every small region of a step pays a wake-up (a lite step
at 240x432 took 54 ms instead of 34 on two CPUs, docs/benchmarks.md). Evaluation and
training validation build or train the model on the main thread, so their steps must run
there too: ``run`` starts the async caller on a helper thread and serves the engine's work
on the calling thread until it ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

T = TypeVar("T")


class CallerThreadExecutor(Executor):
    def __init__(self) -> None:
        self.owner = threading.get_ident()
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._shutdown = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._shutdown:
            raise RuntimeError("cannot schedule new work after shutdown")
        future: Future = Future()
        self._work.put((future, fn, args, kwargs))
        return future

    def run(self, caller: Callable[[], T]) -> T:
        """``caller()`` on a helper thread, while this thread runs the work it submits."""
        if threading.get_ident() != self.owner:
            raise RuntimeError("run() belongs to the thread that created the executor")
        outcome: Future = Future()

        def call() -> None:
            try:
                outcome.set_result(caller())
            except BaseException as exc:  # handed to the calling thread
                outcome.set_exception(exc)
            finally:
                self._work.put(None)  # wake the serving loop

        helper = threading.Thread(target=call, name="isvos-caller", daemon=True)
        helper.start()
        while not outcome.done():
            self._serve(self._work.get())
        helper.join()
        return outcome.result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Refuse new work; on the owning thread, run (or cancel) what is queued."""
        self._shutdown = True
        if threading.get_ident() != self.owner:
            return
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return
            if item is not None and cancel_futures:
                item[0].cancel()
            elif item is not None:
                self._serve(item)

    @staticmethod
    def _serve(item) -> None:
        if item is None:
            return
        future, fn, args, kwargs = item
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # the submitter's to handle
            future.set_exception(exc)
