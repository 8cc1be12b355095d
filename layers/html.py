"""HTML pages of the OGC API resources, for a person in a browser.

`f=html` asks for them (`f=json` for JSON); without `f`, an Accept header that prefers text/html
to JSON — a browser's — does. Every other client gets JSON as before. The templates live in
layers/templates and escape every value they print.
"""

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from twin.errors import ApiError

FORMATS = ("json", "html")
_templates = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                         trim_blocks=True, lstrip_blocks=True)


def _preference(accept: str) -> tuple[float, float]:
    """The highest quality the Accept header gives HTML and any JSON type."""
    html = json = 0.0
    for part in accept.split(","):
        kind, *options = [p.strip() for p in part.split(";")]
        q = next((o[2:] for o in options if o.startswith("q=")), "1")
        try:
            quality = min(max(float(q), 0.0), 1.0)
        except ValueError:
            quality = 0.0
        if kind == "text/html":
            html = max(html, quality)
        elif "json" in kind:
            json = max(json, quality)
    return html, json


def wanted(request: Request) -> bool:
    """Whether to answer with HTML."""
    f = request.query_params.get("f")
    if f is not None:
        if f not in FORMATS:
            raise ApiError(400, "invalid_parameter", f"f must be one of {', '.join(FORMATS)}, not {f[:40]!r}",
                           where="query.f")
        return f == "html"
    html, json = _preference(request.headers.get("accept", ""))
    return html > json


def page(template: str, **values) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(template).render(**values))
