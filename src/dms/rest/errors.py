"""The one table from error kinds to HTTP statuses, and the JSON error body every endpoint uses."""

from __future__ import annotations

import logging

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from dms.errors import DMSError, ErrorKind, InternalError

log = logging.getLogger("dms.rest")

HTTP_STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID_INPUT: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.READ_TIMEOUT: 408,
    ErrorKind.CONFLICT: 409,
    ErrorKind.TOO_LARGE: 413,
    ErrorKind.UNSUPPORTED_MEDIA: 415,
    ErrorKind.HEADERS_TOO_LARGE: 431,
    ErrorKind.INTERNAL: 500,
    ErrorKind.WORKER_DIED: 500,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.NO_STORAGE: 507,
}

_HTTP_TYPES = {404: "ResourceNotFound", 405: "MethodNotAllowed"}


def json_error(status: int, type_name: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"code": status, "type": type_name, "message": message})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(exc: DMSError) -> Response:
    status = HTTP_STATUS[exc.kind]
    retry_after_s = getattr(exc, "retry_after_s", None)  # QueueFullError, ServerBusyError
    headers = {"Retry-After": str(retry_after_s)} if retry_after_s is not None else None
    return json_error(status, exc.type_name, exc.message, headers)


async def handle_dms_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DMSError)
    return error_response(exc)


async def handle_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = exc.detail if exc.status_code != 404 else f"no endpoint {request.method} {request.url.path}"
    return json_error(exc.status_code, _HTTP_TYPES.get(exc.status_code, "HTTPError"), message)


async def handle_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(InternalError(f"internal server error ({type(exc).__name__})"))


EXCEPTION_HANDLERS = {
    DMSError: handle_dms_error,
    HTTPException: handle_http_error,
    Exception: handle_unexpected,
}
