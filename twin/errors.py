"""Errors as JSON: every 4xx says what was wrong and where, and nothing leaks as a bare 500.

A database that is down, restarting, out of connections or too slow is the one place a
request becomes a 503 with `Retry-After`: the handlers below turn the driver's and the
pool's exceptions into that answer for every endpoint. Errors the database raises about
values (DataError, ProgrammingError) are not mapped here: a router that can meet them
turns them into 4xx itself, anywhere else they are bugs and stay 500s.
"""

import logging

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from twin.deadline import RequestDeadline

log = logging.getLogger("twin.errors")

# The database cannot answer now (refused, shut down, restarting, connection lost, pool exhausted,
# statement timeout); psycopg's OperationalError covers the server-side states (08*, 53*, 57*).
UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
               psycopg.OperationalError, psycopg.InterfaceError)
RETRY_AFTER_S = 5
QUERY_TIMEOUT = "57014"
# A request is answered 503 this long after the statement timeout, whatever the database does (twin.deadline).
DEADLINE_MARGIN_S = 5


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, where: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.where, self.headers = status, code, detail, where, headers


def _body(code: str, detail: str, where=None) -> dict:
    body = {"code": code, "description": detail}
    if where is not None:
        body["where"] = where
    return body


def error_body(exc: ApiError) -> dict:
    """The JSON body of an error, for code that answers before the handlers below (twin.limits)."""
    return _body(exc.code, exc.detail, exc.where)


def _sqlstate(exc: Exception) -> str | None:
    return getattr(getattr(exc, "orig", exc), "sqlstate", None)


def unavailable(exc: Exception) -> ApiError:
    """The 503 for a database that cannot answer now."""
    if _sqlstate(exc) == QUERY_TIMEOUT:
        return ApiError(503, "query_timeout", "The query ran longer than the server allows and was stopped; "
                        "retry later or ask for less (bbox, filter, limit).", headers={"Retry-After": "10"})
    return ApiError(503, "database_unavailable", "The database is not reachable right now (restarting or "
                    "overloaded); retry shortly.", headers={"Retry-After": str(RETRY_AFTER_S)})


ERROR_SCHEMA = {"type": "object", "required": ["code", "description"], "properties": {
    "code": {"type": "string", "description": "what went wrong, for programs"},
    "description": {"type": "string", "description": "what went wrong and what to do, for people"},
    "where": {"description": "the parameter or body member at fault; for invalid input a list of {where, problem}"},
}}
INVALID_INPUT = {"description": "Invalid input: what was wrong and where",
                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document_errors(schema: dict) -> None:
    """FastAPI documents invalid input as a 422 with its own body; this API answers a 400 with ours."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            ref = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if ref.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
                responses.setdefault("400", INVALID_INPUT)
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ERROR_SCHEMA


def nul_in(path: str, query: bytes) -> str | None:
    """Where a URL holds a NUL character ("path" or "query"), if it does."""
    return "path" if "\x00" in path else "query" if b"%00" in query else None


class NoNulInUrl:
    """PostgreSQL text cannot hold a NUL character, so no value with one can match or be stored: a URL
    carrying one (`%00`) is answered 400 before any router sees it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            where = nul_in(scope["path"], scope["query_string"])
            if where:
                response = JSONResponse(_body("invalid_parameter", "The URL holds a NUL character (%00), which "
                                              "no value may contain.", where), status_code=400)
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


def error_response(exc: ApiError) -> JSONResponse:
    """The answer to an ApiError, from the handler below or from code that answers before it (the tile fast path)."""
    headers = exc.headers
    if exc.status == 503 and not any(k.lower() == "retry-after" for k in headers or {}):  # say when to return
        headers = (headers or {}) | {"Retry-After": str(RETRY_AFTER_S)}
    return JSONResponse(error_body(exc), status_code=exc.status, headers=headers)


def deadline(app, settings) -> RequestDeadline:
    """`app` under the request deadline (twin.deadline): the statement timeout and a margin."""
    return RequestDeadline(app, settings.statement_timeout_ms / 1000 + DEADLINE_MARGIN_S, RETRY_AFTER_S)


def install(app: FastAPI) -> None:
    app.add_middleware(deadline, settings=app.state.settings)
    app.add_middleware(NoNulInUrl)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc)

    async def database_unavailable(request: Request, exc: Exception):
        error, cause = unavailable(exc), getattr(exc, "orig", None) or exc
        reason = str(cause).strip().splitlines()
        log.warning("503 %s for %s %s (%s: %s)", error.code, request.method, request.url.path,
                    type(cause).__name__, reason[0] if reason else "")
        return await api_error(request, error)

    for kind in UNAVAILABLE:
        app.add_exception_handler(kind, database_unavailable)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"where": None, "problem": "invalid request"}
        return JSONResponse(_body("invalid_parameter", f"{first['where']}: {first['problem']}", errors),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body" of json.loads
            return JSONResponse(_body("invalid_json", "The JSON body is nested too deeply to read.", "body"),
                                status_code=400)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
