"""Running an ETL job: read → map fields → convert CRS → validate → merge, all accounted for.

Every run is recorded in `twin.etl_run` (see `etl.records`). The merge, the quarantine
and repair notes and the final counts commit in one transaction, so a run that fails or
is killed leaves the layers as they were; running it again completes it. Nothing is
dropped unsaid: rejected rows are quarantined with a reason, repaired geometries are
noted, and source columns that map to no field are listed in the run.

A large file is validated in chunks, each one streamed to the database as soon as it is
checked, so the database stores one chunk while the next one is validated (two cores at work).
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Engine

from etl import records
from etl.crs import convert, misplaced, source_of
from etl.jobs import JOBS, get_job, imagery
from etl.readers import Dataset, read
from etl.records import Run, open_run
from layers.catalog import LayerSpec, get_layer
from layers.store import merge, set_write_context
from layers.validate import Validated, validate

log = logging.getLogger("twin.etl")
Progress = Callable[[str], None]
MODES = ("upsert", "replace")
DBF_NAME_BYTES = 10  # dBase field names are cut at 10 bytes
VALIDATE_CHUNK = 100_000  # rows validated (and then streamed to the database) at a time


class JobError(ValueError):
    """The job cannot run as asked (unknown job or layer, layer not loadable by this job)."""


@dataclass
class RunResult:
    run_id: int
    status: str
    counts: dict
    error: str | None = None
    ignored: list[str] = field(default_factory=list)


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


def _truncated_match(column: str, aliases: dict[str, str]) -> str | None:
    """The field a Shapefile column cut at 10 bytes stands for, when exactly one alias starts with it."""
    if len(column.encode("gb18030")) not in (DBF_NAME_BYTES - 1, DBF_NAME_BYTES):
        return None
    targets = {target for alias, target in aliases.items() if alias.startswith(column) and alias != column}
    return targets.pop() if len(targets) == 1 else None


def _map_fields(job, spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    aliases = {f.name: f.name for f in spec.fields} | {f.zh.lower(): f.name for f in spec.fields}
    aliases |= {k.lower(): v for k, v in job.ALIASES.items()}
    renamed, taken = {}, set()
    for column in frame.columns:
        key = str(column).strip().lower()
        target = aliases.get(key) or _truncated_match(key, aliases)
        if target and target not in taken:
            renamed[column] = target
            taken.add(target)
    return frame.rename(columns=renamed)


def _plain(value):
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return None if value is None or value is pd.NA or value is pd.NaT else value


def _records(rows: pd.DataFrame, geometry: pd.Series | None) -> list[str]:
    """Rows as sent (JSON), geometry as WKT in the file's own coordinates."""
    out = []
    wkt = None if geometry is None else shapely.to_wkt(geometry.to_numpy(dtype=object), rounding_precision=8)
    for n, row in enumerate(rows.to_dict("records")):
        record = {str(k): _plain(v) for k, v in row.items()}
        if wkt is not None:
            record["geometry"] = wkt[n]
        out.append(json.dumps(record, ensure_ascii=False, default=str))
    return out


def _chunks(spec: LayerSpec, frame: pd.DataFrame) -> list[pd.Index]:
    """The row labels, in file order, cut into chunks that validate one by one as they would all at once.

    Validation compares keys across rows (a key given twice rejects both rows), so every row whose key
    another row shares goes into the first chunk. Text keys compare as validation types them (trimmed,
    blank = missing); other keys only compare after typing, so such a layer is validated in one piece."""
    types = {f.name: f.type for f in spec.fields}
    if len(frame) <= VALIDATE_CHUNK or any(types[k] != "text" for k in spec.key):
        return [frame.index]
    keys = pd.DataFrame(index=frame.index)
    for k in spec.key:
        raw = frame[k] if k in frame else pd.Series(pd.NA, index=frame.index, dtype="object")
        trimmed = raw.astype("string").str.strip()
        keys[k] = trimmed.mask(trimmed.eq("").fillna(False))
    shared = (keys.duplicated(keep=False) & ~keys.isna().any(axis=1)).to_numpy()
    first = shared | (np.arange(len(frame)) < VALIDATE_CHUNK)
    rest = frame.index[~first]
    return [frame.index[first]] + [rest[i:i + VALIDATE_CHUNK] for i in range(0, len(rest), VALIDATE_CHUNK)]


def _validated(spec: LayerSpec, frame: pd.DataFrame, geometry: pd.Series | None,
               checked: Validated) -> Iterator[pd.DataFrame]:
    """The usable rows chunk by chunk; rejects and repairs gather in `checked` as the chunks are consumed."""
    for labels in _chunks(spec, frame):
        part = validate(spec, frame.loc[labels], None if geometry is None else geometry.loc[labels])
        checked.rejects.update(part.rejects)
        checked.repairs.update(part.repairs)
        checked.repaired += part.repaired
        yield part.frame


QUARANTINE = text("INSERT INTO twin.quarantine (run_id, layer, source_file, row_number, record, reason) "
                  "VALUES (:run, :layer, :file, :row, CAST(:record AS jsonb), :reason)")
REPAIRS = text("INSERT INTO twin.etl_repair (run_id, layer, row_number, record, reason) "
               "VALUES (:run, :layer, :row, CAST(:record AS jsonb), :reason)")


def _note(conn, statement, run_id: int, layer: str, dataset: Dataset, frame: pd.DataFrame, notes: dict) -> None:
    """Write rejected (QUARANTINE) or repaired (REPAIRS) rows with their reasons, in file order."""
    if not notes:
        return
    as_sent = frame.index.equals(dataset.attributes.index)  # False when the job reshaped the table
    source = dataset.attributes if as_sent else frame
    position = {label: n for n, label in enumerate(source.index, start=1)}
    labels = sorted(notes, key=lambda label: position.get(label, 0))
    geometry = dataset.geometry.loc[labels] if as_sent and dataset.geometry is not None else None
    conn.execute(statement, [
        {"run": run_id, "layer": layer, "file": dataset.source, "row": position.get(label) if as_sent else None,
         "record": record, "reason": notes[label]}
        for label, record in zip(labels, _records(source.loc[labels], geometry))])


def execute(run: Run, job_name: str, dataset: Dataset, *, layer: str | None = None, crs: str | None = None,
            mode: str = "upsert", actor: str = "cli", progress: Progress = lambda stage: None) -> RunResult:
    """Load an already read dataset under an open run."""
    def stage(name: str) -> None:
        records.set_stage(run, name)
        progress(name)

    try:
        job, spec = resolve(job_name, layer)
        stage("mapping fields")
        frame = dataset.attributes
        if spec.geometry:
            frame = frame.drop(columns=dataset.coordinates)
        frame = _map_fields(job, spec, frame.copy())
        if hasattr(job, "prepare"):
            frame = job.prepare(frame)
        names = {f.name for f in spec.fields}
        ignored = [str(c) for c in frame.columns if c not in names]
        rejects: dict = {}
        geometry = None
        if spec.geometry:
            if dataset.geometry is None:
                raise JobError(f"{dataset.source} has no geometry or recognisable coordinate columns "
                               "(e.g. 经度/纬度, lon/lat, x/y, or WKT in a geometry column)")
            stage("converting coordinates")
            raw = dataset.geometry.reindex(frame.index)
            if shapely.has_z(raw.to_numpy(dtype=object)).any():
                ignored.append("z (heights; the layer is 2D)")
            source = source_of(dataset.crs, crs)
            geometry = convert(raw, source)
            rejects.update({k: v for k, v in dataset.problems.items() if k in frame.index})
            rejects.update(misplaced(raw, geometry, source))
        keep = frame.index.difference(list(rejects), sort=False)
        checked = Validated(frame.iloc[:0])
        usable = _validated(spec, frame.loc[keep], None if geometry is None else geometry.loc[keep], checked)
        stage("loading")  # validation goes on while the first chunks load
        with run.conn.begin():
            run.conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            run.conn.exec_driver_sql("SET LOCAL client_connection_check_interval = '1s'")  # stop if we die
            if hasattr(job, "enrich"):
                usable, more = job.enrich(run.conn, pd.concat(list(usable)))
                rejects.update(more)
                usable = [usable]
            set_write_context(run.conn, actor=actor, run_id=run.id)
            counts = merge(run.conn, spec, usable, replace=(mode == "replace"))
            rejects.update(checked.rejects)
            if mode == "replace" and not counts.inserted + counts.updated + counts.unchanged:
                raise JobError(f"{dataset.source} has no usable features ({len(rejects)} rejected); replace mode "
                               f"would delete every feature of '{spec.id}', so nothing was changed")
            _note(run.conn, QUARANTINE, run.id, spec.id, dataset, frame, rejects)
            _note(run.conn, REPAIRS, run.id, spec.id, dataset, frame, checked.repairs)
            totals = {"read": len(dataset.attributes), "inserted": counts.inserted, "updated": counts.updated,
                      "unchanged": counts.unchanged, "deleted": counts.deleted, "repaired": checked.repaired,
                      "quarantined": len(rejects)}
            records.succeed(run.conn, run.id, totals, ignored)
    except (ValueError, OSError) as e:  # the input or the request is at fault: say so, keep the layer as it was
        records.fail(run, str(e))
        return RunResult(run.id, "failed", {}, str(e))
    log.info("ETL run %s (%s → %s) succeeded: %s; ignored columns: %s", run.id, job_name, spec.id, totals, ignored)
    return RunResult(run.id, "succeeded", totals, ignored=ignored)


def load_file(run: Run, job_name: str, path: Path, *, layer: str | None = None, crs: str | None = None,
              mode: str = "upsert", actor: str = "cli", source_layer: str | None = None,
              progress: Progress = lambda stage: None) -> RunResult:
    """Read `path` and load it under an open run."""
    try:
        records.set_stage(run, "reading")
        progress("reading")
        dataset = read(path, source_layer)
    except (ValueError, OSError) as e:
        records.fail(run, str(e))
        return RunResult(run.id, "failed", {}, str(e))
    return execute(run, job_name, dataset, layer=layer, crs=crs, mode=mode, actor=actor, progress=progress)


def check_request(job_name: str, layer: str | None, mode: str) -> LayerSpec:
    _, spec = resolve(job_name, layer)
    if mode not in MODES:
        raise JobError(f"mode must be upsert or replace, not {mode!r}")
    return spec


def run_file(engine: Engine, job_name: str, path: Path, *, layer: str | None = None, crs: str | None = None,
             mode: str = "upsert", department: str | None = None, actor: str = "cli",
             source_layer: str | None = None, progress: Progress = lambda stage: None) -> RunResult:
    """Record a run for `path`, read it and load it."""
    spec = check_request(job_name, layer, mode)
    if spec.kind == "raster":
        raise JobError(f"'{spec.id}' is a raster layer: load it with twin etl raster FILE --layer {spec.id}")
    path = Path(path)
    sha = sha256_of(path) if path.is_file() else None
    with open_run(engine, job_name, spec.id, mode, path.name, sha, department, actor, crs, source_layer) as run:
        return load_file(run, job_name, path, layer=spec.id, crs=crs, mode=mode, actor=actor,
                         source_layer=source_layer, progress=progress)


def run_dataset(engine: Engine, job_name: str, dataset: Dataset, *, layer: str, file_name: str, sha: str,
                crs: str | None = None, mode: str = "upsert", actor: str = "cli") -> RunResult:
    """Record a run for a dataset read (and adapted) by the caller, and load it."""
    spec = check_request(job_name, layer, mode)
    with open_run(engine, job_name, spec.id, mode, file_name, sha, None, actor, crs) as run:
        return execute(run, job_name, dataset, layer=spec.id, crs=crs, mode=mode, actor=actor)


def load_raster(run: Run, path: Path, layer: str, raster_dir: Path, sha: str) -> RunResult:
    """Convert a raster to a COG and register it for `layer`, under an open run."""
    try:
        records.set_stage(run, "converting to COG")
        with run.conn.begin():
            target = imagery.register(run.conn, path, layer, raster_dir, run.id, sha)
            totals = {"read": 1, "inserted": 1}
            records.succeed(run.conn, run.id, totals, [])
    except Exception as e:  # rasterio and GDAL raise many kinds for a file that is not a usable raster
        error = f"{path.name} cannot be loaded as a raster: {e}"
        records.fail(run, error)
        return RunResult(run.id, "failed", {}, error)
    log.info("ETL run %s registered %s for %s", run.id, target, layer)
    return RunResult(run.id, "succeeded", totals)


def run_raster(engine: Engine, path: Path, *, layer: str, raster_dir: Path, department: str | None = None,
               actor: str = "cli") -> RunResult:
    """Record a run that makes `path` the raster of `layer`."""
    spec = get_layer(layer)
    if spec is None or spec.kind != "raster":
        raise JobError(f"{layer!r} is not a raster layer")
    path = Path(path)
    if not path.is_file():
        raise JobError(f"{path} does not exist or is not a file")
    sha = sha256_of(path)
    with open_run(engine, "imagery", layer, "replace", path.name, sha, department, actor) as run:
        return load_raster(run, path, layer, raster_dir, sha)
