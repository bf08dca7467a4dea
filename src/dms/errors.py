"""The one error hierarchy of DMS.

Every error carries a transport-neutral ``ErrorKind``; each transport maps kinds to its own
status codes in exactly one table (``dms.rest.errors`` for HTTP). Nothing here imports a web
framework.

    DMSError
    ├── InputError                 invalid request data (a handler may raise it)
    ├── PayloadTooLargeError       body over ``max_request_size_bytes``
    ├── HeadersTooLargeError       a request head over ``max_header_bytes`` or ``max_header_count``
    ├── UnsupportedMediaTypeError  a payload kind the server refuses to decode
    ├── ModelNotFoundError         unknown model or version
    ├── ModelAlreadyExistsError    registering a name/version twice
    ├── ArchiveError               unreadable, unsafe or inconsistent model archive
    ├── UnauthorizedError          no API key where one is required
    ├── ForbiddenError             a wrong key, or a URL or path outside what the operator allowed
    ├── QueueFullError             the model's bounded queue is full
    ├── ModelUnavailableError      no worker can serve (model failed, stopping)
    ├── ServerBusyError            the server has ``max_connections`` connections open
    ├── RequestTimeoutError        a worker overran ``response_timeout_s``
    ├── RequestReadTimeoutError    the client took longer than ``request_read_timeout_s`` to send it
    ├── WorkerDiedError            the worker process died while it held the request
    ├── InsufficientStorageError   the state folder's disk is full: the change was undone
    ├── HandlerError               the user's handler raised or broke its contract
    └── InternalError              anything else
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    INVALID_INPUT = "invalid_input"
    TOO_LARGE = "too_large"
    HEADERS_TOO_LARGE = "headers_too_large"
    NO_STORAGE = "no_storage"
    UNSUPPORTED_MEDIA = "unsupported_media"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    READ_TIMEOUT = "read_timeout"
    WORKER_DIED = "worker_died"
    INTERNAL = "internal"


class DMSError(Exception):
    """Base of every error DMS raises on purpose."""

    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type_name(self) -> str:
        return type(self).__name__


class InputError(DMSError):
    """The request's data is invalid; handlers raise this to answer 400 with the message."""

    kind = ErrorKind.INVALID_INPUT


class PayloadTooLargeError(DMSError):
    kind = ErrorKind.TOO_LARGE


class HeadersTooLargeError(DMSError):
    kind = ErrorKind.HEADERS_TOO_LARGE


class UnsupportedMediaTypeError(DMSError):
    kind = ErrorKind.UNSUPPORTED_MEDIA


class ModelNotFoundError(DMSError):
    kind = ErrorKind.NOT_FOUND


class ModelAlreadyExistsError(DMSError):
    kind = ErrorKind.CONFLICT


class ArchiveError(DMSError):
    kind = ErrorKind.INVALID_INPUT


class UnauthorizedError(DMSError):
    kind = ErrorKind.UNAUTHENTICATED


class ForbiddenError(DMSError):
    kind = ErrorKind.FORBIDDEN


class QueueFullError(DMSError):
    kind = ErrorKind.UNAVAILABLE

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailableError(DMSError):
    kind = ErrorKind.UNAVAILABLE


class ServerBusyError(DMSError):
    """A connection over ``max_connections``: refused at once, to be tried again shortly."""

    kind = ErrorKind.UNAVAILABLE
    retry_after_s = 1


class RequestTimeoutError(DMSError):
    kind = ErrorKind.TIMEOUT


class RequestReadTimeoutError(DMSError):
    """The request stopped arriving: the client sent it too slowly (``request_read_timeout_s``)."""

    kind = ErrorKind.READ_TIMEOUT


class WorkerDiedError(DMSError):
    kind = ErrorKind.WORKER_DIED


class BatchNotStartedError(WorkerDiedError):
    """A worker ended before it took up a batch that was waiting behind another: the batch can go to another
    worker (the batcher queues it again), so a client sees this only if none is left to take it."""


class InsufficientStorageError(DMSError):
    """A change could not be written to the state folder (its disk is full): it was undone."""

    kind = ErrorKind.NO_STORAGE


class HandlerError(DMSError):
    kind = ErrorKind.INTERNAL


class InternalError(DMSError):
    kind = ErrorKind.INTERNAL


class WorkersFailedError(DMSError):
    """A model's workers failed to start where the request waited for them (a synchronous scale)."""

    kind = ErrorKind.INTERNAL


_BY_NAME: dict[str, type[DMSError]] = {
    cls.__name__: cls
    for cls in (
        InputError,
        PayloadTooLargeError,
        HeadersTooLargeError,
        UnsupportedMediaTypeError,
        ModelNotFoundError,
        ModelAlreadyExistsError,
        ArchiveError,
        UnauthorizedError,
        ForbiddenError,
        QueueFullError,
        ModelUnavailableError,
        ServerBusyError,
        RequestTimeoutError,
        RequestReadTimeoutError,
        WorkerDiedError,
        InsufficientStorageError,
        HandlerError,
        InternalError,
    )
}


def error_from_wire(type_name: str, message: str) -> DMSError:
    """Rebuild an error sent by a worker as (class name, message); unknown names are internal."""
    cls = _BY_NAME.get(type_name, InternalError)
    return cls(message)
