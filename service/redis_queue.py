"""The Redis Streams backend of the job queue: API replicas and GPU workers on many machines.

Keys (prefix `magvit:` by default):
    jobs           stream of job ids; consumer group `workers`
    dead           dead-letter stream: jobs delivered `max_attempts` times, with the reason
    queued         sorted set of waiting job ids by arrival (the queue depth)
    job:<id>       hash: the job's fields (status, params, attempts, progress, worker, ...)
    input:<id>     the uploaded frames (npz); result:<id> the video; preview:<id> the latest PNG
    idem:<key>     idempotency key -> job id
    owner:<owner>  sorted set of an owner's job ids by arrival (listings; ids of expired jobs
                   are taken out by `expire`)
    webhooks       list of finished jobs whose webhook is still to be sent (pushed by the
                   script that finishes a job, popped by one sender each)
    redeliveries   count of deliveries taken over from a worker that stopped renewing

A worker reads with XREADGROUP (COUNT = its batch, BLOCK = its wait) and XACKs an entry only
after the job's result is stored; while it works it renews its claim (XCLAIM resets the idle
time). XAUTOCLAIM hands the entries of a worker that stopped renewing for a lease to another
worker. State changes that must not race (claim, finish, cancel) are Lua scripts. Finished jobs,
results and idempotency keys expire after the result time-to-live, so any replica answers for any
job until then. Connections retry with backoff, and a consumer group lost with a restarted Redis
is created again.
"""

from __future__ import annotations

import functools
import threading
import time
import uuid
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from service.jobs import STATUSES, ErrorType, Job, JobSpec, scoped_key
from service.queue import (
    IdempotencyConflict,
    JobPage,
    QueueFull,
    QueueUnavailable,
    UnknownCursor,
    worker_name,
)

GROUP = "workers"
SOCKET_TIMEOUT_S = 2.0
MAX_BLOCK_S = 1.0  # XREADGROUP BLOCK at most, well inside the socket timeout

# KEYS: job hash, queued set. ARGV: max attempts, worker, stream entry id, now, job id.
# Returns the new attempt count, -1 if the job is no longer wanted, -2 if it is used up.
_CLAIM = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'queued' and s ~= 'in_progress' then return -1 end
local a = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')
if a >= tonumber(ARGV[1]) then return -2 end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'worker', ARGV[2], 'msg', ARGV[3])
redis.call('HSETNX', KEYS[1], 'started_at', ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[5])
return redis.call('HINCRBY', KEYS[1], 'attempts', 1)
"""

# KEYS: job hash, queued set, input, preview, result, webhooks list. ARGV: new status, now,
# error, format, time-to-live, job id, allowed old statuses (space separated), error type.
# Returns the old status.
_FINISH = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return false end
if string.find(' ' .. ARGV[7] .. ' ', ' ' .. s .. ' ', 1, true) then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2], 'error', ARGV[3],
             'result_format', ARGV[4], 'error_type', ARGV[8])
  if ARGV[1] == 'completed' then redis.call('HSET', KEYS[1], 'progress', '100') end
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('DEL', KEYS[3], KEYS[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  if redis.call('EXISTS', KEYS[5]) == 1 then redis.call('EXPIRE', KEYS[5], ARGV[5]) end
  if redis.call('HGET', KEYS[1], 'webhook') == '1' then redis.call('RPUSH', KEYS[6], ARGV[6]) end
end
return s
"""

# KEYS: job hash, queued set. ARGV: job id. Back to the queue, the attempt not counted.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'in_progress' then return 0 end
local a = tonumber(redis.call('HGET', KEYS[1], 'attempts') or '1')
redis.call('HSET', KEYS[1], 'status', 'queued', 'attempts', math.max(a - 1, 0))
redis.call('ZADD', KEYS[2], redis.call('HGET', KEYS[1], 'created_at'), ARGV[1])
return 1
"""


# KEYS: an owner's index. ARGV: cursor job id ('' for the newest), count. The next ids after
# the cursor, newest first, read at once (arrivals meanwhile move no page); false when the
# cursor is not in the index.
_PAGE = """
local start = 0
if ARGV[1] ~= '' then
  local rank = redis.call('ZREVRANK', KEYS[1], ARGV[1])
  if not rank then return false end
  start = rank + 1
end
return redis.call('ZREVRANGE', KEYS[1], start, start + tonumber(ARGV[2]) - 1)
"""
LIST_SCAN = 1000  # job ids a listing looks at per page at most (with a status filter)


class RedisQueue:
    blocking = True

    def __init__(
        self,
        url: str,
        max_attempts: int = 3,
        result_ttl_s: float = 86_400.0,
        consumer: str | None = None,
        prefix: str = "magvit",
    ) -> None:
        # Bounded: a call gives up within about 2 s of Redis going away (QueueUnavailable), so
        # callers can answer 503 and try again later; blocking reads wait at most 1 s.
        retry = Retry(ExponentialBackoff(cap=0.25, base=0.05), retries=2)
        self.r = redis.Redis.from_url(
            url,
            retry=retry,
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            socket_connect_timeout=0.5,
            socket_timeout=SOCKET_TIMEOUT_S,
            health_check_interval=10,
        )
        self.max_attempts = max_attempts
        self.ttl = max(1, int(result_ttl_s))
        self.worker = consumer or worker_name()
        self.p = prefix
        self.stream, self.dead, self.queued = f"{prefix}:jobs", f"{prefix}:dead", f"{prefix}:queued"
        self.webhooks = f"{prefix}:webhooks"
        self._claim = self.r.register_script(_CLAIM)
        self._finish_script = self.r.register_script(_FINISH)
        self._release = self.r.register_script(_RELEASE)
        self._page = self.r.register_script(_PAGE)
        self._buffer: list[Job] = []  # claimed by this worker, not yet handed out
        self._lock = threading.Lock()
        self._group_ready = False

    # ------------------------------------------------------------------------------ keys
    def _k(self, kind: str, job_id: str) -> str:
        return f"{self.p}:{kind}:{job_id}"

    def close(self) -> None:
        self.r.close()

    def _ensure_group(self) -> None:
        try:
            self.r.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
        self._group_ready = True

    # ------------------------------------------------------------------------------ jobs
    def _job(self, h: dict[bytes, bytes]) -> Job | None:
        if not h or b"id" not in h:
            return None
        d = {k.decode(): v.decode() for k, v in h.items()}

        def opt(name: str) -> str | None:
            return d.get(name) or None

        return Job(
            id=d["id"],
            spec=JobSpec.from_json(d["params"], task=d.get("task")),
            status=d["status"],
            progress=float(d.get("progress", 0)),
            attempts=int(d.get("attempts", 0)),
            created_at=float(d["created_at"]),
            started_at=float(d["started_at"]) if opt("started_at") else None,
            finished_at=float(d["finished_at"]) if opt("finished_at") else None,
            error=opt("error"),
            error_type=ErrorType(d["error_type"]) if opt("error_type") else None,
            result_format=opt("result_format"),
            idempotency_key=opt("idempotency_key"),
            step=int(d.get("step", 0)),
            num_steps=int(d.get("num_steps", 0)),
            worker=opt("worker"),
        )

    def get(self, job_id: str) -> Job | None:
        return self._job(self.r.hgetall(self._k("job", job_id)))

    def find(self, owner: str, idempotency_key: str) -> Job | None:
        job_id = self.r.get(self._k("idem", scoped_key(owner, idempotency_key)))
        return self.get(job_id.decode()) if job_id else None

    def enqueue(
        self,
        spec: JobSpec,
        idempotency_key: str | None = None,
        max_depth: int = 1 << 30,
        job_id: str | None = None,
    ) -> tuple[Job, bool]:
        """Returns (job, created): an existing job for a known idempotency key."""
        if idempotency_key and (existing := self.find(spec.owner, idempotency_key)):
            return self._same_request(existing, spec), False
        if self.r.zcard(self.queued) >= max_depth:
            raise QueueFull
        job = Job(job_id or uuid.uuid4().hex, spec, idempotency_key=idempotency_key)
        if idempotency_key and not self.r.set(
            self._k("idem", scoped_key(spec.owner, idempotency_key)), job.id, nx=True, ex=self.ttl
        ):  # another replica won the race
            existing = self.find(spec.owner, idempotency_key)
            return (self._same_request(existing, spec) if existing else job), False
        fields = {
            "id": job.id,
            "task": spec.task,
            "params": spec.to_json(),
            "batch_key": spec.batch_key,
            "owner": spec.owner,
            "status": "queued",
            "progress": 0,
            "attempts": 0,
            "step": 0,
            "num_steps": 0,
            "created_at": repr(job.created_at),
            "idempotency_key": idempotency_key or "",
            "webhook": "1" if spec.webhook else "",
        }
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("job", job.id), mapping=fields)
            pipe.zadd(self.queued, {job.id: job.created_at})
            pipe.zadd(self._k("owner", spec.owner), {job.id: job.created_at})
            pipe.xadd(self.stream, {"id": job.id})
            pipe.execute()
        return job, True

    def list_jobs(
        self, owner: str, limit: int, after: str | None = None, status: str | None = None
    ) -> JobPage:
        """The owner's jobs, newest first, from its index; looks at LIST_SCAN ids at most (a
        status filter may give a short page, its `next` where the look stopped)."""
        index = self._k("owner", owner)
        jobs: list[Job] = []
        cursor = after or ""
        looked = 0
        more = True
        while len(jobs) <= limit and looked < LIST_SCAN:
            ids = self._page(keys=[index], args=[cursor, min(100, LIST_SCAN - looked)])
            if ids is None:
                raise UnknownCursor
            if not ids:
                more = False
                break
            looked += len(ids)
            with self.r.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self._k("job", job_id.decode()))
                hashes = pipe.execute()
            for job_id, h in zip(ids, hashes, strict=True):
                job = self._job(h)
                cursor = job_id.decode()
                if job is None or job.spec.owner != owner:
                    continue  # expired, not yet out of the index
                if status is None or job.status == status:
                    jobs.append(job)
                    if len(jobs) > limit:
                        break
        if len(jobs) > limit:
            return JobPage(jobs[:limit], jobs[limit - 1].id)
        return JobPage(jobs, cursor if more and cursor else None)

    @staticmethod
    def _same_request(existing: Job, spec: JobSpec) -> Job:
        if existing.spec.fingerprint != spec.fingerprint:
            raise IdempotencyConflict
        return existing

    def take_notifications(self, limit: int) -> list[Job]:
        """LPOP hands each finished job's notification to one sender; expired jobs are
        skipped."""
        ids = self.r.lpop(self.webhooks, limit) or []
        return [job for job in (self.get(i.decode()) for i in ids) if job is not None]

    def return_notifications(self, job_ids: list[str]) -> None:
        if job_ids:
            self.r.rpush(self.webhooks, *job_ids)

    # ---------------------------------------------------------------------------- claims
    def claim_batch(self, max_batch, max_wait_s, lease_s, block_s=0.5):
        """Jobs of one batch key, oldest first: from this worker's claimed buffer, else taken
        over from stopped workers (XAUTOCLAIM) and read from the stream (XREADGROUP), waiting up
        to `block_s` for a first job and until `max_wait_s` after its arrival for more."""
        with self._lock:
            if not self._buffer:
                self._fill(max_batch, max_wait_s, lease_s, block_s)
            if not self._buffer:
                return []
            key = self._buffer[0].batch_key
            batch = [j for j in self._buffer if j.batch_key == key][:max_batch]
            taken = {j.id for j in batch}
            self._buffer = [j for j in self._buffer if j.id not in taken]
            return batch

    def _fill(self, max_batch: int, max_wait_s: float, lease_s: float, block_s: float) -> None:
        if not self._group_ready:
            self._ensure_group()
        jobs = self._accept(self._autoclaim(lease_s, max_batch), redelivered=True)
        if len(jobs) < max_batch:
            block_ms = 1 if jobs else max(1, int(block_s * 1000))
            jobs += self._accept(self._read(max_batch - len(jobs), block_ms))
        if jobs and max_wait_s > 0:
            deadline = min(j.created_at for j in jobs) + max_wait_s
            while len(jobs) < max_batch and (left := deadline - time.time()) > 0:
                more = self._read(max_batch - len(jobs), max(1, int(left * 1000)))
                if not more:
                    break
                jobs += self._accept(more)
        jobs.sort(key=lambda j: j.created_at)
        self._buffer.extend(jobs)

    def _read(self, count: int, block_ms: int) -> list[tuple[bytes, dict]]:
        block_ms = min(block_ms, int(MAX_BLOCK_S * 1000))
        try:
            resp = self.r.xreadgroup(
                GROUP, self.worker, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self._ensure_group()  # Redis lost the stream (restarted without persistence)
            return []
        return [(mid, fields) for _, entries in (resp or []) for mid, fields in entries]

    def _autoclaim(self, lease_s: float, count: int) -> list[tuple[bytes, dict]]:
        try:
            resp = self.r.xautoclaim(
                self.stream,
                GROUP,
                self.worker,
                min_idle_time=int(lease_s * 1000),
                start_id="0-0",
                count=count,
            )
        except ResponseError as err:
            if "NOGROUP" not in str(err):
                raise
            self._ensure_group()
            return []
        entries = [(mid, fields) for mid, fields in resp[1] if fields]
        if entries:
            self.r.incrby(f"{self.p}:redeliveries", len(entries))
        return entries

    def _accept(self, entries: list[tuple[bytes, dict]], redelivered: bool = False) -> list[Job]:
        jobs = []
        for mid, fields in entries:
            job_id = fields[b"id"].decode()
            msg = mid.decode()
            keys = [self._k("job", job_id), self.queued]
            attempts = self._claim(
                keys=keys, args=[self.max_attempts, self.worker, msg, repr(time.time()), job_id]
            )
            if attempts == -1:  # cancelled, expired or already finished
                self._ack(msg)
            elif attempts == -2:
                self._dead_letter(msg, job_id)
            elif job := self.get(job_id):
                jobs.append(job)
        return jobs

    def _ack(self, msg: str | None) -> None:
        if msg:
            with self.r.pipeline(transaction=True) as pipe:
                pipe.xack(self.stream, GROUP, msg)
                pipe.xdel(self.stream, msg)
                pipe.execute()

    def _dead_letter(self, msg: str, job_id: str) -> None:
        job = self.get(job_id)
        attempts = job.attempts if job else self.max_attempts
        reason = f"gave up after {attempts} attempts (dead-lettered)"
        self.r.xadd(
            self.dead,
            {
                "id": job_id,
                "task": job.task if job else "",
                "reason": reason,
                "last_worker": (job.worker or "") if job else "",
            },
        )
        self._set_final(
            job_id, "failed", reason, ErrorType.DEAD_LETTER, allowed="queued in_progress"
        )
        self._ack(msg)

    def renew(self, job_ids, lease_s):
        """Reset the idle time of this worker's entries for these jobs and its buffered ones."""
        with self._lock:
            ids = set(job_ids) | {j.id for j in self._buffer}
        msgs = []
        for job_id in ids:
            msg = self.r.hget(self._k("job", job_id), "msg")
            if msg:
                msgs.append(msg)
        if msgs:
            self.r.xclaim(
                self.stream, GROUP, self.worker, min_idle_time=0, message_ids=msgs, justid=True
            )

    # --------------------------------------------------------------------------- finishing
    def _set_final(
        self,
        job_id: str,
        status: str,
        error: str | None = None,
        error_type: ErrorType | None = None,
        result_format: str | None = None,
        allowed: str = "in_progress",
    ) -> str | None:
        keys = [
            self._k("job", job_id),
            self.queued,
            self._k("input", job_id),
            self._k("preview", job_id),
            self._k("result", job_id),
            self.webhooks,
        ]
        args = [
            status,
            repr(time.time()),
            error or "",
            result_format or "",
            self.ttl,
            job_id,
            allowed,
            error_type.value if error_type else "",
        ]
        old = self._finish_script(keys=keys, args=args)
        return old.decode() if old else None

    def _finish(self, job_id: str, status: str, **kwargs) -> None:
        msg = self.r.hget(self._k("job", job_id), "msg")
        self._set_final(job_id, status, **kwargs)
        self._ack(msg.decode() if msg else None)  # only now: the result is stored

    def complete(self, job_id, result_format):
        self._finish(job_id, "completed", result_format=result_format)

    def fail(self, job_id, error, error_type=ErrorType.INTERNAL):
        self._finish(job_id, "failed", error=error, error_type=error_type)

    def release(self, job_ids):
        """Give claimed jobs back (shutdown): queued again at once, the attempt not counted."""
        with self._lock:
            ids = list(job_ids) + [j.id for j in self._buffer]
            self._buffer = []
        for job_id in ids:
            msg = self.r.hget(self._k("job", job_id), "msg")
            if self._release(keys=[self._k("job", job_id), self.queued], args=[job_id]):
                self._ack(msg.decode() if msg else None)
                self.r.xadd(self.stream, {"id": job_id})

    def cancel(self, job_id, error_type=ErrorType.CANCELLED):
        self._set_final(job_id, "cancelled", error_type=error_type, allowed="queued in_progress")
        return self.get(job_id)

    # ------------------------------------------------------------------------------- data
    def set_progress(self, job_id, step, num_steps):
        self.r.hset(
            self._k("job", job_id),
            mapping={
                "progress": round(100 * step / max(num_steps, 1), 1),
                "step": step,
                "num_steps": num_steps,
            },
        )

    def set_preview(self, job_id, png):
        self.r.set(self._k("preview", job_id), png, ex=self.ttl)

    def get_preview(self, job_id):
        return self.r.get(self._k("preview", job_id))

    def put_input(self, job_id, data):
        self.r.set(self._k("input", job_id), data, ex=self.ttl)

    def get_input(self, job_id):
        return self.r.get(self._k("input", job_id))

    def delete_input(self, job_id):
        self.r.delete(self._k("input", job_id))

    def put_result(self, job_id, data):
        self.r.set(self._k("result", job_id), data, ex=self.ttl)

    def get_result(self, job_id):
        return self.r.get(self._k("result", job_id))

    # ------------------------------------------------------------------------------ state
    def depth(self):
        return int(self.r.zcard(self.queued))

    def durability_problem(self) -> str | None:
        """Why queued jobs would not survive a restart of this Redis (no AOF and no RDB
        snapshots), or None. Servers that refuse CONFIG (managed Redis) are trusted."""
        try:
            raw = self.r.config_get("appendonly") | self.r.config_get("save")
        except ResponseError:
            return None
        config = {_text(k): _text(v) for k, v in raw.items()}
        if config.get("appendonly", "").lower() == "yes" or config.get("save"):
            return None
        return "Redis has no persistence (appendonly no, save ''): a restart loses every queued job"

    def counts(self) -> dict[str, int]:
        """Jobs by status, of those Redis still holds (finished ones expire)."""
        out = dict.fromkeys(STATUSES, 0)
        for key in self.r.scan_iter(match=f"{self.p}:job:*", count=500):
            status = self.r.hget(key, "status")
            if status and status.decode() in out:
                out[status.decode()] += 1
        return out

    def expire(self, before):
        """Redis expires finished jobs, results and keys itself (time-to-live); this takes the
        ids of expired jobs that arrived before `before` out of the owners' indexes."""
        gone: list[str] = []
        for index in self.r.scan_iter(match=f"{self.p}:owner:*", count=500):
            ids = self.r.zrangebyscore(index, "-inf", before)
            if not ids:
                continue
            with self.r.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self._k("job", job_id.decode()))
                alive = pipe.execute()
            dead = [job_id for job_id, ok in zip(ids, alive, strict=True) if not ok]
            if dead:
                self.r.zrem(index, *dead)
                gone += [d.decode() for d in dead]
        return gone

    def stats(self) -> dict[str, int]:
        """Depth, consumer-group lag and pending entries, redeliveries, dead letters."""
        out: dict[str, Any] = {"depth": self.depth(), "pending": 0, "lag": 0}
        try:
            for group in self.r.xinfo_groups(self.stream):
                if group["name"] in (GROUP, GROUP.encode()):
                    out["pending"] = int(group.get("pending") or 0)
                    out["lag"] = int(group.get("lag") or 0)
        except ResponseError:  # no stream yet
            pass
        out["redeliveries"] = int(self.r.get(f"{self.p}:redeliveries") or 0)
        out["dead_letters"] = int(self.r.xlen(self.dead))
        return out

    def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The latest dead-lettered jobs, newest first."""
        rows = self.r.xrevrange(self.dead, count=count)
        return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


def _typed_outage(method):
    """Redis connection failures (after the bounded retries) as QueueUnavailable."""

    @functools.wraps(method)
    def call(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError) as err:
            raise QueueUnavailable("the job queue is unreachable") from err

    return call


for _name in (
    "enqueue",
    "get",
    "find",
    "list_jobs",
    "take_notifications",
    "return_notifications",
    "claim_batch",
    "renew",
    "set_progress",
    "set_preview",
    "get_preview",
    "put_input",
    "get_input",
    "delete_input",
    "put_result",
    "get_result",
    "complete",
    "fail",
    "release",
    "cancel",
    "depth",
    "counts",
    "expire",
    "stats",
    "dead_letters",
):
    setattr(RedisQueue, _name, _typed_outage(getattr(RedisQueue, _name)))
