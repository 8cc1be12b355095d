"""A layer's queryables (OGC API Features Part 3) as a JSON Schema, built from its spec."""

from layers.catalog import FieldSpec, LayerSpec

_TYPES = {"text": {"type": "string"}, "integer": {"type": "integer"}, "real": {"type": "number"},
          "boolean": {"type": "boolean"}, "date": {"type": "string", "format": "date"},
          "timestamptz": {"type": "string", "format": "date-time"}}
_GEOMETRY_FORMATS = {"Point": "geometry-point", "MultiPoint": "geometry-multipoint",
                     "MultiLineString": "geometry-multilinestring", "MultiPolygon": "geometry-multipolygon"}


def _property(field: FieldSpec) -> dict:
    schema = {"title": field.zh, **_TYPES[field.type]}
    if field.values:
        schema["enum"] = list(field.values)
    if field.min is not None:
        schema["minimum"] = field.min
    if field.max is not None:
        schema["maximum"] = field.max
    if field.unit:
        schema["x-ogc-unit"] = field.unit
    return schema


def schema(spec: LayerSpec, url: str) -> dict:
    properties = {}
    if spec.geometry:
        properties["geometry"] = {"title": "几何", "format": _GEOMETRY_FORMATS[spec.geometry],
                                  "x-ogc-role": "primary-geometry"}
    properties |= {f.name: _property(f) for f in spec.fields}
    if spec.time_field:
        properties[spec.time_field]["x-ogc-role"] = "primary-instant"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": url, "type": "object",
            "title": spec.title.zh, "description": spec.title.en, "properties": properties,
            "additionalProperties": False,
            # The draft's list, which GDAL's OAPIF driver reads to decide what of a filter it sends us. It
            # writes dates as bare strings, which CQL2 compares only as DATE(…), so it keeps those to itself.
            "queryables": [{"id": f.name} for f in spec.fields if f.type not in ("date", "timestamptz")]}
