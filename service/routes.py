"""HTTP routes: validate, enqueue, wait or answer, map errors. No model code here.

No `from __future__ import annotations`: FastAPI reads the annotations of routes built inside
functions (their bounds come from the settings), which closures only resolve when evaluated.
"""

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import inspect
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from media import (
    FORMATS,
    MAX_STEP,
    BeyondFrameLimit,
    DecodedVideo,
    DecodeLimits,
    DecodeTimeout,
    MediaError,
    VideoTooLarge,
    decode_video,
    playable_fps,
)
from media.npz import write_npz
from models.options import DecodeOptions
from models.tasks import TASK_CODES, TASKS, Task
from service.errors import ERROR_RESPONSES, ApiError
from service.jobs import ANONYMOUS, ErrorType, Job, JobSpec
from service.queue import IdempotencyConflict, QueueFull, QueueUnavailable, UnknownCursor
from service.schemas import JobList, JobOut, TaskList
from service.validation import InvalidRequest, check_fields, check_frames, check_start
from service.webhooks import MAX_URL_LENGTH, Allowlist, check_url

FORMAT_PATTERN = "^(" + "|".join(FORMATS) + ")$"
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,200}$")  # printable ASCII, no spaces
# How a failed job's error type answers a synchronous request.
STATUS_FOR_ERROR = {
    ErrorType.INVALID_INPUT: 422,
    ErrorType.INTERNAL: 503,
    ErrorType.DEAD_LETTER: 503,
    ErrorType.TIMEOUT: 503,
    ErrorType.CANCELLED: 409,
}
RETRY = {"Retry-After": "5"}
Responses = dict[int | str, dict[str, Any]]  # FastAPI's `responses=`


def state(request: Request):
    return request.app.state.magvit


def owner(request: Request) -> str:
    """The key id of the caller's API key (set by the authentication middleware)."""
    return getattr(request.state, "owner", ANONYMOUS)


async def _q(fn, *args):
    """A queue call, off the event loop; an unreachable queue answers 503."""
    try:
        return await run_in_threadpool(fn, *args)
    except QueueUnavailable:
        raise ApiError(503, "the job queue is unavailable; retry later", headers=RETRY) from None


# -------------------------------------------------------------------------- form fields
@dataclass(frozen=True)
class GenerationForm:
    """The generation fields of a request, as the client sent them (seed may be absent)."""

    seed: int | None
    class_id: int | None
    format: str
    options: DecodeOptions
    frames: int | None = None  # the length of the video (fp, cfp); None: the model's window
    start: int | None = None  # the first condition frame (fp, cfp); None: the clip's last
    frame_step: int | None = None  # one frame of the upload in how many; None: the model's rate

    def digest(self, task: Task, preview: bool, upload: bytes | None, **more: Any) -> str:
        """What makes two requests the same request (for idempotency keys). Fields added since
        the first version (and `more`) count only when given, so that requests made before
        them keep their digests."""
        h = hashlib.sha256()
        fields: list[Any] = [task.code, self.seed, self.class_id, self.format, preview]
        fields.append(dataclasses.asdict(self.options))
        later = {"frames": self.frames, "start": self.start, "frame_step": self.frame_step}
        later |= more
        fields += [[name, value] for name, value in later.items() if value is not None]
        h.update(json.dumps(fields, sort_keys=True).encode())
        h.update(hashlib.sha256(upload).digest() if upload is not None else b"-")
        return h.hexdigest()


# Form fields that every task takes; `steps` is bounded per server, so it is made below.
Seed = Annotated[int | None, Form(ge=0, le=2**31 - 1, description="random seed")]
Temperature = Annotated[float, Form(ge=0, le=10)]
ChoiceTemperature = Annotated[float, Form(ge=0, le=1000)]
GuidanceScale = Annotated[float, Form(ge=0, le=50)]
ClassId = Annotated[int | None, Form(ge=0, description="class (cg, cfp)")]
Format = Annotated[str, Form(pattern=FORMAT_PATTERN)]
# The mask schedules of models.schedule by name (cosine, exp, linear, log, uniform, powP).
Schedule = Annotated[
    str,
    Form(
        pattern=r"^(cosine|exp|linear|log|uniform|pow[0-9]+(\.[0-9]+)?)$",
        description="mask schedule: cosine (default), exp, linear, log, uniform or powP (pow2)",
    ),
]
TopK = Annotated[int | None, Form(ge=1, le=65536, description="sample among the k likeliest")]
TopP = Annotated[float | None, Form(gt=0, le=1, description="nucleus sampling mass")]
Start = Annotated[
    int | None,
    Form(
        ge=0,
        le=1_000_000,
        description="fp, cfp: the first frame of the condition (default: the clip's last frames)",
    ),
]
FrameStep = Annotated[
    int | None,
    Form(
        ge=1,
        le=MAX_STEP,
        description="tasks on a video: read one frame of the upload in this many (default: the "
        "step that brings the upload's frame rate nearest the model's, 1 when the model's is "
        "unknown)",
    ),
]
CLASS_FIELDS = ("guidance_scale", "class_id")
FRAME_FIELDS = ("frames", "start")
VIDEO_FIELDS = ("frame_step",)


def generation_form(
    max_steps: int,
    max_frames: int,
    with_class: bool = True,
    with_frames: bool = True,
    with_video: bool = True,
):
    """The form dependency, with `steps` and `frames` bounded by the server's maxima (also in
    OpenAPI); `class_id` and `guidance_scale` only where the task takes a class, `frames` and
    `start` only where it predicts frames, `frame_step` only where it reads a video. The fields
    are defined once, here: each dependency takes those of its task (FastAPI reads them from its
    signature)."""
    default_steps = min(12, max_steps)
    Steps = Annotated[int, Form(ge=1, le=max_steps, description="decoding steps")]
    Frames = Annotated[
        int | None,
        Form(
            ge=1,
            le=max_frames,
            description="fp, cfp: frames to make, the condition's included, by sliding the "
            "model's window (default: one window)",
        ),
    ]
    fields: list[tuple[str, Any, Any]] = [
        ("seed", Seed, None),
        ("steps", Steps, default_steps),
        ("temperature", Temperature, 1.0),
        ("choice_temperature", ChoiceTemperature, 4.5),
        ("guidance_scale", GuidanceScale, 0.0),
        ("class_id", ClassId, None),
        ("format", Format, "mp4"),
        ("schedule", Schedule, "cosine"),
        ("top_k", TopK, None),
        ("top_p", TopP, None),
        ("frames", Frames, None),
        ("start", Start, None),
        ("frame_step", FrameStep, None),
    ]
    dropped = (
        (() if with_class else CLASS_FIELDS)
        + (() if with_frames else FRAME_FIELDS)
        + (() if with_video else VIDEO_FIELDS)
    )
    taken = [(name, kind, default) for name, kind, default in fields if name not in dropped]
    defaults = {name: default for name, _, default in fields}

    def parse(**given: Any) -> GenerationForm:
        v = defaults | given
        options = DecodeOptions(
            steps=v["steps"],
            temperature=v["temperature"],
            choice_temperature=v["choice_temperature"],
            guidance_scale=v["guidance_scale"],
            schedule=v["schedule"],
            top_k=v["top_k"],
            top_p=v["top_p"],
        )
        return GenerationForm(
            v["seed"],
            v["class_id"],
            v["format"],
            options,
            v["frames"],
            v["start"],
            v["frame_step"],
        )

    parse.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=kind
            )
            for name, kind, default in taken
        ],
        return_annotation=GenerationForm,
    )
    return parse


def _refuse_if_unavailable(st) -> None:
    if st.load_failed:
        raise ApiError(503, "the model failed to load; this server takes no work", headers=RETRY)
    if st.scheduler is not None and st.scheduler.stopping:
        raise ApiError(503, "the server is shutting down; retry later", headers=RETRY)


async def _submit(
    request: Request,
    task: Task,
    form: GenerationForm,
    video: UploadFile | None,
    idempotency_key: str | None,
    preview: bool = False,
    webhook: str | None = None,
) -> tuple[Job, bool]:
    st = state(request)
    _refuse_if_unavailable(st)
    if idempotency_key is not None and not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ApiError(400, "Idempotency-Key must be 1 to 200 printable characters, no spaces")
    try:
        if webhook is not None:
            check_url(webhook, Allowlist.parse(st.settings.webhook_hosts))
        check_fields(
            st.config,
            task,
            form.class_id,
            video is not None,
            form.frames,
            form.start,
            st.settings.max_output_frames,
            form.frame_step,
        )
    except InvalidRequest as err:
        raise ApiError(err.status, str(err)) from None
    upload = await video.read() if video is not None else None
    me = owner(request)
    fingerprint = form.digest(task, preview, upload, webhook=webhook)
    if idempotency_key:
        existing = await _q(st.queue.find, me, idempotency_key)
        if existing is not None:
            if existing.spec.fingerprint != fingerprint:
                raise _conflict()
            return existing, False
    if await _q(st.queue.depth) >= st.settings.max_queue:  # before any decoding
        raise ApiError(429, "the queue is full; retry later", headers=RETRY)
    job_id = uuid.uuid4().hex
    frame_step, frame_rate = None, playable_fps(st.config.playback_rate)
    if upload is not None:
        decoded = await _decode(request, upload, task, form.start, form.frame_step)
        frame_step, frame_rate = decoded.step, playable_fps(decoded.sampled_fps)
        await _q(st.queue.put_input, job_id, write_npz(decoded.frames))
    spec = JobSpec(
        task=task.code,
        seed=form.seed if form.seed is not None else uuid.uuid4().int % 2**31,
        class_id=form.class_id,
        format=form.format,
        options=form.options,
        preview=preview,
        owner=me,
        fingerprint=fingerprint,
        frames=form.frames,
        webhook=webhook,
        frame_step=frame_step,
        frame_rate=frame_rate,
    )
    created = False
    try:
        job, created = await _q(
            st.queue.enqueue, spec, idempotency_key, st.settings.max_queue, job_id
        )
    except QueueFull:
        raise ApiError(429, "the queue is full; retry later", headers=RETRY) from None
    except IdempotencyConflict:
        raise _conflict() from None
    finally:
        if upload is not None and not created:
            await _q(st.queue.delete_input, job_id)
    st.scheduler.notify()
    return job, created


def _conflict() -> ApiError:
    return ApiError(422, "this Idempotency-Key was used for a different request")


async def _decode(
    request: Request, data: bytes, task: Task, start: int | None, step: int | None
) -> DecodedVideo:
    """The frames of the upload that the task reads, checked: frame prediction (fp, cfp) its
    condition, from `start` or the clip's last frames; other tasks its first frames. One frame
    in `step`, by default the step that brings the upload's declared rate nearest the
    model's (`media.frame_step`)."""
    st = state(request)
    s = st.settings
    config = st.config
    limits = DecodeLimits(
        max_bytes=s.max_upload_bytes,
        max_pixels=s.max_video_pixels,
        max_frames=s.max_video_frames,
        max_seconds=s.max_video_seconds,
        timeout_s=s.decode_timeout_s,
    )
    if task.conditions_on_frames:
        count, first = config.cond_frames, start  # None: the last frames
    else:
        count, first = config.num_frames, 0
    begin = time.perf_counter()
    try:
        decoded = await run_in_threadpool(
            decode_video, data, limits, count, first, step, config.frame_rate
        )
    except BeyondFrameLimit as err:  # only frames from a `start` can lie past the limit
        raise ApiError(
            422,
            f"start must be at most {err.last_start}: frames past the first "
            f"{limits.max_frames} are not decoded",
        ) from None
    except VideoTooLarge as err:
        raise ApiError(413, str(err)) from None
    except DecodeTimeout as err:
        raise ApiError(422, str(err)) from None
    except MediaError as err:
        raise ApiError(415, str(err)) from None
    finally:
        st.metrics.decode.observe(time.perf_counter() - begin)
    kept = decoded.frames.shape[0]
    try:
        if start is not None:
            check_start(config, task, start, kept, decoded.length, decoded.step)
        check_frames(config, task, kept, decoded.step, decoded.length)
    except InvalidRequest as err:
        raise ApiError(err.status, str(err)) from None
    return decoded


def _job_out(request: Request, job: Job) -> JobOut:
    return JobOut.from_job(job, str(request.url_for("get_job", job_id=job.id)))


async def _get_job(request: Request, job_id: str) -> Job:
    """The caller's job; another key's job is as unknown as a job that never was."""
    job = await _q(state(request).queue.get, job_id)
    if job is None or job.spec.owner != owner(request):
        raise ApiError(404, f"no job {job_id!r}")
    return job


async def _result(request: Request, job: Job) -> Response:
    data = await _q(state(request).queue.get_result, job.id)
    if data is None:
        raise ApiError(404, "the result has expired")
    headers = {"X-Job-Id": job.id, "X-Seed": str(job.spec.seed)}
    if job.started_at and job.finished_at:
        headers["X-Queue-Wait-Seconds"] = f"{job.started_at - job.created_at:.3f}"
        headers["X-Inference-Seconds"] = f"{job.finished_at - job.started_at:.3f}"
    headers["X-Frame-Rate"] = f"{job.spec.frame_rate:g}"
    if job.spec.frame_step is not None:
        headers["X-Frame-Step"] = str(job.spec.frame_step)
    return Response(data, media_type=FORMATS[job.result_format or job.spec.format], headers=headers)


def _failure(job: Job) -> ApiError:
    error_type = job.error_type or ErrorType.INTERNAL
    status = STATUS_FOR_ERROR[error_type]
    message = job.error or f"the job was {job.status}"
    return ApiError(status, message, headers=RETRY if status == 503 else None)


async def _wait(st, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(st.scheduler.live.changed.wait(), timeout)


async def _await_job(request: Request, job: Job) -> Job:
    """Wait for a synchronous request's job. Its job is cancelled when the client goes away,
    when the request times out and when the server stops."""
    st = state(request)
    deadline = time.monotonic() + st.settings.request_timeout_s
    while not (job := await _q(st.queue.get, job.id)).done:
        reason, why = None, ErrorType.CANCELLED
        if time.monotonic() > deadline:
            reason, why = "the request timed out in the queue; retry later", ErrorType.TIMEOUT
        elif st.scheduler.stopping:
            reason = "the server is shutting down; retry later"
        elif await request.is_disconnected():
            reason = "the client went away"
        if reason is not None:
            await _q(st.queue.cancel, job.id, why)
            st.scheduler.live.touch()
            raise ApiError(503, reason, headers={"Retry-After": "10"})
        # This process's scheduler wakes the waiters whenever a job moves; jobs that other
        # processes run are seen by polling, often where this one has no engine.
        await _wait(st, 0.05 if st.scheduler.engine is None else 0.5)
    return job


# -------------------------------------------------------------------------------- routes
def task_router(task: Task, parse_form) -> APIRouter:
    """One documented operation per task: only the fields that task takes."""
    router = APIRouter()
    code = task.code
    summary = f"{task.name} ({code})"
    description = (
        f"{task.description} Synchronous: answers with the generated video "
        f"(format by the `format` field)."
    )

    async def run(request: Request, form: GenerationForm, video: UploadFile | None):
        st = state(request)
        job, _ = await _submit(request, task, form, video, None)
        job = await _await_job(request, job)
        st.metrics.requests.labels(code, "200" if job.status == "completed" else "error").inc()
        if job.status == "completed":
            return await _result(request, job)
        raise _failure(job)

    codes = [400, 401, 404, 409, 422, 429, 503] + ([413, 415] if task.needs_video else [])
    responses: Responses = {
        200: {"content": {m: {} for m in FORMATS.values()}, "description": "the generated video"}
    }
    responses |= {c: ERROR_RESPONSES[c] for c in sorted(codes)}
    route = router.post(
        f"/v1/tasks/{code}",
        operation_id=f"run_{code}",
        summary=summary,
        description=description,
        response_class=Response,
        tags=["tasks"],
        responses=responses,
    )
    if task.needs_video:

        @route
        async def with_video(
            request: Request,
            video: Annotated[UploadFile, File(description="input video")],
            form: Annotated[GenerationForm, Depends(parse_form)],
        ):
            return await run(request, form, video)
    else:

        @route
        async def without_video(
            request: Request, form: Annotated[GenerationForm, Depends(parse_form)]
        ):
            return await run(request, form, None)

    return router


def jobs_router(parse_form) -> APIRouter:
    jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    read: Responses = {c: ERROR_RESPONSES[c] for c in (401, 404, 422, 503)}
    created: Responses = {200: {"model": JobOut, "description": "a known Idempotency-Key's job"}}
    created |= {c: ERROR_RESPONSES[c] for c in (400, 401, 404, 413, 415, 422, 429, 503)}
    video: Responses = {200: {"content": {m: {} for m in FORMATS.values()}}}
    events: Responses = {200: {"content": {"text/event-stream": {}}}}

    @jobs.post(
        "",
        status_code=202,
        response_model=JobOut,
        summary="create a job",
        responses=created,
    )
    async def create_job(
        request: Request,
        task: Annotated[str, Form(pattern="^(" + "|".join(TASK_CODES) + ")$")],
        form: Annotated[GenerationForm, Depends(parse_form)],
        video: Annotated[UploadFile | None, File()] = None,
        preview: Annotated[bool, Form(description="preview frames in the event stream")] = False,
        webhook: Annotated[
            str | None,
            Form(
                min_length=1,
                max_length=MAX_URL_LENGTH,
                description="a URL on an allowlisted host: the job's final state is POSTed "
                "to it, signed (X-Magvit-Signature)",
            ),
        ] = None,
        idempotency_key: Annotated[str | None, Header()] = None,
    ):
        job, created = await _submit(
            request, TASKS[task], form, video, idempotency_key, preview, webhook
        )
        out = _job_out(request, job)
        state(request).metrics.requests.labels(task, "202").inc()
        return Response(
            out.model_dump_json(),
            status_code=202 if created else 200,
            media_type="application/json",
            headers={"Location": out.url},
        )

    @jobs.get(
        "",
        response_model=JobList,
        summary="the caller's jobs, newest first",
        responses={c: ERROR_RESPONSES[c] for c in (401, 422, 503)},
    )
    async def list_jobs(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
        after: Annotated[
            str | None,
            Query(min_length=1, max_length=200, description="the previous page's `next`"),
        ] = None,
        status: Annotated[
            Literal["queued", "in_progress", "completed", "failed", "cancelled"] | None,
            Query(description="only jobs in this status"),
        ] = None,
    ):
        try:
            page = await _q(state(request).queue.list_jobs, owner(request), limit, after, status)
        except UnknownCursor:
            raise ApiError(422, f"after: {after!r} is not one of your jobs (or expired)") from None
        return JobList(items=[_job_out(request, job) for job in page.jobs], next=page.next)

    @jobs.get(
        "/{job_id}",
        response_model=JobOut,
        summary="a job's status",
        name="get_job",
        responses=read,
    )
    async def get_job(request: Request, job_id: str):
        return _job_out(request, await _get_job(request, job_id))

    @jobs.get(
        "/{job_id}/result",
        response_class=Response,
        summary="a finished job's video",
        responses=video | read | {409: ERROR_RESPONSES[409]},
    )
    async def get_result(request: Request, job_id: str):
        job = await _get_job(request, job_id)
        if job.status != "completed":
            raise ApiError(
                409, f"the job is {job.status}" + (f": {job.error}" if job.error else "")
            )
        return await _result(request, job)

    @jobs.delete(
        "/{job_id}",
        response_model=JobOut,
        summary="cancel a job",
        responses=read | {409: ERROR_RESPONSES[409]},
    )
    async def cancel_job(request: Request, job_id: str):
        job = await _get_job(request, job_id)
        if job.done:
            raise ApiError(409, f"the job is already {job.status}")
        job = await _q(state(request).queue.cancel, job_id)
        state(request).scheduler.live.touch()
        return _job_out(request, job)

    @jobs.get(
        "/{job_id}/events",
        summary="server-sent progress events",
        response_class=StreamingResponse,
        responses=events | read,
    )
    async def job_events(request: Request, job_id: str, preview: bool = False):
        await _get_job(request, job_id)
        st = state(request)

        async def stream():
            last: Any = None
            sent_preview = None
            while True:
                try:
                    job = await _q(st.queue.get, job_id)
                except ApiError:
                    return  # the queue went away: the client reconnects
                if job is None:
                    return
                step = (job.step, job.num_steps) if job.num_steps else None
                snapshot = (job.status, job.progress, step)
                png = await _q(st.queue.get_preview, job_id) if preview and not job.done else None
                if snapshot != last or (png is not None and png != sent_preview):
                    data: dict[str, Any] = {
                        "id": job.id,
                        "status": job.status,
                        "progress": job.progress,
                    }
                    if step:
                        data["step"], data["num_steps"] = step
                    if png is not None and png != sent_preview:
                        data["preview"] = "data:image/png;base64," + base64.b64encode(png).decode()
                        sent_preview = png
                    kind = "status" if job.done else "progress"
                    yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                    last = snapshot
                if job.done or st.scheduler.stopping or await request.is_disconnected():
                    return
                await _wait(st, 0.25)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    return jobs


tasks_meta = APIRouter()


@tasks_meta.get(
    "/v1/tasks",
    response_model=TaskList,
    tags=["meta"],
    summary="tasks and video shape",
    responses={401: ERROR_RESPONSES[401]},
)
async def list_tasks(request: Request):
    st = state(request)
    return TaskList.build(st.config, st.settings.max_output_frames)


meta = APIRouter()


@meta.get("/healthz", tags=["meta"], summary="liveness")
async def healthz():
    return {"status": "ok"}


@meta.get(
    "/readyz",
    tags=["meta"],
    summary="readiness: the model is loaded and warm, the queue reachable",
    responses={503: ERROR_RESPONSES[503]},
)
async def readyz(request: Request):
    st = state(request)
    if not st.ready or st.scheduler is None or st.scheduler.stopping:
        raise ApiError(503, st.not_ready_reason or "shutting down", headers=RETRY)
    await _q(st.queue.depth)
    return {"status": "ready"}


@meta.get("/metrics", tags=["meta"], summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    st = state(request)
    with contextlib.suppress(ApiError):  # the queue gauges keep their last values
        st.metrics.observe_queue(await _q(st.queue.stats))
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, max_steps: int, max_frames: int) -> None:
    """Authentication is the middleware's (before any body is read), not the routes'."""
    for code in TASK_CODES:
        task = TASKS[code]
        form = generation_form(
            max_steps, max_frames, task.needs_class, task.conditions_on_frames, task.needs_video
        )
        app.include_router(task_router(task, form))
    app.include_router(jobs_router(generation_form(max_steps, max_frames)))
    app.include_router(tasks_meta)
    app.include_router(meta)
