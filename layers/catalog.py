"""The layer catalog: what layers exist, their typed fields and who owns them.

A layer is a spec, in the schema below (TOML or JSON). The database's `twin.layer` (migration 0019)
is the truth: the layers that ship with the project (`layers/specs/*.toml`) are registered in it by
`twin db upgrade`, and a department registers its own at run time (`layers.registry`). Each process
keeps the catalog in memory: the shipped specs until `install` gives it the database's, and then
whatever the registry's listener installs as the catalog changes (twin.access follows it).

What a layer does beyond storing features is declared, never keyed on its name: `cluster`, `kind =
"series"` with its `stations`, `classify = "gb3838"`, its `network` role in the drainage graph, the `area`
(district, street, grid) it divides the map into.
"""

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_DIR = Path(__file__).parent / "specs"
SCHEMA = "layers"
SRID = 4490  # CGCS2000, the national geodetic frame; every geometry is stored in it
NAME = r"^[a-z][a-z0-9_]{0,62}$"

FieldType = Literal["text", "integer", "real", "boolean", "date", "timestamptz"]
# a layer's part in the drainage network (layers.drainage_graph, layers.drainage_trace)
NetworkRole = Literal["pipes", "manholes", "pump_stations", "treatment_plants", "outfalls", "gates", "rivers",
                      "stations", "sources"]

SQL_TYPES = {
    "text": "text",
    "integer": "integer",
    "real": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamptz": "timestamptz",
}


class Title(BaseModel):
    model_config = ConfigDict(extra="forbid")
    zh: str = Field(min_length=1, max_length=200)
    en: str = Field(min_length=1, max_length=200)


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME)
    type: FieldType
    zh: str = Field(min_length=1, max_length=200)
    unit: str | None = None
    required: bool = False
    values: list[str] | None = None
    min: float | None = None
    max: float | None = None
    check: str | None = None  # name of a code validator in layers.codes
    aliases: list[str] = []  # source column names the ETL maps to this field, beyond its name and label


class LayerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=NAME)
    title: Title
    kind: Literal["vector", "raster", "series"]
    geometry: Literal["Point", "MultiPoint", "MultiLineString", "MultiPolygon"] | None = None
    key: list[str] = []
    department: str = Field(min_length=1, max_length=100)
    group: str = Field(min_length=1, max_length=100)
    private: bool = False  # reads need a key too (twin.access); an admin may switch it at run time
    minzoom: int = Field(0, ge=0, le=24)
    maxzoom: int = Field(22, ge=0, le=24)
    style: str | None = None
    time_field: str | None = None
    cluster: bool = False  # points drawn as clusters at low zooms (tiles.sources)
    cluster_counts: bool = False  # points counted per fine cell by triggers (twin.tile_cell): for dense layers
    classify: Literal["gb3838"] | None = None  # readings classed by GB 3838-2002 (layers.water_class)
    stations: str | None = None  # of a series: the point layer its readings belong to, by key[0] = its `code`
    network: NetworkRole | None = None
    area: Literal["district", "street", "grid"] | None = None  # the areas cases and scoped keys are placed in
    fields: list[FieldSpec] = []

    @property
    def table(self) -> str:
        return f"{SCHEMA}.{self.id}"

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    @property
    def category(self) -> str | None:
        """The attribute a cluster reports (its most common value): the first enumerated field, else class_name."""
        enumerated = next((f.name for f in self.fields if f.values), None)
        return enumerated or (self.field("class_name") and "class_name")


def read_spec(path: Path) -> LayerSpec:
    return LayerSpec(**tomllib.loads(path.read_text("utf-8")))


def shipped() -> dict[str, LayerSpec]:
    """The layers that ship with the project, as their files say."""
    specs = [read_spec(p) for p in sorted(SPEC_DIR.glob("*.toml"))]
    return {s.id: s for s in specs}


_catalog: dict[str, LayerSpec] = {}


def install(specs: dict[str, LayerSpec]) -> dict[str, LayerSpec]:
    """Make `specs` the catalog of this process; a spec equal to the one it replaces stays the same object (tables
    and plans built from it are kept). Returns the layers whose spec changed, came or went."""
    global _catalog
    old = _catalog or shipped()
    kept = {i: old[i] if old.get(i) == s else s for i, s in specs.items()}
    changed = {i: s for i, s in kept.items() if old.get(i) is not s} | {i: old[i] for i in old.keys() - kept.keys()}
    _catalog = kept
    return changed


def catalog() -> dict[str, LayerSpec]:
    if not _catalog:
        install(shipped())
    return _catalog


def get_layer(layer_id: str) -> LayerSpec | None:
    return catalog().get(layer_id)


def vector_layers() -> list[LayerSpec]:
    return [s for s in catalog().values() if s.kind == "vector"]


def with_role(role: str) -> LayerSpec | None:
    """The layer that plays `role` in the drainage network."""
    return next((s for s in catalog().values() if s.network == role), None)


def with_area(area: str) -> LayerSpec | None:
    """The layer of districts, streets or management grids."""
    return next((s for s in catalog().values() if s.area == area), None)


def series_layers() -> list[LayerSpec]:
    return [s for s in catalog().values() if s.kind == "series"]
