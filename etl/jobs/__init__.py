"""The built-in ETL jobs. A job is a module naming the layers it loads, the source field
aliases it knows beyond the spec's own names and Chinese labels, and optional hooks:

- `prepare(frame) -> frame`: reshape raw attributes before validation (e.g. long → wide);
- `enrich(conn, frame) -> (frame, rejects)`: derive values that need the database after validation.
- `locate(conn, frame) -> (geometry, problems)`: draw the geometry of a file that has none from the
  database (each row's shape in the storage CRS, or None and the reason in `problems`).
"""

import importlib
from types import ModuleType

JOBS = ("boundaries", "city_components", "imagery", "metro", "monitoring_stations", "pollution_sources",
        "rivers", "roads", "water_quality", "drainage_nodes", "drainage_pipes")


def get_job(name: str) -> ModuleType | None:
    return importlib.import_module(f"etl.jobs.{name}") if name in JOBS else None
