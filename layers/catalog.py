"""The layer catalog: what layers exist, their typed fields and who owns them.

Specs are data (`layers/specs/*.toml`), one file a layer; adding a layer is adding a
spec (and a migration for its table).
"""

import tomllib
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

SPEC_DIR = Path(__file__).parent / "specs"
SCHEMA = "layers"
SRID = 4490  # CGCS2000, the national geodetic frame; every geometry is stored in it

FieldType = Literal["text", "integer", "real", "boolean", "date", "timestamptz"]

SQL_TYPES = {
    "text": "text",
    "integer": "integer",
    "real": "double precision",
    "boolean": "boolean",
    "date": "date",
    "timestamptz": "timestamptz",
}


class Title(BaseModel):
    zh: str
    en: str


class FieldSpec(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    type: FieldType
    zh: str
    unit: str | None = None
    required: bool = False
    values: list[str] | None = None
    min: float | None = None
    max: float | None = None
    check: str | None = None  # name of a code validator in layers.codes


class LayerSpec(BaseModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    title: Title
    kind: Literal["vector", "raster", "series"]
    geometry: Literal["Point", "MultiPoint", "MultiLineString", "MultiPolygon"] | None = None
    key: list[str] = []
    department: str
    group: str
    private: bool = False  # reads need a key too (twin.access); an admin may switch it at run time
    minzoom: int = Field(0, ge=0, le=24)
    maxzoom: int = Field(22, ge=0, le=24)
    style: str | None = None
    time_field: str | None = None
    fields: list[FieldSpec] = []

    @property
    def table(self) -> str:
        return f"{SCHEMA}.{self.id}"

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)


@cache
def catalog() -> dict[str, LayerSpec]:
    specs = [LayerSpec(**tomllib.loads(p.read_text("utf-8"))) for p in sorted(SPEC_DIR.glob("*.toml"))]
    return {s.id: s for s in specs}


def get_layer(layer_id: str) -> LayerSpec | None:
    return catalog().get(layer_id)


def vector_layers() -> list[LayerSpec]:
    return [s for s in catalog().values() if s.kind == "vector"]
