"""The ETL jobs. A job is a module naming the layers it loads, the source field aliases it knows
beyond the spec's own names, Chinese labels and aliases, and optional hooks:

- `prepare(frame) -> frame`: reshape raw attributes before validation (e.g. long → wide);
- `enrich(conn, frame) -> (frame, rejects)`: derive values that need the database after validation.
- `locate(conn, frame) -> (geometry, problems)`: draw the geometry of a file that has none from the
  database (each row's shape in the storage CRS, or None and the reason in `problems`).
"""

import importlib
from types import ModuleType, SimpleNamespace

from layers.catalog import get_layer

JOBS = ("boundaries", "city_components", "imagery", "metro", "monitoring_stations", "pollution_sources",
        "rivers", "roads", "water_quality", "drainage_nodes", "drainage_pipes")


def get_job(name: str) -> ModuleType | SimpleNamespace | None:
    """The job of that name; else, for any other feature layer of the catalog (a registered one), the generic job
    that loads it by its spec alone."""
    if name in JOBS:
        return importlib.import_module(f"etl.jobs.{name}")
    spec = get_layer(name)
    return SimpleNamespace(LAYERS=(spec.id,), ALIASES={}) if spec is not None and spec.kind != "raster" else None
