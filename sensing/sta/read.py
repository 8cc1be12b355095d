"""GET on any resource path, with the query options."""

from datetime import datetime
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from sqlalchemy import select

from sensing.sta import options as query_options
from sensing.sta.paths import Resolved, resolve
from sensing.sta.query import Reader, dump, iso, run
from sensing.sta.root import PREFIX, sta_base
from twin.access import hidden_layers
from twin.errors import ApiError

router = APIRouter(tags=["sensorthings"])


def _json(body, status: int = 200) -> Response:
    return Response(dump(body), status_code=status, media_type="application/json")


async def _exists(reader: Reader, resolved: Resolved) -> bool:
    source = reader.source(resolved.entity)
    return bool(await run(reader.conn, select(source.c.id).where(*resolved.where(source)).limit(1)))


@router.get(PREFIX + "/{path:path}")
async def read(request: Request, path: str):
    """Entity sets, entities, navigation paths and properties, with $filter, $expand, $select, $orderby,
    $top (default 100, at most 10,000), $skip and $count."""
    hidden = await hidden_layers(request)
    resolved = resolve(path, hidden)
    params = dict(request.query_params)
    options = query_options.parse(resolved.entity, params)
    async with request.app.state.read_engine.connect() as conn:
        reader = Reader(conn, sta_base(request), hidden)
        if resolved.single:
            options.top, options.skip, options.count = 1, 0, False
            found, _, _ = await reader.collection(options, resolved.where, resolved.key)
            if not found:
                raise ApiError(404, "not_found", f"{path}: no such entity", where="path")
            entity = found[0]
            if resolved.property:
                value = entity.get(resolved.property)
                if resolved.value:
                    text = iso(value) if isinstance(value, datetime) else "" if value is None else str(value)
                    return Response(text, media_type="text/plain")
                return _json({resolved.property: value})
            return _json(entity)
        if resolved.parent is not None and not await _exists(reader, resolved.parent):
            raise ApiError(404, "not_found", f"{path}: the parent entity does not exist", where="path")
        entities, count, more = await reader.collection(options, resolved.where)
    body = {}
    if count is not None:
        body["@iot.count"] = count
    if more:
        params["$skip"] = str(options.skip + options.top)
        params["$top"] = str(options.top)
        body["@iot.nextLink"] = f"{sta_base(request)}/{path}?{urlencode(params)}"
    body["value"] = entities
    return _json(body)
