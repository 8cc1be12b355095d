"""The river network, traced up- or downstream from a point.

Rivers are MultiLineStrings drawn in flow direction, and reaches meet where a line ends on
another line: at its start or end (reaches cut at confluences) or in its interior (a tributary
drawn into the middle of the river receiving it). This trace from a point cuts its last reach at
exactly the distance asked, which the drainage graph's pgRouting walks (layers.drainage_trace) do not,
so the network is built in SQL on each request from the rivers as of the query's moment: every line is split
(ST_Snap + ST_Split) at the line ends that touch it, the pieces are the edges, and their end
points clustered within NODE_TOLERANCE (ST_ClusterDBSCAN) are the nodes. A recursive CTE then
walks from the point: downstream along edges whose start node is the current end node,
upstream along edges whose end node is the current start node, never reusing an edge on a path,
until the distance is spent; the last edge of each path is cut at exactly that distance.

Building per request keeps `as_of` exact and takes milliseconds for the district's hundred-odd
reaches; caching the noded edges keyed by the rivers layer's last change is the step to take if
the network grows to thousands. Edge lengths and distances from the rivers are geodesic; where
an edge is cut, the share of its length is measured in EPSG:4549 (CGCS2000 3-degree Gauss-Krüger,
CM 120E), whose scale barely varies along one edge. The layers are found by their drainage roles
(rivers, sources, stations; layers.drainage_layers), never by name.
"""

import orjson
from sqlalchemy import Float, and_, case, func, literal, or_, select, union_all
from sqlalchemy import all_ as all_of
from sqlalchemy.dialects.postgresql import array
from sqlalchemy.ext.asyncio import AsyncConnection

from layers import drainage_layers
from layers.catalog import SRID, LayerSpec
from layers.crs import Crs
from layers.query_geometry import collection, feature, feature_select, geodesic, geojson, metres_between, near
from layers.tables import layer_at

NODE_TOLERANCE = 1e-6  # degrees, about 0.1 m: a line end this close to another line joins it
METRIC = 4549
AT_NODE_M = 0.5  # a start this close to a confluence starts from the confluence itself
ALONGSIDE = ("sources", "stations")  # the point layers a river trace lists, by their drainage roles


def river_layer() -> LayerSpec:
    """The layer of the rivers: the one whose spec declares network = "rivers"."""
    return drainage_layers.spec("rivers")


def _graph(rivers):
    """Edges (eid, fid of the river, line, line_m, length_m, source, target node)."""
    parts = select(rivers.c.fid, func.ST_Dump(rivers.c.geom).geom.label("line")).cte("parts")
    ends = union_all(select(func.ST_StartPoint(parts.c.line).label("pt")),
                     select(func.ST_EndPoint(parts.c.line).label("pt"))).cte("ends")
    blades = (select(rivers.c.fid, func.ST_Collect(ends.c.pt).label("pts"))
              .select_from(rivers.join(ends, func.ST_DWithin(rivers.c.geom, ends.c.pt, NODE_TOLERANCE)))
              .group_by(rivers.c.fid).cte("blades"))
    split = func.ST_Split(func.ST_Snap(parts.c.line, blades.c.pts, NODE_TOLERANCE), blades.c.pts)
    pieces = (select(parts.c.fid, func.ST_Dump(func.coalesce(split, parts.c.line)).geom.label("line"))
              .select_from(parts.outerjoin(blades, parts.c.fid == blades.c.fid)).subquery("pieces"))
    edges = (select(func.row_number().over(order_by=pieces.c.fid).label("eid"), pieces.c.fid, pieces.c.line,
                    func.ST_Transform(pieces.c.line, METRIC).label("line_m"),
                    func.ST_Length(geodesic(pieces.c.line)).label("length_m"))
             .where(func.ST_Length(pieces.c.line) > 0).cte("edges"))
    tips = union_all(select(edges.c.eid, literal(True).label("head"), func.ST_StartPoint(edges.c.line).label("pt")),
                     select(edges.c.eid, literal(False), func.ST_EndPoint(edges.c.line))).subquery("tips")
    nodes = select(tips.c.eid, tips.c.head,
                   func.ST_ClusterDBSCAN(tips.c.pt, NODE_TOLERANCE, 1).over().label("node")).cte("nodes")
    start, end = nodes.alias("start_node"), nodes.alias("end_node")
    return (select(edges, start.c.node.label("source"), end.c.node.label("target"))
            .join_from(edges, start, and_(start.c.eid == edges.c.eid, start.c.head))
            .join(end, and_(end.c.eid == edges.c.eid, ~end.c.head)).cte("graph"))


river_graph = _graph  # the noded river edges, which the drainage graph (layers.drainage_graph) also builds on


def _pieces(rivers, point, query):
    """The traced part of each edge reached: (eid, fid, from_m, to_m, piece, piece_m), from_m and
    to_m its distances from the start point along the rivers; and the start (eid, at, offset_m)."""
    graph = _graph(rivers)
    down = query.direction == "downstream"
    point_m = func.ST_Transform(point, METRIC)
    offset = metres_between(graph.c.line, point)
    start = (select(graph.c.eid, func.ST_LineLocatePoint(graph.c.line_m, point_m).label("at"),
                    offset.label("offset_m"))
             .where(near(graph.c.line, point, query.snap)).order_by(offset, graph.c.eid).limit(1).cte("start"))

    def front(g):  # the node a walk leaves an edge by
        return g.c.target if down else g.c.source

    def back(g):  # the node a walk enters an edge by
        return g.c.source if down else g.c.target

    first, seed = graph.alias("first_edge"), graph.alias("seed")
    at_back = (start.c.at if down else 1 - start.c.at) * first.c.length_m <= AT_NODE_M
    entry = case((seed.c.eid == start.c.eid, start.c.at), else_=literal(0.0 if down else 1.0))
    seeds = (select(seed.c.eid, front(seed).label("node"), entry.label("entry"), literal(0.0, Float).label("from_m"),
                    (seed.c.length_m * ((1 - entry) if down else entry)).label("to_m"),
                    array([seed.c.eid]).label("path"))
             .select_from(start.join(first, first.c.eid == start.c.eid)
                          .join(seed, or_(seed.c.eid == first.c.eid, and_(at_back, back(seed) == back(first))))))
    walk = seeds.cte("walk", recursive=True)
    step = graph.alias("step")
    walk = walk.union_all(
        select(step.c.eid, front(step), literal(0.0 if down else 1.0), walk.c.to_m, walk.c.to_m + step.c.length_m,
               func.array_append(walk.c.path, step.c.eid))
        .select_from(walk.join(step, back(step) == walk.c.node))
        .where(walk.c.to_m < query.distance, step.c.eid != all_of(walk.c.path)))
    reached = (select(walk.c.eid, walk.c.entry, walk.c.from_m, func.least(walk.c.to_m, query.distance).label("to_m"))
               .where(walk.c.from_m < query.distance)
               .distinct(walk.c.eid).order_by(walk.c.eid, walk.c.from_m).subquery("reached"))
    share = (reached.c.to_m - reached.c.from_m) / graph.c.length_m
    lo, hi = (reached.c.entry, reached.c.entry + share) if down else (reached.c.entry - share, reached.c.entry)
    piece_m = func.ST_LineSubstring(graph.c.line_m, func.greatest(lo, 0.0), func.least(hi, 1.0))
    pieces = (select(graph.c.eid, graph.c.fid, reached.c.from_m, reached.c.to_m, piece_m.label("piece_m"),
                     func.ST_Transform(piece_m, SRID).label("piece"))
              .join_from(reached, graph, graph.c.eid == reached.c.eid)
              .where(reached.c.to_m > reached.c.from_m).cte("pieces"))
    return pieces, start, graph


def _alongside(spec: LayerSpec, query, pieces, within_m: float, crs: Crs):
    """A point layer's features within `within_m` of the traced pieces, each with its distance
    from the river and its position along the trace (from the start point)."""
    src = layer_at(spec, query.as_of)
    distance = metres_between(src.c.geom, pieces.c.piece)
    located = func.ST_LineLocatePoint(pieces.c.piece_m, func.ST_Transform(src.c.geom, METRIC))
    along = pieces.c.from_m + (pieces.c.to_m - pieces.c.from_m) * (
        located if query.direction == "downstream" else 1 - located)
    nearest = (select(src.c.fid, distance.label("distance_m"), along.label("along_m"), pieces.c.fid.label("river_fid"))
               .select_from(src.join(pieces, near(src.c.geom, pieces.c.piece, within_m)))
               .distinct(src.c.fid).order_by(src.c.fid, distance).subquery("nearest"))
    return (feature_select(spec, src, crs, query.geometries, nearest.c.distance_m, nearest.c.along_m,
                           nearest.c.river_fid)
            .join_from(src, nearest, nearest.c.fid == src.c.fid)
            .order_by(nearest.c.along_m, nearest.c.distance_m, src.c.fid))


async def trace(conn: AsyncConnection, point, query, crs: Crs, hidden: frozenset[str] = frozenset()) -> dict | None:
    """The traced reaches, sources and stations, or None when no river passes within `snap` of the point."""
    rivers_spec = river_layer()
    rivers = layer_at(rivers_spec, query.as_of)
    pieces, start, graph = _pieces(rivers, point, query)
    began = (await conn.execute(
        select(rivers.c.fid, rivers.c.code, rivers.c.name, start.c.offset_m,
               geojson(func.ST_ClosestPoint(graph.c.line, point), crs).label("snapped"))
        .join_from(start, graph, graph.c.eid == start.c.eid).join(rivers, rivers.c.fid == graph.c.fid))).first()
    if began is None:
        return None
    traced = (select(pieces.c.fid, func.min(pieces.c.from_m).label("from_m"), func.max(pieces.c.to_m).label("to_m"),
                     func.sum(pieces.c.to_m - pieces.c.from_m).label("length_m"),
                     func.ST_Multi(func.ST_LineMerge(func.ST_Collect(pieces.c.piece))).label("geom"))
              .group_by(pieces.c.fid).subquery("traced"))
    columns = [rivers.c.fid, *(rivers.c[f.name] for f in rivers_spec.fields)]
    if query.geometries:
        columns.append(geojson(traced.c.geom, crs).label("geometry_json"))
    extra = ("from_m", "to_m", "length_m")
    reaches = (await conn.execute(
        select(*columns, *(traced.c[name] for name in extra)).join_from(rivers, traced, traced.c.fid == rivers.c.fid)
        .order_by(traced.c.from_m, rivers.c.fid))).all()
    body = {
        "direction": query.direction, "distance": query.distance,
        "start": {"river_fid": began.fid, "code": began.code, "name": began.name, "offset_m": began.offset_m,
                  "point": orjson.Fragment(began.snapped)},
        "length_m": sum(r.length_m for r in reaches),
        "reaches": collection([feature(rivers_spec, r, extra) for r in reaches]),
    }
    for role, within_m in zip(ALONGSIDE, (query.buffer, query.station_distance)):
        spec = drainage_layers.spec(role)
        if spec.id in hidden:  # a private layer the caller may not read
            continue
        statement = _alongside(spec, query, pieces, within_m, crs)
        rows = (await conn.execute(statement)).all()
        body[spec.id] = collection([feature(spec, r, ("distance_m", "along_m", "river_fid")) for r in rows])
    return body
