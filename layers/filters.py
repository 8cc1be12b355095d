"""CQL2 filters → SQLAlchemy clauses over a layer's columns.

The evaluator is ours (on pygeofilter's Evaluator): it checks every field against the layer's
queryables and every comparison's types, so a bad filter is a 400, never an SQL error. Spatial
literals are in filter-crs and transformed to storage in PostGIS; S_DWITHIN is in metres on
the ellipsoid (geography). Temporal operators follow CQL2 1.0 on instants and intervals.
"""

from dataclasses import dataclass
from datetime import date, datetime

from geoalchemy2 import Geometry
from pygeofilter import ast, values
from pygeofilter.backends.evaluator import Evaluator, handle
from shapely.geometry import shape
from sqlalchemy import (Boolean, Date, DateTime, Float, Integer, String, Text, and_, false, func, literal, not_, or_,
                        true, type_coerce)
from sqlalchemy.sql.elements import ColumnElement

from layers import crs as crs_
from layers.catalog import SRID, LayerSpec
from layers.cql2 import WHERE, TimeIntersects, moment
from twin.errors import ApiError

@dataclass(frozen=True)
class Filter:
    """A parsed CQL2 filter and the CRS of its geometry literals (filter-crs)."""
    node: object
    crs: crs_.Crs

    def clause(self, spec: LayerSpec, columns) -> ColumnElement:
        """The filter as a WHERE clause over `columns` (the layer's table or its as-of source)."""
        try:
            result = _Compiler(spec, columns, self.crs).evaluate(self.node)
        except RecursionError as e:
            raise ApiError(400, "invalid_filter", "The filter is nested too deeply", where=WHERE) from e
        except NotImplementedError as e:
            raise ApiError(400, "invalid_filter", f"Unsupported CQL2 construct: {e}", where=WHERE) from e
        if not (isinstance(result, ColumnElement) and isinstance(result.type, Boolean)):
            raise ApiError(400, "invalid_filter", "The filter is not a condition (true or false per feature)",
                           where=WHERE)
        return result


def queryable_names(spec: LayerSpec) -> list[str]:
    return [f.name for f in spec.fields] + (["geometry"] if spec.geometry else [])


def _kind(value) -> str:
    if isinstance(value, ColumnElement):
        t = value.type
        kinds = ((Geometry, "geometry"), (Boolean, "boolean"), (DateTime, "timestamp"), (Date, "date"),
                 (Integer, "number"), (Float, "number"), (String, "string"))
        return next((kind for cls, kind in kinds if isinstance(t, cls)), "unknown")
    kinds = ((bool, "boolean"), (int, "number"), (float, "number"), (str, "string"), (datetime, "timestamp"),
             (date, "date"), (tuple, "interval"))
    return next((kind for cls, kind in kinds if isinstance(value, cls)), "unknown")


def _label(value) -> str:
    name = getattr(value, "name", None) if isinstance(value, ColumnElement) else None
    return f"'{name}' ({_kind(value)})" if name else f"a {_kind(value)} value"


def _same(a: str, b: str) -> bool:
    temporal = {"date", "timestamp"}
    return a == b or (a in temporal and b in temporal)


def _bad(detail: str) -> ApiError:
    return ApiError(400, "invalid_filter", detail, where=WHERE)


def _sql(value, like=None):
    """A SQL expression for a compiled operand; Python literals are bound with the other side's type."""
    if isinstance(value, ColumnElement):
        return value
    return literal(value, like.type) if isinstance(like, ColumnElement) and _kind(like) == _kind(value) \
        else literal(value)


# CQL2 temporal relations between [b1, e1] and [b2, e2]; an instant is [t, t], None is unbounded.
_RELATIONS = {
    ast.TimeBefore: [("e1", "<", "b2")], ast.TimeAfter: [("b1", ">", "e2")],
    ast.TimeMeets: [("e1", "=", "b2")], ast.TimeMetBy: [("b1", "=", "e2")],
    ast.TimeOverlaps: [("b1", "<", "b2"), ("e1", ">", "b2"), ("e1", "<", "e2")],
    ast.TimeOverlappedBy: [("b1", ">", "b2"), ("b1", "<", "e2"), ("e1", ">", "e2")],
    ast.TimeBegins: [("b1", "=", "b2"), ("e1", "<", "e2")], ast.TimeBegunBy: [("b1", "=", "b2"), ("e1", ">", "e2")],
    ast.TimeDuring: [("b1", ">", "b2"), ("e1", "<", "e2")], ast.TimeContains: [("b1", "<", "b2"), ("e1", ">", "e2")],
    ast.TimeEnds: [("b1", ">", "b2"), ("e1", "=", "e2")], ast.TimeEndedBy: [("b1", "<", "b2"), ("e1", "=", "e2")],
    ast.TimeEquals: [("b1", "=", "b2"), ("e1", "=", "e2")],
    TimeIntersects: [("b1", "<=", "e2"), ("e1", ">=", "b2")],
}
_OPS = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}
_SPATIAL = {"INTERSECTS": func.ST_Intersects, "DISJOINT": func.ST_Disjoint, "CONTAINS": func.ST_Contains,
            "WITHIN": func.ST_Within, "TOUCHES": func.ST_Touches, "CROSSES": func.ST_Crosses,
            "OVERLAPS": func.ST_Overlaps, "EQUALS": func.ST_Equals}
_DISTANCE_UNITS = {None: 1.0, "m": 1.0, "meters": 1.0, "metres": 1.0, "km": 1000.0, "kilometers": 1000.0}


def _negated(clause) -> ColumnElement:
    """NOT clause, still typed boolean (SQLAlchemy leaves NOT of AND/OR untyped)."""
    return type_coerce(not_(clause), Boolean)


def _bound(end: str, value, op: str, other) -> ColumnElement:
    """One endpoint comparison, decided statically when either endpoint is unbounded (None)."""
    a, b = value, other
    if a is None or b is None:
        rank = {"b": -1, "e": 1}  # an unbounded begin is -infinity, an unbounded end +infinity
        ra = rank[end[0]] if a is None else 0
        rb = rank[end[1]] if b is None else 0
        return true() if _OPS[op](ra, rb) else false()
    return _OPS[op](_sql(a, b), _sql(b, a))


class _Compiler(Evaluator):
    def __init__(self, spec: LayerSpec, columns, filter_crs: crs_.Crs):
        self.spec, self.columns, self.crs = spec, columns, filter_crs

    @handle(ast.Not)
    def not_(self, node, sub):
        return _negated(self._condition(sub))

    @handle(ast.And, ast.Or)
    def combination(self, node, lhs, rhs):
        return (and_ if isinstance(node, ast.And) else or_)(self._condition(lhs), self._condition(rhs))

    @handle(ast.Include)
    def include(self, node):
        return false() if node.not_ else true()

    @handle(ast.Comparison, subclasses=True)
    def comparison(self, node, lhs, rhs):
        self._comparable(lhs, rhs)
        return _OPS[node.op.value](_sql(lhs, rhs), _sql(rhs, lhs))

    @handle(ast.Between)
    def between(self, node, lhs, low, high):
        self._comparable(lhs, low)
        self._comparable(lhs, high)
        clause = and_(_sql(lhs, low) >= _sql(low, lhs), _sql(lhs, high) <= _sql(high, lhs))
        return _negated(clause) if node.not_ else clause

    @handle(ast.Like)
    def like(self, node, lhs):
        pattern = self.evaluate(node.pattern, False)
        if _kind(lhs) != "string" or _kind(pattern) != "string":
            raise _bad(f"LIKE compares text with a text pattern, not {_label(lhs)} with {_label(pattern)}")
        clause = _sql(lhs).like(_sql(pattern), escape="\\")
        return _negated(clause) if node.not_ else clause

    @handle(ast.In)
    def in_(self, node, lhs, *options):
        for option in options:
            self._comparable(lhs, option)
        clause = _sql(lhs, options[0]).in_([_sql(o, lhs) for o in options])
        return _negated(clause) if node.not_ else clause

    @handle(ast.IsNull)
    def is_null(self, node, lhs):
        return _sql(lhs).is_not(None) if node.not_ else _sql(lhs).is_(None)

    @handle(ast.TemporalPredicate, TimeIntersects, subclasses=True)
    def temporal(self, node, lhs, rhs):
        (b1, e1), (b2, e2) = self._span(lhs), self._span(rhs)
        relation = _RELATIONS.get(type(node))
        if type(node) is ast.TimeDisjoint:
            relation = _RELATIONS[TimeIntersects]
        if relation is None:
            raise _bad(f"Temporal operator {type(node).__name__} is not supported")
        ends = {"b1": b1, "e1": e1, "b2": b2, "e2": e2}
        clause = and_(*(_bound(x[0] + y[0], ends[x], op, ends[y]) for x, op, y in relation))
        return _negated(clause) if type(node) is ast.TimeDisjoint else clause

    @handle(ast.SpatialComparisonPredicate, subclasses=True)
    def spatial(self, node, lhs, rhs):
        return _SPATIAL[node.op.name](self._geometry(lhs), self._geometry(rhs), type_=Boolean)

    @handle(ast.Relate)
    def relate(self, node, lhs, rhs):
        pattern = str(node.pattern)
        if len(pattern) != 9 or set(pattern) - set("012TF*"):
            raise _bad(f"RELATE needs a 9-character DE-9IM pattern of 0 1 2 T F *, not {pattern[:20]!r}")
        return func.ST_Relate(self._geometry(lhs), self._geometry(rhs), pattern, type_=Boolean)

    @handle(ast.DistanceWithin, ast.DistanceBeyond)
    def distance(self, node, lhs, rhs):
        if not isinstance(node.distance, (int, float)) or isinstance(node.distance, bool) or node.distance < 0:
            raise _bad(f"S_DWITHIN needs a distance of zero or more metres, not {node.distance!r}")
        if node.units not in _DISTANCE_UNITS:
            raise _bad(f"Distance units must be metres or kilometres, not {node.units!r}")
        metres = node.distance * _DISTANCE_UNITS[node.units]
        # geography: the distance is in metres on the CGCS2000 ellipsoid
        near = func.ST_DWithin(func.geography(self._geometry(lhs)), func.geography(self._geometry(rhs)), metres,
                               type_=Boolean)
        return _negated(near) if isinstance(node, ast.DistanceBeyond) else near

    @handle(ast.BBox)
    def bbox(self, node, lhs):
        box_crs = self.crs if node.crs is None else crs_.parse(str(node.crs), WHERE)
        box = self._envelope(node.minx, node.miny, node.maxx, node.maxy, box_crs)
        return func.ST_Intersects(self._geometry(lhs), box, type_=Boolean)

    @handle(ast.Attribute)
    def attribute(self, node):
        name = node.name
        if name in ("geometry", "geom") and self.spec.geometry:
            return self.columns.geom
        if self.spec.field(name) is None:
            raise ApiError(400, "unknown_field", f"'{name[:100]}' is not a queryable of layer '{self.spec.id}'. "
                           f"Queryables: {', '.join(queryable_names(self.spec))}", where=WHERE)
        return self.columns[name]

    @handle(ast.Function)
    def function(self, node, *arguments):
        if node.name.lower() in ("lower", "casei") and len(arguments) == 1:
            if _kind(arguments[0]) != "string":
                raise _bad(f"CASEI takes text, not {_label(arguments[0])}")
            return func.lower(_sql(arguments[0]), type_=Text)
        if node.name.lower() in ("date", "timestamp") and len(arguments) == 1 and isinstance(arguments[0], str):
            try:  # DATE('…') and TIMESTAMP('…') written in lower case reach here as functions
                return moment(arguments[0]) if node.name.lower() == "date" else datetime.fromisoformat(arguments[0])
            except ValueError as e:
                raise _bad(f"Invalid {node.name.upper()} literal: {e}") from e
        raise _bad(f"Unknown function {node.name[:100]!r}; supported: CASEI")

    @handle(ast.Arithmetic, subclasses=True)
    def arithmetic(self, node, *arguments):
        raise _bad("Arithmetic in filters is not supported")

    @handle(str, int, float, bool, date, datetime, type(None))
    def literal(self, node):
        if isinstance(node, datetime) and node.tzinfo is None:
            raise _bad(f"TIMESTAMP('{node.isoformat()}') needs an offset, e.g. Z or +08:00")
        return node

    @handle(values.Interval)
    def interval(self, node, start, end):
        for end_ in (start, end):
            if end_ is not None and _kind(end_) not in ("date", "timestamp"):
                raise _bad(f"An interval is made of dates or timestamps, not {_label(end_)}")
        return (start, end)

    @handle(values.Geometry)
    def geometry(self, node):
        geojson = dict(node.geometry)
        srid = geojson.pop("crs", {}).get("properties", {}).get("name", "").rpartition(":")[-1]
        literal_crs = crs_.of_ewkt(int(srid), WHERE) if srid.isdigit() else self.crs
        try:
            wkt = shape(geojson).wkt
        except Exception as e:  # shapely's errors for impossible geometries
            raise _bad(f"Invalid geometry literal: {e}") from e
        return type_coerce(crs_.to_storage(func.ST_GeomFromText(wkt, literal_crs.srid), literal_crs),
                           Geometry(srid=SRID))

    @handle(values.Envelope)
    def envelope(self, node):
        return self._envelope(min(node.x1, node.x2), min(node.y1, node.y2), max(node.x1, node.x2),
                              max(node.y1, node.y2), self.crs)

    def _envelope(self, minx, miny, maxx, maxy, box_crs: crs_.Crs):
        numbers = (minx, miny, maxx, maxy)
        if not all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in numbers):
            raise _bad("A bounding box has four numbers")
        if box_crs.northing_first:  # given in the CRS's axis order: (min north, min east, max north, max east)
            minx, miny, maxx, maxy = miny, minx, maxy, maxx
        return type_coerce(crs_.envelope(minx, miny, maxx, maxy, box_crs), Geometry(srid=SRID))

    def _condition(self, value):
        if not (isinstance(value, ColumnElement) and isinstance(value.type, Boolean)):
            raise _bad(f"AND, OR and NOT combine conditions, not {_label(value)}")
        return value

    def _comparable(self, a, b):
        ka, kb = _kind(a), _kind(b)
        if "geometry" in (ka, kb):
            raise _bad("Geometries are compared with spatial functions such as S_INTERSECTS")
        if not _same(ka, kb):
            raise _bad(f"Cannot compare {_label(a)} with {_label(b)}")

    def _span(self, value) -> tuple:
        kind = _kind(value)
        if kind == "interval":
            return value
        if kind not in ("date", "timestamp"):
            raise _bad(f"Temporal operators take dates, timestamps or intervals, not {_label(value)}")
        return (value, value)

    def _geometry(self, value):
        if _kind(value) != "geometry":
            raise _bad(f"Spatial operators take geometries, not {_label(value)}")
        return value
