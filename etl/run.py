"""Running an ETL job: read → map fields → convert CRS → validate → merge, all accounted for.

Every run is recorded in `twin.etl_run` (see `etl.records`). The merge, the quarantine
and repair notes and the final counts commit in one transaction, so a run that fails or
is killed leaves the layers as they were; running it again completes it. Nothing is
dropped unsaid: rejected rows are quarantined with a reason, repaired geometries are
noted, and source columns that map to no field are listed in the run.

A file is read, converted and validated in pieces of VALIDATE_CHUNK rows (a vector file is read
batch by batch, so memory holds a piece, not the file), each piece streamed to the database as soon
as it is checked: the database stores one piece while the next one is read and validated (two cores at
work). Duplicate keys are found across the whole input first, by a cheap pass over the key columns
alone, so a key given twice is rejected in both rows however far apart they are. A job that enriches
its rows from the database (and may reshape the table) gets the whole input in one piece.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely
from sqlalchemy import text
from sqlalchemy.engine import Engine

from etl import records
from etl.crs import convert, misplaced, source_of
from etl.jobs import JOBS, get_job, imagery
from etl.readers import BATCH, Batches, Dataset, Whole, opened
from etl.records import Run, open_run
from layers.catalog import SRID, LayerSpec, get_layer
from layers.store import merge, set_write_context
from layers.validate import keys, validate

log = logging.getLogger("twin.etl")
Progress = Callable[[str], None]
MODES = ("upsert", "replace")
DBF_NAME_BYTES = 10  # dBase field names are cut at 10 bytes
VALIDATE_CHUNK = BATCH  # rows read and validated (and then streamed to the database) at a time


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
        raise JobError(f"unknown job {job_name!r}; jobs: {', '.join(JOBS)}, or a layer's name")
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
    aliases |= {alias.lower(): f.name for f in spec.fields for alias in f.aliases}
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


QUARANTINE = text("INSERT INTO twin.quarantine (run_id, layer, source_file, row_number, record, reason) "
                  "VALUES (:run, :layer, :file, :row, CAST(:record AS jsonb), :reason)")
REPAIRS = text("INSERT INTO twin.etl_repair (run_id, layer, row_number, record, reason) "
               "VALUES (:run, :layer, :row, CAST(:record AS jsonb), :reason)")


@dataclass
class Tally:
    """What loading the pieces of an input found, as they are consumed."""
    read: int = 0
    repaired: int = 0
    heights: bool = False
    ignored: list[str] | None = None
    quarantine: list[tuple[int, dict]] = field(default_factory=list)  # (place in the input, row to insert)
    repairs: list[tuple[int, dict]] = field(default_factory=list)
    last: tuple | None = None  # the last piece and its prepared frame


def _notes(run_id: int, layer: str, piece: Dataset, frame: pd.DataFrame, notes: dict,
           file: str | None = None) -> list[tuple[int, dict]]:
    """Rejected (with `file`) or repaired rows as sent, with their reasons and row numbers in the file."""
    if not notes:
        return []
    as_sent = frame.index.equals(piece.attributes.index)  # False when the job reshaped the table
    source = piece.attributes if as_sent else frame
    labels = list(notes)
    places = source.index.get_indexer(labels)
    order = np.argsort(places, kind="stable")
    labels, places = [labels[i] for i in order], places[order]
    geometry = piece.geometry.loc[labels] if as_sent and piece.geometry is not None else None
    extra = {} if file is None else {"file": file}
    return [(piece.offset + place, {"run": run_id, "layer": layer, "row": piece.offset + place + 1 if as_sent else None,
                                    "record": record, "reason": notes[label]} | extra)
            for label, place, record in zip(labels, places, _records(source.loc[labels], geometry))]


def _mapped(job, spec: LayerSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Source columns mapped to the layer's fields, then the job's own preparation."""
    frame = _map_fields(job, spec, frame.copy())
    return job.prepare(frame) if hasattr(job, "prepare") else frame


def _prepared(job, spec: LayerSpec, piece: Dataset, coordinates: list[str]) -> pd.DataFrame:
    return _mapped(job, spec, piece.attributes.drop(columns=coordinates) if spec.geometry else piece.attributes)


def _repeated_keys(job, spec: LayerSpec, source: Batches | Whole) -> set[str]:
    """The keys given more than once in the whole input, from its key columns alone (no geometry)."""
    names = [c for c in source.columns if not (spec.geometry and c in source.coordinates)]
    mapped = _map_fields(job, spec, pd.DataFrame(columns=names)).columns
    wanted = [c for c, name in zip(names, mapped) if name in spec.key]
    if not wanted:
        return set()
    parts = []
    for values in source.values(wanted, VALIDATE_CHUNK):
        parts.append(pa.array(keys(spec, _mapped(job, spec, values)), type=pa.string(), from_pandas=True))
    counts = pc.value_counts(pa.chunked_array(parts, pa.string()))
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    return set(repeated.drop_null().to_pylist())


def _usable(run: Run, job, spec: LayerSpec, source: Batches | Whole, crs: str | None, size: int,
            repeated: set[str] | None, tally: Tally) -> Iterator[pd.DataFrame]:
    """Each piece of the input read, mapped, converted and validated: its usable rows; the rest goes to `tally`."""
    origin = source_of(source.crs, crs) if spec.geometry else None
    names = {f.name for f in spec.fields}
    for piece in source.pieces(size):
        frame = _prepared(job, spec, piece, source.coordinates)
        tally.read += len(piece.attributes)
        if tally.ignored is None:
            tally.ignored = [str(c) for c in frame.columns if c not in names]
        rejects, geometry = {}, None
        if spec.geometry:
            raw = piece.geometry.reindex(frame.index)
            tally.heights |= bool(shapely.has_z(raw.to_numpy(dtype=object)).any())
            geometry = convert(raw, origin)
            rejects.update({k: v for k, v in piece.problems.items() if k in frame.index})
            rejects.update(misplaced(raw, geometry, origin))
        keep = frame.index.difference(list(rejects), sort=False)
        part = validate(spec, frame.loc[keep], None if geometry is None else geometry.loc[keep], repeated)
        rejects.update(part.rejects)
        tally.quarantine += _notes(run.id, spec.id, piece, frame, rejects, source.file_name)
        tally.repairs += _notes(run.id, spec.id, piece, frame, part.repairs)
        tally.repaired += part.repaired
        tally.last = (piece, frame)
        yield part.frame


def _located(run: Run, job, spec: LayerSpec, dataset: Dataset) -> Dataset:
    """A table without geometry given one by the job's `locate` from what the layers hold (storage CRS)."""
    with run.conn.begin():
        geometry, problems = job.locate(run.conn, _mapped(job, spec, dataset.attributes))
    return Dataset(dataset.attributes, geometry, f"EPSG:{SRID}", dataset.file_name, problems=problems,
                   offset=dataset.offset)


def execute(run: Run, job_name: str, dataset: Dataset | Batches | Whole, *, layer: str | None = None,
            crs: str | None = None, mode: str = "upsert", actor: str = "cli",
            progress: Progress = lambda stage: None) -> RunResult:
    """Load a dataset (read, or opened for reading in pieces) under an open run."""
    def stage(name: str) -> None:
        records.set_stage(run, name)
        progress(name)

    try:
        job, spec = resolve(job_name, layer)
        source = Whole(dataset) if isinstance(dataset, Dataset) else dataset
        if spec.geometry and not source.has_geometry:
            if not hasattr(job, "locate"):
                raise JobError(f"{source.file_name} has no geometry or recognisable coordinate columns "
                               "(e.g. 经度/纬度, lon/lat, x/y, or WKT in a geometry column)")
            source, crs = Whole(_located(run, job, spec, source.whole())), None  # a --crs has nothing to apply to
        enriched = hasattr(job, "enrich")
        if enriched:
            source, size, repeated = Whole(source.whole()), None, None
        else:
            stage("checking keys")
            size, repeated = VALIDATE_CHUNK, _repeated_keys(job, spec, source)
        tally = Tally()
        usable = _usable(run, job, spec, source, crs, size or max(len(source.dataset.attributes), 1), repeated,
                         tally)
        stage("loading")  # reading and validation go on while the first pieces load
        with run.conn.begin():
            run.conn.exec_driver_sql("SET LOCAL statement_timeout = 0")
            run.conn.exec_driver_sql("SET LOCAL client_connection_check_interval = '1s'")  # stop if we die
            if enriched:
                usable, more = job.enrich(run.conn, pd.concat(list(usable)))
                tally.quarantine += _notes(run.id, spec.id, *tally.last, more, source.file_name)
                usable = [usable]
            set_write_context(run.conn, actor=actor, run_id=run.id)
            counts = merge(run.conn, spec, usable, replace=(mode == "replace"))
            if mode == "replace" and not counts.inserted + counts.updated + counts.unchanged:
                raise JobError(f"{source.file_name} has no usable features ({len(tally.quarantine)} rejected); "
                               f"replace mode would delete every feature of '{spec.id}', so nothing was changed")
            for statement, rows in ((QUARANTINE, tally.quarantine), (REPAIRS, tally.repairs)):
                if rows:
                    run.conn.execute(statement, [row for _, row in sorted(rows, key=lambda r: r[0])])
            ignored = (tally.ignored or []) + (["z (heights; the layer is 2D)"] if tally.heights else [])
            totals = {"read": tally.read, "inserted": counts.inserted, "updated": counts.updated,
                      "unchanged": counts.unchanged, "deleted": counts.deleted, "repaired": tally.repaired,
                      "quarantined": len(tally.quarantine)}
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
        with opened(path, source_layer) as source:
            return execute(run, job_name, source, layer=layer, crs=crs, mode=mode, actor=actor, progress=progress)
    except (ValueError, OSError) as e:  # the file cannot be opened as a dataset
        records.fail(run, str(e))
        return RunResult(run.id, "failed", {}, str(e))


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
