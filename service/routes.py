"""HTTP routes: validate, enqueue, wait or answer, map errors. No model code here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from media import FORMATS, DecodeLimits, DecodeTimeout, MediaError, VideoTooLarge, decode_video
from media.npz import write_npz
from models.tasks import TASK_CODES, TASKS
from service.errors import ApiError
from service.queue import Job, QueueFull, batch_key
from service.schemas import GenerationParams, JobOut, TaskList

FORMAT_PATTERN = "^(" + "|".join(FORMATS) + ")$"


def state(request: Request):
    return request.app.state.magvit


# -------------------------------------------------------------------------- form fields
def generation_params(
    request: Request,
    seed: Annotated[int | None, Form(ge=0, le=2**31 - 1, description="random seed")] = None,
    steps: Annotated[int, Form(ge=1, le=256, description="decoding steps")] = 12,
    temperature: Annotated[float, Form(ge=0, le=10)] = 1.0,
    choice_temperature: Annotated[float, Form(ge=0, le=1000)] = 4.5,
    guidance_scale: Annotated[float, Form(ge=0, le=50)] = 0.0,
    class_id: Annotated[int | None, Form(ge=0, description="class (cg, cfp)")] = None,
    format: Annotated[str, Form(pattern=FORMAT_PATTERN)] = "mp4",
) -> GenerationParams:
    s = state(request).settings
    if steps > s.max_steps:
        raise ApiError(422, f"steps must be at most {s.max_steps}")
    return GenerationParams(
        seed=seed if seed is not None else uuid.uuid4().int % 2**31,
        steps=steps,
        temperature=temperature,
        choice_temperature=choice_temperature,
        guidance_scale=guidance_scale,
        class_id=class_id,
        format=format,
    )


async def _submit(
    request: Request,
    code: str,
    params: GenerationParams,
    video: UploadFile | None,
    idempotency_key: str | None,
    preview: bool = False,
) -> tuple[Job, bool]:
    st = state(request)
    task = TASKS[code]
    config = st.config
    if code not in config.tasks:
        raise ApiError(404, f"this model does not serve task {code!r}")
    if idempotency_key:
        existing = st.queue.find(idempotency_key)
        if existing:
            return existing, False
    if task.needs_class:
        if params.class_id is None:
            raise ApiError(422, f"task {code!r} needs class_id")
        if params.class_id >= config.num_classes:
            raise ApiError(422, f"class_id must be in [0, {config.num_classes - 1}]")
    frames = None
    if task.needs_video:
        if video is None:
            raise ApiError(400, f"task {code!r} needs a video file in the 'video' field")
        needed = task.num_input_frames(config.num_frames, config.cond_frames)
        frames = await _decode(request, video, needed)
    elif video is not None:
        raise ApiError(400, f"task {code!r} takes no video")
    if st.queue.depth() >= st.settings.max_queue:
        raise ApiError(429, "the queue is full; retry later", headers={"Retry-After": "5"})
    job_id = uuid.uuid4().hex
    if frames is not None:
        await run_in_threadpool(st.queue.put_input, job_id, write_npz(frames))
    body = params.model_dump() | {"preview": preview}
    try:
        job, created = st.queue.enqueue(
            code, body, batch_key(code, body), idempotency_key, st.settings.max_queue, job_id
        )
    except QueueFull:
        raise ApiError(
            429, "the queue is full; retry later", headers={"Retry-After": "5"}
        ) from None
    if not created and frames is not None:
        st.queue.delete_input(job_id)
    st.scheduler.notify()
    return job, created


async def _decode(request: Request, video: UploadFile, needed: int):
    st = state(request)
    s = st.settings
    limits = DecodeLimits(
        max_bytes=s.max_upload_bytes,
        max_pixels=s.max_video_pixels,
        max_frames=s.max_video_frames,
        max_seconds=s.max_video_seconds,
        timeout_s=s.decode_timeout_s,
    )
    data = await video.read()
    start = time.perf_counter()
    try:
        decoded = await run_in_threadpool(decode_video, data, limits, st.config.num_frames)
    except VideoTooLarge as err:
        raise ApiError(413, str(err)) from None
    except DecodeTimeout as err:
        raise ApiError(422, str(err)) from None
    except MediaError as err:
        raise ApiError(415, str(err)) from None
    finally:
        st.metrics.decode.observe(time.perf_counter() - start)
    if decoded.frames.shape[0] < max(needed, 1):
        raise ApiError(
            422, f"the task needs at least {needed} frames; the video has {decoded.frames.shape[0]}"
        )
    return decoded.frames


def _job_out(request: Request, job: Job) -> JobOut:
    return JobOut.from_job(job, str(request.url_for("get_job", job_id=job.id)))


def _get_job(request: Request, job_id: str) -> Job:
    job = state(request).queue.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r}")
    return job


def _result(request: Request, job: Job) -> Response:
    data = state(request).queue.get_result(job.id)
    if data is None:
        raise ApiError(404, "the result has expired")
    headers = {"X-Job-Id": job.id, "X-Seed": str(job.params["seed"])}
    if job.started_at and job.finished_at:
        headers["X-Queue-Wait-Seconds"] = f"{job.started_at - job.created_at:.3f}"
        headers["X-Inference-Seconds"] = f"{job.finished_at - job.started_at:.3f}"
    return Response(data, media_type=FORMATS[job.result_format], headers=headers)


# -------------------------------------------------------------------------------- routes
def task_router(code: str) -> APIRouter:
    """One documented operation per task."""
    task = TASKS[code]
    router = APIRouter()
    summary = f"{task.name} ({code})"
    description = (
        f"{task.description} Synchronous: answers with the generated video "
        f"(format by the `format` field)."
    )

    async def run(request: Request, params: GenerationParams, video: UploadFile | None):
        st = state(request)
        job, _ = await _submit(request, code, params, video, None)
        deadline = time.monotonic() + st.settings.request_timeout_s
        while not (job := st.queue.get(job.id)).done:
            if time.monotonic() > deadline:
                st.queue.cancel(job.id)
                raise ApiError(
                    503,
                    "the request timed out in the queue; retry later",
                    headers={"Retry-After": "10"},
                )
            await _wait(st, 0.05)
        st.metrics.requests.labels(code, "200" if job.status == "completed" else "error").inc()
        if job.status == "completed":
            return _result(request, job)
        raise ApiError(
            422 if (job.error or "").startswith("invalid") else 503,
            job.error or f"the job was {job.status}",
        )

    responses = {
        200: {"content": {m: {} for m in FORMATS.values()}, "description": "the generated video"}
    }
    if task.needs_video:

        @router.post(
            f"/v1/tasks/{code}",
            operation_id=f"run_{code}",
            summary=summary,
            description=description,
            response_class=Response,
            tags=["tasks"],
            responses=responses,
        )
        async def with_video(
            request: Request,
            video: Annotated[UploadFile, File(description="input video")],
            params: Annotated[GenerationParams, Depends(generation_params)],
        ):
            return await run(request, params, video)
    else:

        @router.post(
            f"/v1/tasks/{code}",
            operation_id=f"run_{code}",
            summary=summary,
            description=description,
            response_class=Response,
            tags=["tasks"],
            responses=responses,
        )
        async def without_video(
            request: Request, params: Annotated[GenerationParams, Depends(generation_params)]
        ):
            return await run(request, params, None)

    return router


async def _wait(st, timeout: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(st.scheduler.live.changed.wait(), timeout)


jobs = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@jobs.post("", status_code=202, response_model=JobOut, summary="create a job")
async def create_job(
    request: Request,
    task: Annotated[str, Form(pattern="^(" + "|".join(TASK_CODES) + ")$")],
    params: Annotated[GenerationParams, Depends(generation_params)],
    video: Annotated[UploadFile | None, File()] = None,
    preview: Annotated[bool, Form(description="preview frames in the event stream")] = False,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
):
    job, created = await _submit(request, task, params, video, idempotency_key, preview)
    out = _job_out(request, job)
    state(request).metrics.requests.labels(task, "202").inc()
    return Response(
        out.model_dump_json(),
        status_code=202 if created else 200,
        media_type="application/json",
        headers={"Location": out.url},
    )


@jobs.get("/{job_id}", response_model=JobOut, summary="a job's status", name="get_job")
async def get_job(request: Request, job_id: str):
    return _job_out(request, _get_job(request, job_id))


@jobs.get("/{job_id}/result", response_class=Response, summary="a finished job's video")
async def get_result(request: Request, job_id: str):
    job = _get_job(request, job_id)
    if job.status != "completed":
        raise ApiError(409, f"the job is {job.status}" + (f": {job.error}" if job.error else ""))
    return _result(request, job)


@jobs.delete("/{job_id}", response_model=JobOut, summary="cancel a job")
async def cancel_job(request: Request, job_id: str):
    job = _get_job(request, job_id)
    if job.done:
        raise ApiError(409, f"the job is already {job.status}")
    job = state(request).queue.cancel(job_id)
    state(request).scheduler.live.touch()
    return _job_out(request, job)


@jobs.get(
    "/{job_id}/events", summary="server-sent progress events", response_class=StreamingResponse
)
async def job_events(request: Request, job_id: str, preview: bool = False):
    _get_job(request, job_id)
    st = state(request)

    async def stream():
        last: Any = None
        sent_preview = None
        while True:
            job = st.queue.get(job_id)
            if job is None:
                return
            step = (job.step, job.num_steps) if job.num_steps else None
            snapshot = (job.status, job.progress, step)
            if snapshot != last:
                data: dict[str, Any] = {
                    "id": job.id,
                    "status": job.status,
                    "progress": job.progress,
                }
                if step:
                    data["step"], data["num_steps"] = step
                png = st.queue.get_preview(job_id) if preview and not job.done else None
                if png is not None and png != sent_preview:
                    data["preview"] = "data:image/png;base64," + base64.b64encode(png).decode()
                    sent_preview = png
                kind = "status" if job.done else "progress"
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"
                last = snapshot
            if job.done:
                return
            if await request.is_disconnected():
                return
            await _wait(st, 0.25)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
    )


meta = APIRouter()


tasks_meta = APIRouter()


@tasks_meta.get(
    "/v1/tasks", response_model=TaskList, tags=["meta"], summary="tasks and video shape"
)
async def list_tasks(request: Request):
    return TaskList.build(state(request).config)


@meta.get("/healthz", tags=["meta"], summary="liveness")
async def healthz():
    return {"status": "ok"}


@meta.get("/readyz", tags=["meta"], summary="readiness: the model is loaded and warm")
async def readyz(request: Request):
    st = state(request)
    if not st.ready or st.scheduler.stopping:
        raise ApiError(503, st.not_ready_reason or "shutting down")
    return {"status": "ready"}


@meta.get("/metrics", tags=["meta"], summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request):
    st = state(request)
    st.metrics.observe_queue(await run_in_threadpool(st.queue.stats))
    return Response(generate_latest(st.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, auth, auth_health: bool) -> None:
    for code in TASK_CODES:
        app.include_router(task_router(code), dependencies=[Depends(auth)])
    app.include_router(jobs, dependencies=[Depends(auth)])
    app.include_router(tasks_meta, dependencies=[Depends(auth)])
    app.include_router(meta, dependencies=[Depends(auth)] if auth_health else [])
