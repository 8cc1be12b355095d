"""The server's own base URL as a client sees it (behind a proxy too)."""

from fastapi import Request


def base_url(request: Request) -> str:
    configured = request.app.state.settings.public_url
    if configured:
        return configured.rstrip("/")
    headers = request.headers
    proto = headers.get("x-forwarded-proto", request.url.scheme).split(",")[0].strip()
    host = headers.get("x-forwarded-host", headers.get("host", request.url.netloc)).split(",")[0].strip()
    prefix = headers.get("x-forwarded-prefix", "").rstrip("/")
    return f"{proto}://{host}{prefix}"
