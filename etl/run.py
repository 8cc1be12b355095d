"""Running an ETL job: read → map fields → convert CRS → validate → merge, all accounted for.

Every run is recorded in `twin.etl_run`. The merge, the quarantine rows and the final
counts commit in one transaction, so a run that fails or is killed leaves the layers
as they were; running it again completes it.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Engine

from etl.crs import to_storage
from etl.jobs import JOBS, get_job
from etl.readers import Dataset, read
from layers.catalog import LayerSpec, get_layer
from layers.store import merge, set_write_context
from layers.validate import validate

log = logging.getLogger("twin.etl")
Progress = Callable[[str], None]


class JobError(ValueError):
    """The job cannot run as asked (unknown job or layer, layer not loadable by this job)."""


@dataclass
class RunResult:
    run_id: int
    status: str
    counts: dict
    error: str | None = None


def resolve(job_name: str, layer: str | None) -> tuple[object, LayerSpec]:
    job = get_job(job_name)
    if job is None:
        raise JobError(f"unknown job {job_name!r}; jobs: {', '.join(JOBS)}")
    layer = layer or job.LAYERS[0]
    if layer not in job.LAYERS:
        raise JobError(f"job {job_name!r} loads {', '.join(job.LAYERS)}, not {layer!r}")
    return job, get_layer(layer)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def start_run(engine: Engine, job: str, layer: str, mode: str, file_name: str | None, sha: str | None,
              department: str | None, actor: str) -> int:
    with engine.begin() as conn:
        return conn.execute(text(
            "INSERT INTO twin.etl_run (job, layer, mode, file_name, file_sha256, department, actor) "
            "VALUES (:job, :layer, :mode, :file, :sha, :department, :actor) RETURNING id"),
            {"job": job, "layer": layer, "mode": mode, "file": file_name, "sha": sha,
             "department": department, "actor": actor}).scalar_one()


def _fail(engine: Engine, run_id: int, error: str) -> RunResult:
    with engine.begin() as conn:
        conn.execute(text("UPDATE twin.etl_run SET status = 'failed', finished_at = clock_timestamp(), error = :e "
                          "WHERE id = :id"), {"id": run_id, "e": error})
    log.warning("ETL run %s failed: %s", run_id, error)
    return RunResult(run_id, "failed", {}, error)


def _map_fields(job, spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    aliases = {f.name: f.name for f in spec.fields} | {f.zh.lower(): f.name for f in spec.fields}
    aliases |= {k.lower(): v for k, v in job.ALIASES.items()}
    renamed, taken = {}, set()
    for column in frame.columns:
        target = aliases.get(str(column).strip().lower())
        if target and target not in taken:
            renamed[column] = target
            taken.add(target)
    return frame.rename(columns=renamed)


def _raw_record(dataset: Dataset, label) -> dict:
    record = {k: (None if pd.isna(v) else v) for k, v in dataset.attributes.loc[label].items()}
    if dataset.geometry is not None:
        geom = dataset.geometry.loc[label]
        record["geometry"] = None if geom is None else shapely.to_wkt(geom, rounding_precision=8)
    return record


def execute(engine: Engine, job_name: str, dataset: Dataset, run_id: int, *, layer: str | None = None,
            crs: str | None = None, mode: str = "upsert", actor: str = "cli",
            progress: Progress = lambda stage: None) -> RunResult:
    """Load an already read dataset under an open run record."""
    try:
        job, spec = resolve(job_name, layer)
        progress("mapping fields")
        frame = _map_fields(job, spec, dataset.attributes.copy())
        if hasattr(job, "prepare"):
            frame = job.prepare(frame)
        geometry = None
        if spec.geometry:
            if dataset.geometry is None:
                raise JobError(f"{dataset.source} has no geometry or recognisable coordinate columns "
                               "(e.g. 经度/纬度, lon/lat, x/y)")
            progress("converting coordinates")
            geometry = to_storage(dataset.geometry.reindex(frame.index), dataset.crs, crs)
        progress("validating")
        checked = validate(spec, frame, geometry)
        with engine.begin() as conn:
            rejects = dict(checked.rejects)
            usable = checked.frame
            if hasattr(job, "enrich"):
                usable, more = job.enrich(conn, usable)
                rejects.update(more)
            progress("loading")
            set_write_context(conn, actor=actor, run_id=run_id)
            counts = merge(conn, spec, usable, replace=(mode == "replace"))
            _quarantine(conn, run_id, spec.id, dataset, rejects)
            totals = {"read": len(dataset.attributes), "inserted": counts.inserted, "updated": counts.updated,
                      "unchanged": counts.unchanged, "deleted": counts.deleted, "repaired": checked.repaired,
                      "quarantined": len(rejects)}
            conn.execute(text(
                "UPDATE twin.etl_run SET status = 'succeeded', finished_at = clock_timestamp(), read = :read, "
                "inserted = :inserted, updated = :updated, unchanged = :unchanged, deleted = :deleted, "
                "repaired = :repaired, quarantined = :quarantined WHERE id = :id"), totals | {"id": run_id})
    except (ValueError, OSError) as e:  # the input or the request is at fault: say so, keep the layer as it was
        return _fail(engine, run_id, str(e))
    log.info("ETL run %s (%s → %s) succeeded: %s", run_id, job_name, spec.id, totals)
    return RunResult(run_id, "succeeded", totals)


def _quarantine(conn, run_id: int, layer: str, dataset: Dataset, rejects: dict) -> None:
    if not rejects:
        return
    position = {label: n for n, label in enumerate(dataset.attributes.index, start=1)}
    conn.execute(text(
        "INSERT INTO twin.quarantine (run_id, layer, source_file, row_number, record, reason) "
        "VALUES (:run, :layer, :file, :row, CAST(:record AS jsonb), :reason)"),
        [{"run": run_id, "layer": layer, "file": dataset.source, "row": position.get(label),
          "record": json.dumps(_raw_record(dataset, label), ensure_ascii=False, default=str), "reason": reason}
         for label, reason in sorted(rejects.items(), key=lambda item: position.get(item[0], 0))])


def run_file(engine: Engine, job_name: str, path: Path, *, layer: str | None = None, crs: str | None = None,
             mode: str = "upsert", department: str | None = None, actor: str = "cli",
             source_layer: str | None = None, progress: Progress = lambda stage: None) -> RunResult:
    """Record a run for `path`, read it and load it."""
    job, spec = resolve(job_name, layer)
    if mode not in ("upsert", "replace"):
        raise JobError(f"mode must be upsert or replace, not {mode!r}")
    path = Path(path)
    run_id = start_run(engine, job_name, spec.id, mode, path.name, sha256_of(path) if path.is_file() else None,
                       department, actor)
    try:
        progress("reading")
        dataset = read(path, source_layer)
    except (ValueError, OSError) as e:
        return _fail(engine, run_id, str(e))
    return execute(engine, job_name, dataset, run_id, layer=spec.id, crs=crs, mode=mode, actor=actor,
                   progress=progress)
