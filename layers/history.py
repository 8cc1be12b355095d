"""Reading the history: a feature's versions, a layer's changes and the global change feed.

Change ids are allocated in commit order (see migration 0003), so a client that follows
`GET /changes?after=<id>` from 0 and applies every change, in order, holds exactly the
current state of every layer; one that stops and comes back later resumes from its cursor.
"""

from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import and_, func, or_, select

from layers.catalog import SRID, catalog
from layers.changelog import change, change_columns, change_json, json_response, parse_moment, with_content
from layers.collections import layer_or_404
from twin.access import hidden_layers, require_read
from twin.errors import ApiError
from twin.urls import base_url

router = APIRouter(tags=["history"])

MAX_ID = 2**63 - 1
MAX_LIMIT = 10_000
OPERATIONS = ("insert", "update", "delete")


def link(request: Request, rel: str, **params) -> dict:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return {"rel": rel, "type": "application/json", "href": f"{base_url(request)}{request.url.path}?{query}"}


def parse_bbox(text: str, where: str = "query.bbox") -> tuple[float, float, float, float]:
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not all(abs(v) < 1e7 for v in box):
        raise ApiError(400, "invalid_parameter", f"bbox must be four numbers minx,miny,maxx,maxy, not {text[:80]!r}",
                       where=where)
    if box[0] > box[2] or box[1] > box[3]:
        raise ApiError(400, "invalid_parameter", f"bbox {text[:80]!r} has min greater than max", where=where)
    return box


def _operations(text: str) -> list[str]:
    wanted = [op.strip() for op in text.split(",") if op.strip()]
    unknown = [op for op in wanted if op not in OPERATIONS]
    if unknown or not wanted:
        raise ApiError(400, "invalid_parameter", f"operation must be one or more of {', '.join(OPERATIONS)} "
                       f"(comma-separated), not {text[:80]!r}", where="query.operation")
    return wanted


def _actor_filter(actor: str):
    """Exact actor, or every actor starting with a prefix given as `prefix*` (e.g. `生态环境局/*`)."""
    if actor.endswith("*"):
        prefix = actor[:-1].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return change.c.actor.like(prefix + "%", escape="\\")
    return change.c.actor == actor


async def _page(request: Request, stmt, limit: int) -> tuple[list, bool]:
    """Up to `limit` change rows, each with its content, and whether there are more."""
    async with request.app.state.engine.connect() as conn:
        rows = (await conn.execute(stmt.limit(limit + 1))).all()
        return await with_content(conn, rows[:limit]), len(rows) > limit


@router.get("/changes")
async def change_feed(request: Request,
                      after: int = Query(0, ge=0, le=MAX_ID, description="the last change id already applied"),
                      limit: int = Query(1000, ge=1, le=MAX_LIMIT),
                      layer: str | None = Query(None, description="only this layer's changes")):
    """Every change to every layer, oldest first, from a cursor; follow `next` until it is absent. An archived
    layer's changes are left out (layers.registry: they come back with it)."""
    stmt = (select(*change_columns()).where(change.c.change_id > after, change.c.layer.in_(sorted(catalog())))
            .order_by(change.c.change_id))
    if layer is not None:
        stmt = stmt.where(change.c.layer == layer_or_404(layer).id)
        await require_read(request, [layer], "query.layer")
    elif hidden := await hidden_layers(request):  # private layers' changes only for those who may read them
        stmt = stmt.where(change.c.layer.not_in(sorted(hidden)))
    rows, more = await _page(request, stmt, limit)
    cursor = rows[-1][0].change_id if rows else after
    links = [link(request, "self", after=after, limit=limit, layer=layer)]
    if more:
        links.append(link(request, "next", after=cursor, limit=limit, layer=layer))
    return json_response({"changes": [change_json(*r) for r in rows], "cursor": cursor, "links": links})


@router.get("/collections/{layer}/changes")
async def layer_changes(request: Request, layer: str,
                        since: str | None = Query(None, description="changes at or after this moment (ISO 8601)"),
                        until: str | None = Query(None, description="changes at or before this moment"),
                        operation: str | None = Query(None, description="insert, update, delete (comma-separated)"),
                        actor: str | None = Query(None, max_length=200, description="exact, or a prefix ending in *"),
                        run: int | None = Query(None, ge=1, le=MAX_ID, description="an ETL run id"),
                        bbox: str | None = Query(None, description="minx,miny,maxx,maxy (lon/lat): before or after"),
                        after: int = Query(0, ge=0, le=MAX_ID), limit: int = Query(100, ge=1, le=MAX_LIMIT)):
    """A layer's changes, oldest first, filtered by time, operation, actor, run or place."""
    spec = layer_or_404(layer)
    c = change.c
    stmt = select(*change_columns()).where(c.layer == spec.id, c.change_id > after).order_by(c.change_id)
    start, end = parse_moment(since, "query.since"), parse_moment(until, "query.until")
    if start and end and start > end:
        raise ApiError(400, "invalid_parameter", "since is later than until", where="query.since")
    if start:
        stmt = stmt.where(c.changed_at >= start)
    if end:
        stmt = stmt.where(c.changed_at <= end)
    if operation is not None:
        stmt = stmt.where(c.operation.in_(_operations(operation)))
    if actor is not None:
        stmt = stmt.where(_actor_filter(actor))
    if run is not None:
        stmt = stmt.where(c.run_id == run)
    if bbox is not None:
        if not spec.geometry:
            raise ApiError(400, "invalid_parameter", f"layer '{spec.id}' has no geometry to filter by bbox",
                           where="query.bbox")
        envelope = func.ST_MakeEnvelope(*parse_bbox(bbox), SRID)
        stmt = stmt.where(or_(c.bbox_after.op("&&")(envelope), c.bbox_before.op("&&")(envelope)))
    rows, more = await _page(request, stmt, limit)
    params = dict(since=since, until=until, operation=operation, actor=actor, run=run, bbox=bbox, limit=limit)
    links = [link(request, "self", after=after, **params)]
    if more:
        links.append(link(request, "next", after=rows[-1][0].change_id, **params))
    return json_response({"layer": spec.id, "changes": [change_json(*r) for r in rows], "links": links})


@router.get("/collections/{layer}/items/{fid}/history")
async def feature_history(request: Request, layer: str, fid: int = Path(ge=1, le=MAX_ID),
                          before: int | None = Query(None, ge=1, le=2**31 - 1,
                                                     description="only versions older than this one"),
                          limit: int = Query(100, ge=1, le=MAX_LIMIT)):
    """Every version of a feature, newest first: who changed it, when, and which fields."""
    spec = layer_or_404(layer)
    c = change.c
    stmt = select(*change_columns()).where(c.layer == spec.id, c.fid == fid)
    if before is not None:
        stmt = stmt.where(c.version < before)
    rows, more = await _page(request, stmt.order_by(c.version.desc(), c.change_id.desc()), limit)
    if not rows and before is None:
        raise ApiError(404, "unknown_feature", f"Layer '{spec.id}' has never had a feature {fid}.", where="path.fid")
    links = [link(request, "self", before=before, limit=limit)]
    if more:
        links.append(link(request, "next", before=rows[-1][0].version, limit=limit))
    body = {"layer": spec.id, "fid": fid, "versions": [change_json(*r) for r in rows], "links": links}
    if before is None:
        body["deleted"] = rows[0][0].operation == "delete"
    return json_response(body)


def touched_between(layer: str, start, end):
    """The fids of `layer` changed after `start` and up to `end` (now when None)."""
    c = change.c
    window = [c.layer == layer, c.changed_at > start] + ([c.changed_at <= end] if end is not None else [])
    return select(c.fid).where(and_(*window)).distinct()
