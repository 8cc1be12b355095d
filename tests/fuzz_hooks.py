"""Schemathesis hooks: the app's own OpenAPI document, with its identifier path parameters narrowed to
the ones that exist, so generated requests reach the code behind the 404s (negative generation still
sends names outside them). Tiles are steered onto the district. Used by tests/test_fuzz.py and by a
long run from the command line: `SCHEMATHESIS_HOOKS=tests.fuzz_hooks st run …` (see docs/reliability.md).
"""

import schemathesis

from etl.jobs import JOBS
from layers.catalog import catalog
from tiles.tms import GRIDS
from twin.settings import get_settings

DISTRICT = (120.45, 31.53)  # a point of Xinwu district
MAX_ZOOM = 18


def _styles() -> list[str]:
    return sorted(p.stem for p in get_settings().styles_dir.rglob("*.json"))


def _layers(raster: bool) -> dict:
    return {"type": "string", "enum": sorted(s.id for s in catalog().values() if (s.kind == "raster") == raster)}


def _identifiers() -> dict[str, dict]:
    grids = sorted(GRIDS.list())
    return {
        "tms": {"type": "string", "enum": grids},
        "tileMatrixSetId": {"type": "string", "enum": grids},
        "job": {"type": "string", "enum": list(JOBS)},
        "name": {"type": "string", "enum": _styles()},
        "fid": {"type": "integer", "minimum": 1, "maximum": 400},
        "run_id": {"type": "integer", "minimum": 1, "maximum": 20},
        "z": {"type": "integer", "minimum": 0, "maximum": MAX_ZOOM},
    }


@schemathesis.hook
def before_load_schema(context, raw_schema: dict) -> None:
    known = _identifiers()
    for path, operations in raw_schema.get("paths", {}).items():
        layers = _layers(raster=path.startswith("/raster/"))
        for operation in operations.values():
            for parameter in operation.get("parameters", []) if isinstance(operation, dict) else []:
                if parameter.get("in") == "path" and parameter.get("name") in {"layer", "collectionId", *known}:
                    named_layer = parameter["name"] in ("layer", "collectionId")  # OGC's name under /collections
                    parameter["schema"] = layers if named_layer else known[parameter["name"]]


@schemathesis.hook
def map_path_parameters(context, path_parameters: dict) -> dict:
    """x and y of a tile: the district's tile at that zoom, nudged by the generated x and y (−1, 0 or +1)."""
    if not isinstance(path_parameters, dict):
        return path_parameters
    z, x, y = (path_parameters.get(k) for k in ("z", "x", "y"))
    grid = path_parameters.get("tms") or path_parameters.get("tileMatrixSetId")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (z, x, y)) or grid not in GRIDS.list():
        return path_parameters
    if not 0 <= z <= MAX_ZOOM:
        return path_parameters
    home = GRIDS.get(grid).tile(*DISTRICT, z)
    return path_parameters | {"x": home.x + x % 3 - 1, "y": home.y + y % 3 - 1}

