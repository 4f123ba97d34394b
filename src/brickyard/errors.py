"""The one error type of Brickyard and its mapping to HTTP status codes."""
from __future__ import annotations

ERROR_CODE_TO_HTTP_STATUS: dict[str, int] = {
    "INVALID_PARAMETER_VALUE": 400,
    "MALFORMED_REQUEST": 400,
    "INVALID_STATE": 400,
    "BAD_REQUEST": 400,
    "IO_ERROR": 400,
    "DIRECTORY_NOT_EMPTY": 400,
    "MAX_BLOCK_SIZE_EXCEEDED": 400,
    "MAX_READ_SIZE_EXCEEDED": 400,
    "MAX_NOTEBOOK_SIZE_EXCEEDED": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "RESOURCE_DOES_NOT_EXIST": 404,
    "NOT_FOUND": 404,
    "ENDPOINT_NOT_FOUND": 404,
    "RESOURCE_ALREADY_EXISTS": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_CONFLICT": 409,
    "REQUEST_ENTITY_TOO_LARGE": 413,
    "REQUEST_LIMIT_EXCEEDED": 429,
    "INTERNAL_ERROR": 500,
    "TEMPORARILY_UNAVAILABLE": 503,
}


class BrickyardError(Exception):
    """A domain error with a stable Databricks error code; mapped to HTTP once, in the app."""

    def __init__(self, error_code: str, message: str, http_status: int | None = None):
        super().__init__(message)
        self.error_code = error_code
        self.message = message
        self.http_status = http_status or ERROR_CODE_TO_HTTP_STATUS.get(error_code, 400)

    def to_dict(self) -> dict[str, str]:
        return {"error_code": self.error_code, "message": self.message}


def invalid(message: str) -> BrickyardError:
    return BrickyardError("INVALID_PARAMETER_VALUE", message)


def not_found(message: str) -> BrickyardError:
    return BrickyardError("RESOURCE_DOES_NOT_EXIST", message)


def already_exists(message: str) -> BrickyardError:
    return BrickyardError("RESOURCE_ALREADY_EXISTS", message)


def denied(message: str) -> BrickyardError:
    return BrickyardError("PERMISSION_DENIED", message)


def unauthenticated(message: str) -> BrickyardError:
    return BrickyardError("UNAUTHENTICATED", message)
