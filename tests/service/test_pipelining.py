"""The engine does not wait on the queue: results are encoded and stored while the next batch
runs, and progress reaches the queue at most every `progress_interval_s`."""

from __future__ import annotations

import threading
import time

from service.jobs import ErrorType
from tests.service.conftest import Server, make_settings, spec
from tests.service.test_batches import _wait


class Timed:
    """The engine, recording when each batch starts and ends."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.config = engine.config
        self.runs: list[tuple[float, float]] = []

    def run(self, *args, **kwargs):
        start = time.monotonic()
        try:
            return self.engine.run(*args, **kwargs)
        finally:
            self.runs.append((start, time.monotonic()))


def test_results_are_stored_while_the_next_batch_runs(tiny_checkpoint, tmp_path, monkeypatch):
    import service.scheduler

    encoded: list[tuple[float, float]] = []
    real_encode = service.scheduler.encode_video
    lock = threading.Lock()

    def slow_encode(video, fmt, *rate):
        start = time.monotonic()
        time.sleep(0.6)  # a slow encoder: the engine must not wait for it
        out = real_encode(video, fmt, *rate)
        with lock:
            encoded.append((start, time.monotonic()))
        return out

    monkeypatch.setattr(service.scheduler, "encode_video", slow_encode)
    srv = Server(make_settings(tiny_checkpoint, tmp_path, max_batch_size=1)).start()
    try:
        st = srv.app.state.magvit
        timed = Timed(st.scheduler.engine)
        monkeypatch.setattr(st.scheduler, "engine", timed)
        ids = [st.queue.enqueue(spec(seed=i, format="npz"))[0].id for i in range(3)]
        st.scheduler.notify()
        jobs = _wait(st.queue, ids)
        assert [j.status for j in jobs] == ["completed"] * 3
        assert all(st.queue.get_result(i) for i in ids)
        # The second batch started before the first batch's result was encoded.
        first_encoded = min(end for _, end in encoded)
        assert len(timed.runs) == 3 and sorted(timed.runs)[1][0] < first_encoded
    finally:
        srv.stop()


def test_a_failed_store_fails_its_jobs(tiny_checkpoint, tmp_path, monkeypatch):
    import service.scheduler

    def broken(video, fmt, frame_rate=None):
        raise OSError("disk full")

    monkeypatch.setattr(service.scheduler, "encode_video", broken)
    srv = Server(make_settings(tiny_checkpoint, tmp_path)).start()
    try:
        st = srv.app.state.magvit
        [job] = _wait(st.queue, [st.queue.enqueue(spec(format="npz"))[0].id])
        assert job.status == "failed" and job.error_type is ErrorType.INTERNAL
        assert "storing" in job.error
        # The job reads failed as soon as the queue has it; the scheduler lets go of its claim
        # just after, on its own loop.
        deadline = time.monotonic() + 5
        while st.scheduler._running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not st.scheduler._running  # nothing is left claimed
    finally:
        srv.stop()


def test_progress_reaches_the_queue_at_most_every_interval(tiny_checkpoint, tmp_path):
    srv = Server(make_settings(tiny_checkpoint, tmp_path, progress_interval_s=10.0)).start()
    try:
        st = srv.app.state.magvit
        calls: list[tuple[int, int]] = []
        real = st.queue.set_progress

        def counting(job_id, step, num_steps):
            calls.append((step, num_steps))
            return real(job_id, step, num_steps)

        st.queue.set_progress = counting
        [job] = _wait(st.queue, [st.queue.enqueue(spec(steps=6, format="npz"))[0].id])
        assert job.status == "completed"
        # The first step (nothing reported yet) and the last, not the four between.
        assert calls == [(1, 6), (6, 6)]
    finally:
        srv.stop()


def test_a_batch_is_encoded_all_at_once(tiny_checkpoint, tmp_path, monkeypatch):
    import service.scheduler

    real_encode = service.scheduler.encode_video
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def slow_encode(video, fmt, *rate):
        start = time.monotonic()
        time.sleep(0.5)
        out = real_encode(video, fmt, *rate)
        with lock:
            spans.append((start, time.monotonic()))
        return out

    monkeypatch.setattr(service.scheduler, "encode_video", slow_encode)
    srv = Server(make_settings(tiny_checkpoint, tmp_path, max_batch_size=4, max_wait_ms=500))
    srv.start()
    try:
        st = srv.app.state.magvit
        ids = [st.queue.enqueue(spec(seed=i, format="npz"))[0].id for i in range(3)]
        st.scheduler.notify()
        assert [j.status for j in _wait(st.queue, ids)] == ["completed"] * 3
        # The three encodings overlap: each started before any of them had finished.
        assert len(spans) == 3 and max(s for s, _ in spans) < min(e for _, e in spans)
    finally:
        srv.stop()
