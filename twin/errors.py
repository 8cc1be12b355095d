"""Errors as JSON: every 4xx says what was wrong and where, and nothing leaks as a bare 500."""

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("twin.errors")


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, where: str | None = None, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.code, self.detail, self.where, self.headers = status, code, detail, where, headers


def _body(code: str, detail: str, where=None) -> dict:
    body = {"code": code, "description": detail}
    if where is not None:
        body["where"] = where
    return body


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return JSONResponse(_body(exc.code, exc.detail, exc.where), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors = [{"where": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        first = errors[0] if errors else {"where": None, "problem": "invalid request"}
        return JSONResponse(_body("invalid_parameter", f"{first['where']}: {first['problem']}", errors),
                            status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))
