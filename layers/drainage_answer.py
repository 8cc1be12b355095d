"""The answer of POST /query/trace from a feature: the drainage traces (layers.drainage_trace) as
GeoJSON feature collections, one per layer, each feature with its `distance_m` along the network.

Traces answer from the current network (the graph is the network now): `as_of` is refused. A
service area also counts, per street and grid, the manholes that lose their way out.
"""

from sqlalchemy import BigInteger, Float, column, select, text, values
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import drainage_trace
from layers.catalog import get_layer
from layers.crs import Crs
from layers.query_bodies import Trace, conditions
from layers.query_geometry import collection, feature, feature_select
from layers.tables import current
from twin.errors import ApiError

AREAS = ("streets", "grids")


async def start_of(conn: AsyncConnection, query: Trace) -> tuple[str, int, str | None]:
    """The one feature the selector names: (layer, fid, its code)."""
    layer = query.feature.layer
    allowed = drainage_trace.FAILING if query.direction == "service_area" else drainage_trace.STARTS
    if layer not in allowed:
        raise ApiError(422, "not_a_network_layer", f"A {query.direction} trace starts from a feature of "
                       f"{', '.join(allowed)}; not {layer[:100]!r}.", where="body.feature.layer")
    if query.as_of is not None:
        raise ApiError(422, "as_of_not_supported", "Network traces answer from the current network; leave out "
                       "as_of.", where="body.as_of")
    spec = get_layer(layer)
    src = current(spec)
    key = src.c[spec.key[0]]
    rows = (await conn.execute(select(src.c.fid, key).where(
        *conditions(spec, src, query.feature.where, "body.feature.where")).order_by(src.c.fid).limit(2))).all()
    if len(rows) != 1:
        raise ApiError(422, "not_one_feature", f"The selector matches {'no' if not rows else 'more than one'} "
                       f"feature of {layer}; a trace starts from exactly one.", where="body.feature.where")
    return layer, rows[0].fid, rows[0][1]


async def _features(conn: AsyncConnection, layer: str, found: dict[int, float], query: Trace, crs: Crs) -> dict:
    spec = get_layer(layer)
    src = current(spec)
    nearest = sorted(found.items(), key=lambda item: (item[1], item[0]))[:query.limit]
    reached = values(column("fid", BigInteger), column("distance_m", Float), name="reached").data(nearest) \
        if nearest else None
    rows = [] if reached is None else (await conn.execute(
        feature_select(spec, src, crs, query.geometries, reached.c.distance_m)
        .join_from(src, reached, reached.c.fid == src.c.fid).order_by(reached.c.distance_m, src.c.fid))).all()
    return collection([feature(spec, r, ("distance_m",)) for r in rows], numberMatched=len(found))


async def _areas(conn: AsyncConnection, manholes: list[int], hidden: frozenset[str]) -> dict:
    """Per street and grid: how many of these manholes lie in it."""
    counted = {}
    for layer in AREAS:
        if layer in hidden:
            continue
        rows = (await conn.execute(text(
            f"SELECT a.code, a.name, count(*) AS manholes FROM layers.{layer} a "
            "JOIN layers.manholes m ON ST_Intersects(a.geom, m.geom) WHERE m.fid = ANY(:fids) "
            "GROUP BY a.code, a.name ORDER BY count(*) DESC, a.code"), {"fids": manholes})).all()
        counted[layer] = [dict(r._mapping) for r in rows]
    return counted


async def body(conn: AsyncConnection, query: Trace, crs: Crs, hidden: frozenset[str] = frozenset()) -> dict:
    layer, fid, code = await start_of(conn, query)
    run = {"upstream": drainage_trace.upstream, "downstream": drainage_trace.downstream}
    try:
        if query.direction == "service_area":
            reach = await drainage_trace.service_area(conn, layer, fid)
        else:
            reach = await run[query.direction](conn, layer, fid, query.distance)
    except drainage_trace.NotOnNetwork as e:
        raise ApiError(422, "not_on_network", f"{e}; check its codes (from_code/to_code, river_code).",
                       where="body.feature") from e
    answer = {"direction": query.direction, "distance": query.distance,
              "start": {"layer": layer, "fid": fid, "code": code}, "nodes": reach.nodes}
    for name, found in sorted(reach.features.items()):
        if name not in hidden:
            answer[name] = await _features(conn, name, found, query, crs)
    if query.direction == "downstream":
        answer["outlet"] = None if reach.outlet is None else dict(zip(("layer", "fid", "distance_m"), reach.outlet))
        answer["path"] = [{"layer": name, "fid": step, "distance_m": metres} for name, step, metres in reach.path
                          if name not in hidden]
    if query.direction == "service_area":
        answer |= await _areas(conn, list(reach.features.get("manholes", {})), hidden)
    return answer
