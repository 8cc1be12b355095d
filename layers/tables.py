"""SQLAlchemy Core tables for the layers, built from the catalog, and the layer as of a moment.

Queries are composed with these objects (never by pasting user input into SQL); items,
spatial queries and tiles all read a layer through `layer_at()` so `as_of` works everywhere.
"""

from datetime import datetime
from geoalchemy2 import Geometry
from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Float, Integer, MetaData, Table, Text, func,
                        literal, select, union_all)
from sqlalchemy.dialects.postgresql import TSTZRANGE
from sqlalchemy.sql import Select, Selectable

from layers.catalog import SRID, LayerSpec

metadata = MetaData()
TYPES = {"text": Text, "integer": Integer, "real": Float, "boolean": Boolean, "date": Date,
         "timestamptz": lambda: DateTime(timezone=True)}


def _columns(spec: LayerSpec) -> list[Column]:
    columns = [Column("fid", BigInteger, primary_key=True)]
    columns += [Column(f.name, TYPES[f.type]()) for f in spec.fields]
    if spec.geometry:
        columns.append(Column("geom", Geometry(spec.geometry, srid=SRID, spatial_index=False)))
    columns += [Column("version", Integer), Column("updated_at", DateTime(timezone=True))]
    return columns


# each layer's feature count, kept by the database's triggers (migration 0012)
feature_count = Table("feature_count", metadata, Column("layer", Text, primary_key=True),
                      Column("features", BigInteger), schema="twin")


_made: dict[str, LayerSpec] = {}  # table key → the spec it was made from (a spec changes at run time)


def _table(spec: LayerSpec, schema: str, *extra: Column) -> Table:
    key = f"{schema}.{spec.id}"
    known = metadata.tables.get(key)
    if known is not None and _made[key] is spec:
        return known
    if known is not None:
        metadata.remove(known)
    _made[key] = spec
    return Table(spec.id, metadata, *_columns(spec), *extra, schema=schema)


def current(spec: LayerSpec) -> Table:
    """The layer's current state: `layers.<id>`."""
    return _table(spec, "layers")


def history(spec: LayerSpec) -> Table:
    """Superseded versions with their validity range: `history.<id>`."""
    return _table(spec, "history", Column("valid", TSTZRANGE))


def layer_at(spec: LayerSpec, as_of: datetime | None = None) -> Selectable:
    """The layer now, or exactly as it was at `as_of`, as a FROM-able selectable with the same columns."""
    if as_of is None:
        return current(spec)
    return union_all(*parts(spec, as_of)).subquery(f"{spec.id}_as_of")


def parts(spec: LayerSpec, as_of: datetime) -> list[Select]:
    """The layer as it was at `as_of` in two disjoint parts with the current table's columns: the current rows
    already valid then, and the superseded versions valid then."""
    table, past = current(spec), history(spec)
    moment = literal(as_of, DateTime(timezone=True))
    return [select(*table.columns).where(table.c.updated_at <= moment),
            select(*(past.c[c.name] for c in table.columns)).where(past.c.valid.op("@>")(moment))]


def bbox_filter(geom_column, bbox: tuple[float, float, float, float]):
    """Index-using envelope test in the storage CRS."""
    return geom_column.op("&&")(func.ST_MakeEnvelope(*bbox, SRID))
