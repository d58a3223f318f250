"""API errors: every failure answers {"error": {"type", "message"}} with a 4xx (or 503)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

_TYPES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media",
    422: "invalid_input",
    429: "queue_full",
    503: "unavailable",
}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """Every error answer's body."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "a malformed request (a missing or unwanted upload, a bad Idempotency-Key)",
    401: "no valid API key",
    404: "no such job (or another key's), or a task the model does not serve",
    408: "the request body did not arrive in time",
    409: "the job is not in a state that allows this",
    413: "the upload or its video is too large",
    415: "the upload is not a video of a supported container",
    422: "a field is invalid, or an Idempotency-Key was used for another request",
    429: "the queue is full (see Retry-After)",
    503: "not ready, shutting down, the queue is unreachable, or the job could not run",
}
# For the OpenAPI document: `responses=` entries of the routes.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in _DESCRIPTIONS.items()
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_ or _TYPES.get(status, "error")
        self.message = message
        self.headers = headers


def error_response(status: int, message: str, type_: str | None = None, headers=None):
    body = {"error": {"type": type_ or _TYPES.get(status, "error"), "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, err: ApiError):
        return error_response(err.status, err.message, err.type, err.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError):
        parts = []
        for e in err.errors():
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
        return error_response(422, "; ".join(parts) or "invalid request", "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException):
        return error_response(err.status_code, str(err.detail), headers=err.headers)
