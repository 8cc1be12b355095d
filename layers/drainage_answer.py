"""The answer of POST /query/trace from a feature: the drainage traces (layers.drainage_trace) as
GeoJSON feature collections, one per layer, each feature with its `distance_m` along the network.

With `as_of` the trace runs on the network as it was then (drainage_graph.build_at) and every feature
answered is read as of then. A service area also counts, per street and grid, the manholes that lose
their way out. Streets and grids are named here: no spec declares a layer's part as an area to count by.
"""

from sqlalchemy import BigInteger, Float, any_, bindparam, column, func, select, values
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import drainage_layers, drainage_trace
from layers.catalog import get_layer, with_area
from layers.crs import Crs
from layers.drainage_layers import Network
from layers.query_bodies import Trace, conditions
from layers.query_geometry import collection, feature, feature_select
from layers.tables import layer_at
from twin.errors import ApiError

AREAS = ("street", "grid")  # the areas a service area counts (`area` in their specs)


async def start_of(conn: AsyncConnection, query: Trace) -> tuple[str, int, str | None]:
    """The one feature the selector names: (layer, fid, its code)."""
    layer = query.feature.layer
    roles = drainage_trace.FAILING if query.direction == "service_area" else drainage_trace.STARTS
    if drainage_layers.role_of(layer) not in roles:
        allowed = ", ".join(drainage_layers.layer_id(role) for role in roles)
        raise ApiError(422, "not_a_network_layer", f"A {query.direction} trace starts from a feature of "
                       f"{allowed}; not {layer[:100]!r}.", where="body.feature.layer")
    spec = get_layer(layer)
    src = layer_at(spec, query.as_of)
    key = src.c[spec.key[0]]
    rows = (await conn.execute(select(src.c.fid, key).where(
        *conditions(spec, src, query.feature.where, "body.feature.where")).order_by(src.c.fid).limit(2))).all()
    if len(rows) != 1:
        raise ApiError(422, "not_one_feature", f"The selector matches {'no' if not rows else 'more than one'} "
                       f"feature of {layer}{' then' if query.as_of else ''}; a trace starts from exactly one.",
                       where="body.feature.where")
    return layer, rows[0].fid, rows[0][1]


async def _features(conn: AsyncConnection, layer: str, found: dict[int, float], query: Trace, crs: Crs) -> dict:
    spec = get_layer(layer)
    src = layer_at(spec, query.as_of)
    nearest = sorted(found.items(), key=lambda item: (item[1], item[0]))[:query.limit]
    reached = values(column("fid", BigInteger), column("distance_m", Float), name="reached").data(nearest) \
        if nearest else None
    rows = [] if reached is None else (await conn.execute(
        feature_select(spec, src, crs, query.geometries, reached.c.distance_m)
        .join_from(src, reached, reached.c.fid == src.c.fid).order_by(reached.c.distance_m, src.c.fid))).all()
    return collection([feature(spec, r, ("distance_m",)) for r in rows], numberMatched=len(found))


async def _areas(conn: AsyncConnection, manholes: list[int], query: Trace, hidden: frozenset[str]) -> dict:
    """Per street and grid: how many of these manholes lie in it."""
    counted = {}
    wells = layer_at(drainage_layers.spec("manholes"), query.as_of)
    for spec in filter(None, map(with_area, AREAS)):
        if spec.id in hidden:
            continue
        layer, area = spec.id, layer_at(spec, query.as_of)
        rows = (await conn.execute(
            select(area.c.code, area.c.name, func.count().label("manholes"))
            .join_from(area, wells, func.ST_Intersects(area.c.geom, wells.c.geom))
            .where(wells.c.fid == any_(bindparam("manholes", manholes, ARRAY(BigInteger))))
            .group_by(area.c.code, area.c.name)
            .order_by(func.count().desc(), area.c.code))).all()
        counted[layer] = [dict(r._mapping) for r in rows]
    return counted


async def body(conn: AsyncConnection, query: Trace, crs: Crs, hidden: frozenset[str] = frozenset(),
               network: Network | None = None) -> dict:
    """The answer, traced on `network` (the graph now when None; drainage_graph.build_at for query.as_of)."""
    layer, fid, code = await start_of(conn, query)
    try:
        if query.direction == "service_area":
            reach = await drainage_trace.service_area(conn, layer, fid, network=network)
        else:
            run = drainage_trace.upstream if query.direction == "upstream" else drainage_trace.downstream
            reach = await run(conn, layer, fid, query.distance, network=network)
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
        manholes = list(reach.features.get(drainage_layers.layer_id("manholes"), {}))
        answer |= await _areas(conn, manholes, query, hidden)
    return answer
