"""The scheduler: takes batches of compatible jobs from the queue and runs them on the engine.

Compatible = the same batch key (task, decoding options and video length). A worker claims the
oldest job, waits up to `max_wait_ms` from that job's arrival for more of its kind (up to
`max_batch_size`), runs the batch in a thread, stores results, and renews its lease meanwhile.
One loop per engine (per device): it claims a batch only when the engine is free, so claimed
jobs never wait on the engine with their leases running out. The same loop runs inside
`magvit serve` and in `magvit worker` processes. Every job is checked again before it runs
(`service/validation.py`); a job the engine still rejects fails alone, the rest of its batch
runs. Policy only: no HTTP here and no model code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from media import MediaError, encode_video
from media.npz import read_npz
from models.tasks import TASKS
from service.jobs import ErrorType, Job
from service.metrics import Metrics
from service.queue import JobQueue
from service.settings import Settings
from service.validation import InvalidRequest, check_request

if TYPE_CHECKING:  # the engine (torch, the model) is loaded only where one runs
    from service.engine import Engine, EngineRequest

log = logging.getLogger("magvit.scheduler")


@dataclass
class LiveState:
    """Wakes in-process waiters (synchronous requests, event streams) when a job moves; waiters
    on other machines poll the queue."""

    changed: asyncio.Event

    def touch(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class Scheduler:
    def __init__(
        self, queue: JobQueue, engine: Engine | None, settings: Settings, metrics: Metrics
    ) -> None:
        self.queue = queue
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.live = LiveState(asyncio.Event())
        self.wake = asyncio.Event()
        self.stopping = False
        self._tasks: list[asyncio.Task] = []
        self._running: set[str] = set()  # claimed and not yet stored (leases renewed)
        self._storing: set[asyncio.Task] = set()  # results being encoded and stored
        self._stop_deadline: float | None = None

    # ----------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.engine is not None:
            self._tasks.append(loop.create_task(self._worker()))
        self._tasks.append(loop.create_task(self._janitor()))

    def begin_stop(self) -> None:
        """Stop taking work now (no new claims; readiness and waiting requests see it); the
        drain timeout counts from the first call."""
        if self._stop_deadline is None:
            self._stop_deadline = time.monotonic() + self.settings.drain_timeout_s
        self.stopping = True
        self.wake.set()
        self.live.touch()

    async def stop(self) -> None:
        """Stop taking work, let running batches finish within the drain timeout, then give
        unfinished jobs back to the queue."""
        self.begin_stop()
        deadline = self._stop_deadline or time.monotonic()
        while self._running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for store in list(self._storing):  # out of time: what is not stored goes back
            store.cancel()
        if self._running:
            self.queue.release(sorted(self._running))
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("the scheduler runs batches only with an engine")
        return self.engine

    def notify(self) -> None:
        self.wake.set()

    # -------------------------------------------------------------------------- workers
    async def _next_batch(self) -> list[Job]:
        s = self.settings
        while not self.stopping:
            self.wake.clear()
            batch = await asyncio.to_thread(
                self.queue.claim_batch, s.max_batch_size, s.max_wait_ms / 1000, s.lease_seconds, 0.5
            )
            if batch:
                return batch
            if not self.queue.blocking:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), timeout=0.5)
        return []

    async def _worker(self) -> None:
        while not self.stopping:
            try:
                batch = await self._next_batch()
            except Exception as err:  # the queue is unreachable: wait and try again
                log.warning("could not claim jobs: %s", err)
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            ids = [j.id for j in batch]
            self._running.update(ids)
            handed_off: set[str] = set()
            try:
                handed_off = await self._run_batch(batch)
            except Exception:  # never let one batch kill the worker
                log.exception("batch failed")
                for job in batch:
                    with contextlib.suppress(Exception):
                        self.queue.fail(job.id, "internal error while generating")
            finally:
                # Jobs whose results are being stored stay running until they are stored.
                self._running.difference_update(set(ids) - handed_off)
                self.live.touch()

    async def _run_batch(self, batch: list[Job]) -> set[str]:
        """Checks and runs a batch; returns the ids of the jobs whose results are being stored
        in the background (`_store`) while the engine takes the next batch."""
        from service.engine import EngineRequest

        now = time.time()
        for job in batch:
            self.metrics.queue_wait.observe(max(0.0, now - job.created_at))
        runnable: list[tuple[Job, EngineRequest]] = []
        for job in batch:
            data = await asyncio.to_thread(self.queue.get_input, job.id)
            spec = job.spec
            task = TASKS[spec.task]  # the one lookup: the Task is passed down from here
            try:
                frames = read_npz(data) if data else None
                check_request(
                    self._engine().config,
                    task,
                    spec.class_id,
                    None if frames is None else frames.shape[0],
                    spec.frames,
                    self.settings.max_output_frames,
                )
            except (InvalidRequest, MediaError) as err:
                await self._fail(job, f"invalid input: {err}", ErrorType.INVALID_INPUT)
                continue
            runnable.append((job, EngineRequest(task, frames, spec.class_id, spec.seed)))
        if runnable:
            return await self._generate(runnable)
        return set()

    async def _fail(self, job: Job, message: str, error_type: ErrorType) -> None:
        await asyncio.to_thread(self.queue.fail, job.id, message, error_type)
        self.metrics.jobs.labels("failed").inc()

    async def _generate(self, runnable: list[tuple[Job, EngineRequest]]) -> set[str]:
        """Runs one batch; if the engine rejects it, each job alone, so that only the jobs it
        rejects fail. Returns the ids handed to `_store`."""
        from service.engine import Cancelled, InvalidInput

        loop = asyncio.get_running_loop()
        jobs = [job for job, _ in runnable]
        requests = [request for _, request in runnable]
        options = jobs[0].spec.options
        preview = any(j.spec.preview for j in jobs)
        last_renew = [time.monotonic()]
        last_report = [0.0]
        alive = [True]

        def on_step(step: int, total: int, previews: list[bytes] | None) -> bool:
            # Runs in the engine thread: record progress, renew leases, honour cancellation.
            # The queue is asked at most every progress_interval_s (and at the last step), so
            # its round trips stay off the model's time.
            now = time.monotonic()
            if step < total and now - last_report[0] < self.settings.progress_interval_s:
                return alive[0]
            last_report[0] = now
            alive[0] = False
            for k, job in enumerate(jobs):
                current = self.queue.get(job.id)
                if current is None or current.status != "in_progress":
                    continue
                alive[0] = True
                self.queue.set_progress(job.id, step, total)
                if previews is not None:
                    self.queue.set_preview(job.id, previews[k])
            if time.monotonic() - last_renew[0] > self.settings.lease_seconds / 3:
                self.queue.renew([j.id for j in jobs], self.settings.lease_seconds)
                last_renew[0] = time.monotonic()
            loop.call_soon_threadsafe(self.live.touch)
            return alive[0]

        self.metrics.batch_size.observe(len(jobs))
        start = time.perf_counter()
        try:
            videos = await asyncio.to_thread(
                self._engine().run, requests, options, on_step, preview, jobs[0].spec.frames
            )
        except Cancelled:
            return set()
        except InvalidInput as err:
            if len(runnable) > 1:
                handed: set[str] = set()
                for one in runnable:
                    handed |= await self._generate([one])
                return handed
            await self._fail(jobs[0], f"invalid input: {err}", ErrorType.INVALID_INPUT)
            return set()
        self.metrics.inference.observe(time.perf_counter() - start)
        task = asyncio.get_running_loop().create_task(self._store(jobs, videos))
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)
        return {job.id for job in jobs}

    async def _store(self, jobs: list[Job], videos: list) -> None:
        """Encodes and stores a batch's results (while the engine runs the next batch), then
        completes the jobs; a job is complete only after its result is stored."""

        async def one(job: Job, video) -> None:
            fmt = job.spec.format
            t0 = time.perf_counter()
            data = await asyncio.to_thread(encode_video, video, fmt, job.spec.frame_rate)
            self.metrics.encode.observe(time.perf_counter() - t0)
            await asyncio.to_thread(self.queue.put_result, job.id, data)
            await asyncio.to_thread(self.queue.complete, job.id, fmt)  # after the result
            final = await asyncio.to_thread(self.queue.get, job.id)
            self.metrics.jobs.labels(final.status if final else "completed").inc()
            self._running.discard(job.id)
            self.live.touch()

        try:
            # All of a batch at once: its clients get their answers together, and come back
            # together for the next batch.
            await asyncio.gather(*(one(j, v) for j, v in zip(jobs, videos, strict=True)))
        except Exception:
            log.exception("storing results failed")
            for job in jobs:
                with contextlib.suppress(Exception):
                    if job.id in self._running:
                        await asyncio.to_thread(
                            self.queue.fail, job.id, "internal error while storing the result"
                        )
        finally:
            self._running.difference_update(job.id for job in jobs)
            self.live.touch()

    # -------------------------------------------------------------------------- janitor
    async def _janitor(self) -> None:
        """Deletes jobs and results past their time-to-live and refreshes the queue gauges."""
        last_expiry = 0.0
        while not self.stopping:
            try:
                if time.monotonic() - last_expiry >= 60:
                    await asyncio.to_thread(
                        self.queue.expire, time.time() - self.settings.result_ttl_s
                    )
                    last_expiry = time.monotonic()
                self.metrics.observe_queue(await asyncio.to_thread(self.queue.stats))
            except Exception as err:  # the queue is unreachable: try again later
                log.warning("queue maintenance failed: %s", err)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.sleep(5), timeout=6)
