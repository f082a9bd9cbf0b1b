"""Work of an async caller run on the thread that owns the model (one OpenMP team)."""

from __future__ import annotations

import threading

import pytest

from service.backends.caller_thread import CallerThreadExecutor

pytestmark = pytest.mark.timeout(60)


def test_work_runs_on_the_owning_thread_and_errors_travel_back():
    executor = CallerThreadExecutor()
    owner = threading.get_ident()

    def caller():
        assert threading.get_ident() != owner
        ran_on = executor.submit(threading.get_ident).result(timeout=10)
        failed = executor.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(timeout=10)
        return ran_on

    assert executor.run(caller) == owner

    def broken():
        raise KeyError("from the helper")

    with pytest.raises(KeyError, match="from the helper"):
        executor.run(broken)


def test_shutdown_runs_what_is_queued_then_refuses():
    executor = CallerThreadExecutor()
    queued = executor.submit(lambda: "late")  # nothing serves it until shutdown
    assert not queued.done()
    executor.shutdown()
    assert queued.result(timeout=1) == "late"
    with pytest.raises(RuntimeError, match="after shutdown"):
        executor.submit(print)
    elsewhere = []
    thread = threading.Thread(target=lambda: elsewhere.append(_run_elsewhere(executor)))
    thread.start()
    thread.join(10)
    assert elsewhere == ["refused"]


def _run_elsewhere(executor: CallerThreadExecutor) -> str:
    try:
        executor.run(lambda: None)
    except RuntimeError:
        return "refused"
    return "ran"


def test_segment_sequence_steps_on_the_calling_thread(engine, clip):
    from service.evaluation import segment_sequence

    frames, labels = clip
    threads = set()
    step = engine.step_many

    def recording(*args, **kwargs):
        threads.add(threading.get_ident())
        return step(*args, **kwargs)

    engine.step_many = recording
    predictions = segment_sequence(engine, frames[:6], labels[0], 96)
    assert len(predictions) == 6
    assert predictions[0].shape == labels[0].shape
    assert threads == {threading.get_ident()}
