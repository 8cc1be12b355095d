"""$filter: OData text parsed by odata-query, turned here into a parameterised SQLAlchemy expression.

Identifiers are the entity's SensorThings properties; `properties/x` (and `unitOfMeasurement/x`) read a
JSON member as text, compared as a number when the other side is one; a path through to-one navigation
properties (`Datastream/Thing/name`) is a correlated subquery. Besides OData's functions, the SensorThings
ones: substringof, st_* and geo.* on the geometry properties (WKT literals `geography'…'`, in the storage
CRS's longitude/latitude). Paths through to-many navigation properties are refused.
"""

from odata_query import ast, exceptions
from odata_query.grammar import ODataLexer, ODataParser
from odata_query.sqlalchemy.core import AstToSqlAlchemyCoreVisitor
from sqlalchemy import Float, cast, func, literal, select

from layers.catalog import SRID
from sensing.sta.entities import ENTITIES, Entity
from twin.errors import ApiError

SPATIAL = {"st_equals": "ST_Equals", "st_disjoint": "ST_Disjoint", "st_touches": "ST_Touches",
           "st_within": "ST_Within", "st_overlaps": "ST_Overlaps", "st_crosses": "ST_Crosses",
           "st_intersects": "ST_Intersects", "st_contains": "ST_Contains", "intersects": "ST_Intersects"}
STA_ONLY = set(SPATIAL) | {"substringof", "st_relate"}
JSON_COLUMNS = {"properties", "unit_of_measurement"}


def _bad(detail: str) -> ApiError:
    return ApiError(400, "invalid_filter", f"$filter: {detail}", where="query.$filter")


def _tokens(text: str) -> list:
    """The lexer's tokens, SensorThings' own functions marked (namespace 'sta') so the OData parser, which
    checks only the functions it knows, takes them as calls."""
    tokens = list(ODataLexer().tokenize(text))
    for i, token in enumerate(tokens):
        if (token.type == "ODATA_IDENTIFIER" and not token.value.namespace and token.value.name.lower() in STA_ONLY
                and i + 1 < len(tokens) and tokens[i + 1].type == "("):
            token.value = ast.Identifier(token.value.name.lower(), ("sta",))
    return tokens


class _Visitor(AstToSqlAlchemyCoreVisitor):
    def __init__(self, entity: Entity, source, hidden: frozenset[str]):
        super().__init__(source)
        self.entity, self.json_text, self.hidden = entity, set(), hidden

    def visit_Identifier(self, node: ast.Identifier):
        column = self.entity.properties.get(node.name)
        if column is None:
            raise _bad(f"{node.name!r} is not a property of {self.entity.name}; it has "
                       f"{', '.join(self.entity.properties)}")
        return self.table.c[column]

    def visit_Attribute(self, node: ast.Attribute):
        path = []
        while isinstance(node, ast.Attribute):
            path.insert(0, node.attr)
            node = node.owner
        path.insert(0, node.name)
        return self._path(self.entity, self.table, path)

    def _path(self, entity: Entity, source, path: list[str]):
        head = path[0]
        column = entity.properties.get(head)
        if column in JSON_COLUMNS:
            value = source.c[column][tuple(path[1:])].astext if len(path) > 2 else source.c[column][path[1]].astext
            self.json_text.add(id(value))
            return value
        nav = entity.navs.get(head)
        if nav is None:
            raise _bad(f"{head!r} is neither a navigation nor a JSON property of {entity.name}")
        if nav.many:
            raise _bad(f"{head!r} of {entity.name} is a collection; filters follow to-one paths only")
        target = ENTITIES[nav.target]
        inner = target.source(self.hidden).alias()
        visitor = _Visitor(target, inner, self.hidden)
        value = visitor._path(target, inner, path[1:]) if len(path) > 2 else visitor.visit_Identifier(
            ast.Identifier(path[1]))
        self.json_text |= visitor.json_text
        return select(value).where(inner.c.id == source.c[nav.fk]).scalar_subquery()

    def visit_Compare(self, node: ast.Compare):
        left, right = self.visit(node.left), self.visit(node.right)
        numeric = (ast.Integer, ast.Float)
        if id(left) in self.json_text and isinstance(node.right, numeric):
            left = cast(left, Float)
        if id(right) in self.json_text and isinstance(node.left, numeric):
            right = cast(right, Float)
        return self.visit(node.comparator)(left, right)

    def visit_Geography(self, node: ast.Geography):
        return func.ST_GeomFromText(literal(node.val), SRID)

    def visit_Call(self, node: ast.Call):
        name = node.func.name.lower()
        args = node.args
        if name == "substringof":
            return self.visit(args[1]).contains(self.visit(args[0]))
        if name in SPATIAL:
            return getattr(func, SPATIAL[name])(*map(self.visit, args))
        if name == "st_relate":
            return func.ST_Relate(*map(self.visit, args))
        if name == "distance":
            return func.ST_Distance(*map(self.visit, args))
        if name == "length" and node.func.namespace == ("geo",):
            return func.ST_Length(self.visit(args[0]))
        return super().visit_Call(node)


def where(entity: Entity, source, text: str, hidden: frozenset[str] = frozenset()):
    """The SQL condition of `text` on `source` (the entity's selectable); `hidden`: the layers the caller may not
    read (sensing.sta.entities)."""
    try:
        tree = ODataParser().parse(iter(_tokens(text)))
        return _Visitor(entity, source, hidden).visit(tree)
    except ApiError:
        raise
    except exceptions.ODataException as e:
        raise _bad(str(e)) from None
    except (NotImplementedError, TypeError, AttributeError, KeyError, IndexError) as e:
        raise _bad(f"cannot be evaluated ({type(e).__name__}: {e})") from None
