"""The JSON bodies of the spatial queries, and the simple feature selector some of them take.

A selector is `{"layer": "rivers", "where": {"name": "伯渎港"}}`: every key a field of the
layer (or `fid`), every value one value or a list of values (any of them), null for "not set".
"""

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, \
    TypeAdapter, ValidationError, model_validator
from sqlalchemy import or_

from layers.catalog import LayerSpec
from twin.errors import ApiError

MAX_DISTANCE_M = 50_000.0
MAX_BUFFER_M = 5_000.0
MAX_K = 1000
MAX_LAYERS = 20
MAX_SELECTOR_VALUES = 1000
MAX_RESULTS = 10_000
MAX_OFFSET = 10_000_000

# Sub-millimetre distances mean nothing on a map, and tiny ones (5e-324) underflow PostgreSQL's float arithmetic.
ToMillimetres = AfterValidator(lambda metres: round(metres, 3))
Metres = Annotated[float, Field(ge=0, le=MAX_DISTANCE_M, allow_inf_nan=False,
                                description=f"metres, at most {MAX_DISTANCE_M:g}"), ToMillimetres]
LayerNames = Annotated[list[str], Field(min_length=1, max_length=MAX_LAYERS, description="layer ids")]
GeoJsonGeometry = Annotated[dict[str, Any], Field(description="a GeoJSON geometry in `crs`",
                                                  examples=[{"type": "Point", "coordinates": [120.45, 31.49]}])]
PointInput = Annotated[dict[str, Any] | list[Any], Field(description="a GeoJSON Point, or [x, y], in `crs`",
                                                          examples=[[120.45, 31.49]])]
Text = Annotated[StrictStr, Field(pattern=r"^[^\x00]*$")]  # PostgreSQL text holds no NUL
Scalar = StrictBool | StrictInt | float | Text | None


class Query(BaseModel):
    model_config = ConfigDict(extra="forbid")
    as_of: AwareDatetime | None = Field(None, description="RFC 3339 moment: answer from the layers as they were then")
    crs: str = Field("CRS84", description="CRS of the geometries sent and returned: CRS84, EPSG:4326, EPSG:4490, "
                                          "EPSG:4549 (CGCS2000 GK 120E), EPSG:3857 …")
    geometries: bool = Field(True, description="false: features without geometries (smaller answers)")


class Nearest(Query):
    point: PointInput
    layers: LayerNames
    k: int = Field(10, ge=1, le=MAX_K, description="features per layer")
    max_distance: Metres | None = None


class Selector(BaseModel):
    model_config = ConfigDict(extra="forbid")
    layer: str
    where: dict[str, Scalar | list[Scalar]] = Field({}, description="field: value or [values]; {} selects all")


class Within(Query):
    layer: str
    distance: Metres
    geometry: GeoJsonGeometry | None = None
    of: Selector | None = Field(None, description="measure from these features instead of a geometry")
    limit: int | None = Field(None, ge=1, le=MAX_RESULTS, description=f"a page of at most this many features, nearest "
                              f"first; without it all of them, when there are at most {MAX_RESULTS}")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="features skipped before the page (see `next`)")

    @model_validator(mode="after")
    def one_target(self):
        if (self.geometry is None) == (self.of is None):
            raise ValueError("give exactly one of geometry and of")
        return self


class Intersects(Query):
    layers: LayerNames
    geometry: GeoJsonGeometry = Field(description="a GeoJSON Polygon or MultiPolygon in `crs`")
    group_by: dict[str, list[str]] | None = Field(
        None, description="layer: fields to count by; default each layer's enumerated fields",
        examples=[{"city_components": ["class_name", "status"]}])
    features: bool = Field(True, description="false: the counts alone")


class At(Query):
    point: PointInput
    layers: list[str] | None = Field(None, max_length=MAX_LAYERS, description="polygon layers; default all")
    geometries: bool = Field(False, description="true: include the polygons' geometries")


class Aggregate(Query):
    layer: str = Field(description="the layer counted, e.g. city_components")
    by: str = Field(description="the polygon layer it is counted in, e.g. streets")
    group_by: str | None = Field(None, description="a field of `layer` to split the figures by, e.g. status")
    sum: str | None = Field(None, description="a numeric field of `layer` to sum besides counting")
    where: dict[str, Scalar | list[Scalar]] = Field({}, description="count only the features of `layer` with "
                                                                    "these field values (field: value or [values])")


class Trace(Query):
    point: PointInput | None = Field(None, description="trace the rivers from this point (give point or feature)")
    feature: Selector | None = Field(None, description="trace the drainage network (rivers, outfalls, pipes) from "
                                     "this one feature: a monitoring station, manhole, pipe, pump station, treatment "
                                     "plant, outfall or pollution source", examples=[
                                         {"layer": "pump_stations", "where": {"code": "XWBZ001"}}])
    direction: Literal["upstream", "downstream", "service_area"] = Field(
        description="service_area (a pump station or pipe): what loses its way out if it fails")
    distance: Annotated[float, ToMillimetres] | None = Field(None, ge=0.001, le=MAX_DISTANCE_M, allow_inf_nan=False,
                                                             description=f"metres along the rivers (or the network), "
                                                                         f"at most {MAX_DISTANCE_M:g}; required "
                                                                         "with point, default the whole network")
    limit: int = Field(MAX_RESULTS, ge=1, le=MAX_RESULTS, description="network traces: at most this many features "
                       "of each layer, nearest first (numberMatched says how many were reached)")
    buffer: Annotated[float, ToMillimetres] = Field(500.0, ge=0, le=MAX_BUFFER_M, allow_inf_nan=False,
                                                    description="pollution sources within this many metres of the "
                                                                "traced reaches")
    snap: Annotated[float, ToMillimetres] = Field(200.0, ge=0.001, le=2000, allow_inf_nan=False,
                                                  description="the river must pass within this many metres of the "
                                                              "point")
    station_distance: Annotated[float, ToMillimetres] = Field(50.0, ge=0, le=500, allow_inf_nan=False,
                                                              description="stations within this many metres of a "
                                                                          "reach are on it")

    @model_validator(mode="after")
    def one_start(self):
        if (self.point is None) == (self.feature is None):
            raise ValueError("give exactly one of point and feature")
        if self.point is not None and (self.distance is None or self.direction == "service_area"):
            raise ValueError("a river trace from a point goes upstream or downstream and needs a distance")
        return self


_VALUE_TYPES = {"text": StrictStr, "integer": StrictInt, "real": StrictInt | float, "boolean": StrictBool,
                "date": date, "timestamptz": AwareDatetime}
_ADAPTERS = {kind: TypeAdapter(t) for kind, t in _VALUE_TYPES.items()}


def conditions(spec: LayerSpec, src, where: dict, at: str) -> list:
    """SQL conditions for a selector's `where`, the values checked against the fields' types."""
    found = []
    for name, given in where.items():
        field = spec.field(name)
        if name != "fid" and field is None:
            raise ApiError(422, "unknown_field", f"Layer {spec.id} has no field {name[:100]!r}; its fields: "
                           f"{', '.join(f.name for f in spec.fields)}.", where=f"{at}.{name[:100]}")
        kind = "integer" if name == "fid" else field.type
        values = given if isinstance(given, list) else [given]
        if not 0 < len(values) <= MAX_SELECTOR_VALUES:
            raise ApiError(400, "invalid_parameter", f"Give 1 to {MAX_SELECTOR_VALUES} values.",
                           where=f"{at}.{name[:100]}")
        try:
            typed = [None if v is None else _ADAPTERS[kind].validate_python(v) for v in values]
        except ValidationError as e:
            raise ApiError(400, "invalid_parameter", f"Not a {kind} value: {e.errors()[0]['msg']}.",
                           where=f"{at}.{name[:100]}") from e
        column = src.c[name]
        present = [v for v in typed if v is not None]
        either = ([column.in_(present)] if present else []) + ([column.is_(None)] if len(present) < len(typed) else [])
        found.append(or_(*either))
    return found
