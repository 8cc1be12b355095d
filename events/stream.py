"""`GET /stream`: the change log as Server-Sent Events, resumable by `Last-Event-ID`.

A client gets the stored events after its last id (the `Last-Event-ID` header its EventSource sends on
reconnecting, or `?after=`), then the live ones from the process's hub, skipping any it already had: nothing
lost, nothing repeated, on this server or any other. An event of a layer the client may not read never goes
out. A comment line whenever a stream was silent for half of `stream_heartbeat_s` keeps proxies from closing it. A client that does
not read is dropped by the hub (events.hub) and resumes from its last id. Most streams are answered in front
of the app's middleware (events.stream_front); this route answers the rest, and documents the endpoint.
"""

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from events import feed
from events.feed import TOPICS, Interest
from events.hub import PAGE, Hub, frame
from layers.catalog import catalog
from twin.auth import Principal, authenticate
from twin.errors import ApiError

router = APIRouter(tags=["events"])
MAX_ID = 2 ** 63 - 1


def _names(text: str | None, known, what: str, where: str) -> frozenset[str] | None:
    if text is None or not text.strip():
        return None
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(names - set(known))
    if unknown:
        raise ApiError(400, "invalid_parameter", f"unknown {what} {unknown[0]!r}; known: {', '.join(sorted(known))}",
                       where=where)
    return names


async def principal_of(request: Request) -> Principal | None:
    return await authenticate(request) if request.headers.get("authorization") else None


def interest(topics: str | list[str] | None, layers: str | list[str] | None, principal: Principal | None,
             where: str) -> Interest:
    """Topics and layers as a query string ("a,b") or a list, checked against the known ones."""
    if isinstance(topics, list):
        topics = ",".join(topics)
    if isinstance(layers, list):
        layers = ",".join(layers)
    return Interest(_names(topics, TOPICS, "topic", f"{where}.topics") or frozenset(TOPICS),
                    _names(layers, catalog(), "layer", f"{where}.layers"), principal)


def _last_event_id(request: Request, after: int | None) -> int | None:
    header = request.headers.get("last-event-id")
    if header is None or not header.strip():
        return after
    if not header.strip().isdigit() or int(header) > MAX_ID:
        raise ApiError(400, "invalid_header", f"Last-Event-ID {header[:40]!r} is not an event id (a change id)",
                       where="header.Last-Event-ID")
    return int(header)


@router.get("/stream", response_class=StreamingResponse, responses={200: {
    "content": {"text/event-stream": {}}, "description": "Server-Sent Events: one per change, alert or reading"}})
async def stream(request: Request,
                 topics: str | None = Query(None, description="comma-separated: changes, alerts, observations "
                                                              "(all when absent)"),
                 layers: str | None = Query(None, description="comma-separated layer ids (all when absent)"),
                 after: int | None = Query(None, ge=0, le=MAX_ID,
                                           description="the last change id already seen (Last-Event-ID wins)")):
    """Every change, alert and water-quality reading as it is committed; each event's id is its change id
    (`GET /changes`), so a reconnecting client resumes exactly where it left off."""
    wanted = interest(topics, layers, await principal_of(request), "query")
    hub: Hub = request.app.state.event_hub
    cursor = _last_event_id(request, after)
    cursor = hub.position if cursor is None else cursor
    if hub.closing:
        raise ApiError(503, "stopping", "This server is stopping; reconnect (to another).",
                       headers={"Retry-After": "1"})
    listener = hub.listen(wanted)  # before the stored events are read: nothing committed meanwhile is missed
    engine, access = request.app.state.engine, request.app.state.access

    async def frames():
        nonlocal cursor
        try:
            yield b"retry: 2000\n\n"
            while cursor < hub.position:  # behind the hub: the stored events first
                async with engine.connect() as conn:
                    events = await feed.read(conn, cursor, PAGE)
                for event in events:
                    if wanted.wants(event, access):
                        yield frame(event)
                if len(events) < PAGE:
                    cursor = max(cursor, hub.position) if not events else events[-1].id
                    break
                cursor = events[-1].id
            while not listener.dropped:
                handed, beat = await listener.next()
                fresh = [text for event_id, text in handed if event_id > cursor]
                if fresh:  # all that waited goes out in one write
                    cursor = handed[-1][0]
                    yield b"".join(fresh)
                elif beat:
                    yield b": heartbeat\n\n"
        finally:
            hub.forget(listener)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
