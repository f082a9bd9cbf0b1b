"""Every error the gateway answers is JSON ``{code, message}`` with the status of the one
error table (``isvos.errors``), and never a traceback."""

from __future__ import annotations

import logging

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from isvos.errors import ERRORS, IsvosError
from service.logs import log_event

log = logging.getLogger("isvos.gateway")

# Plain HTTP statuses (from the framework or the tus router) as codes of the table.
_STATUS_CODES = {
    400: "invalid_argument", 401: "unauthenticated", 403: "not_found", 404: "not_found",
    405: "invalid_argument", 409: "failed_precondition", 410: "not_found",
    412: "failed_precondition", 413: "payload_too_large", 415: "unknown_format",
    416: "invalid_argument", 422: "invalid_argument", 429: "rate_limited",
    460: "failed_precondition", 501: "invalid_argument", 503: "unavailable",
}  # fmt: skip
RETRY_AFTER_S = {"rate_limited": 5, "unavailable": 2, "resource_exhausted": 5}


def error_response(code: str, message: str, status: int | None = None) -> JSONResponse:
    row = ERRORS.get(code) or ERRORS["internal"]
    headers = {}
    if code in RETRY_AFTER_S:
        headers["Retry-After"] = str(RETRY_AFTER_S[code])
    if code == "unauthenticated":
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(
        {"code": row.code, "message": message}, status_code=status or row.http_status,
        headers=headers,
    )  # fmt: skip


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        parts.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request is not valid"


def allowed_methods(app: FastAPI, scope: dict) -> list[str]:
    """The methods the routes matching ``scope``'s path answer."""
    methods: set[str] = set()
    for route in app.router.routes:
        match, _ = route.matches({**scope, "method": "GET"})
        if match != Match.NONE:
            methods.update(getattr(route, "methods", None) or ())
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(IsvosError)
    async def _coded(request: Request, exc: IsvosError):
        return error_response(exc.code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response("invalid_argument", _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _STATUS_CODES.get(exc.status_code, "internal" if exc.status_code >= 500 else
                                 "invalid_argument")  # fmt: skip
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        response = error_response(code, message, status=exc.status_code)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:  # every method of the path, not only the first route's
            response.headers["Allow"] = ", ".join(allowed_methods(app, request.scope))
        return response

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    @app.exception_handler(redis.exceptions.BusyLoadingError)
    async def _redis_down(request: Request, exc: Exception):
        log_event(log, "redis_unavailable", logging.WARNING, path=request.url.path,
                  error=type(exc).__name__)  # fmt: skip
        return error_response("unavailable", "the job store (Redis) is not reachable; retry")

    @app.exception_handler(redis.exceptions.ResponseError)
    async def _redis_refused(request: Request, exc: Exception):
        text = str(exc)
        if text.startswith(("OOM", "READONLY", "LOADING", "MASTERDOWN", "NOREPLICAS")):
            return error_response("unavailable", f"the job store cannot write now ({text[:40]})")
        return await _unexpected(request, exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log_event(log, "internal_error", logging.ERROR, path=request.url.path,
                  error=f"{type(exc).__name__}: {exc}")  # fmt: skip
        return error_response("internal", "an internal error occurred; it has been logged")
